//! HwameiStor's decisions, each in one place.
//!
//! Everything here is a pure function of the state it is given: no API client, no gRPC, no
//! host commands, no clock. The controller, the node agent, the CSI driver and the plugin
//! all decide through these modules, so a rule (how a size rounds, how much room a pool
//! has, what a volume does next) cannot drift between them.
//!
//! - [`drbd`]: the model of a DRBD resource (states, configuration, metadata size, ids);
//! - [`ha`]: HA volumes: who may be primary, fencing, failover, switchover, health;
//! - [`ha_replica`]: the next step of an HA replica on its node (volumes, DRBD, role);
//! - [`lvm`]: the model of a node's LVM state, extent rounding, logical volume names;
//! - [`sizing`]: what size a requested capacity range becomes;
//! - [`naming`]: the LocalVolume name of a CSI volume name;
//! - [`operation`]: the state machines of volume operations (migrate, convert, expand);
//! - [`placement`]: where a volume's replicas go, and how much room a pool has left counting
//!   volumes placed but not reported yet;
//! - [`pools`]: a node's pools as its LocalStorageNode reports them;
//! - [`volume`], [`replica`], [`claim`]: the next step of a LocalVolume (controller), a
//!   LocalVolumeReplica and a LocalDiskClaim (node agent).

pub mod claim;
pub mod disk_volume;
pub mod drbd;
pub mod group;
pub mod ha;
pub mod ha_replica;
pub mod lvm;
pub mod naming;
pub mod operation;
pub mod placement;
pub mod pod;
pub mod pools;
pub mod replica;
pub mod restore;
pub mod scheduling;
pub mod sizing;
pub mod snapshot;
pub mod thin;
pub mod volume;
