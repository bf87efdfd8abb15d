//! Files written into the base initramfs verbatim: the init script and system configuration.

/// Where the exec daemon lives in the guest.
pub const GUEST_DAEMON_PATH: &str = "/usr/local/sbin/testbed-guest";

/// Modules are loaded in this order; absent optional ones are skipped when the list is written.
/// `crc32c_generic` comes first because busybox modprobe does not follow the soft dependency
/// `libcrc32c` has on it, and drbd needs libcrc32c.
pub const MODULES: &[(&str, bool)] = &[
    // (name, required)
    ("crc32c_generic", true),
    ("libcrc32c", true),
    ("virtio_pci", true),
    ("virtio_blk", true),
    ("virtio_net", true),
    ("virtio_console", true),
    ("virtio_rng", false),
    ("loop", true),
    ("dm_mod", true),
    ("dm_bufio", false),
    ("dm_bio_prison", false),
    ("dm_persistent_data", false),
    ("dm_thin_pool", true),
    ("dm_snapshot", false),
    ("dm_mirror", false),
    ("lru_cache", false),
    ("drbd", true),
    ("crc16", false),
    ("mbcache", false),
    ("jbd2", false),
    ("ext4", true),
    ("xfs", true),
];

/// /init. Per-VM settings come from the kernel command line (`tb_*=`), so one initramfs serves
/// every VM.
pub const INIT: &str = r#"#!/bin/sh
# testbed init: PID 1 from the initramfs; prepares the node, then execs the exec daemon.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs -o mode=0755 devtmpfs /dev
exec </dev/null >/dev/console 2>&1
log() { echo "testbed-init: $*"; }
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/lock/lvm /run/lvm /run/udev /run/drbd /var/lib/drbd /var/log /var/tmp /etc/lvm/backup /etc/lvm/archive
[ -d /sys/fs/cgroup ] && mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

TB_NAME=node TB_IP= TB_MAC0= TB_MAC1=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    tb_name=*) TB_NAME="${arg#tb_name=}" ;;
    tb_ip=*) TB_IP="${arg#tb_ip=}" ;;
    tb_mac0=*) TB_MAC0="${arg#tb_mac0=}" ;;
    tb_mac1=*) TB_MAC1="${arg#tb_mac1=}" ;;
  esac
done
hostname "$TB_NAME"
echo "$TB_NAME" > /etc/hostname
log "booting $TB_NAME"

while read -r m; do
  [ -n "$m" ] && { modprobe "$m" || log "modprobe $m failed"; }
done < /etc/testbed/modules

/lib/systemd/systemd-udevd --daemon || log "udevd failed"
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=60 || log "udevadm settle timed out"

# NICs are found by the MACs the host assigned, not by probe order, then named eth0 (user-mode
# net) and eth1 (the private VM segment). Two-step rename so a swap cannot collide.
ip link set lo up
for d in /sys/class/net/*; do
  n="${d##*/}"; mac="$(cat "$d/address")"
  [ "$mac" = "$TB_MAC0" ] && ip link set "$n" name tbtmp0
  [ "$mac" = "$TB_MAC1" ] && ip link set "$n" name tbtmp1
done
if ip link show tbtmp0 >/dev/null 2>&1; then
  ip link set tbtmp0 name eth0
  ip addr add 10.0.2.15/24 dev eth0
  ip link set eth0 up
  ip route add default via 10.0.2.2 dev eth0
else
  log "no NIC with MAC $TB_MAC0"
fi
if ip link show tbtmp1 >/dev/null 2>&1; then
  ip link set tbtmp1 name eth1
  ip addr add "$TB_IP" dev eth1
  ip link set eth1 up
else
  log "no NIC with MAC $TB_MAC1"
fi

log "starting exec daemon"
exec /usr/local/sbin/testbed-guest
"#;

/// LVM without a udev-synchronised device manager (see the testbed facts): LVM creates device
/// nodes itself and does not wait for udev cookies. No daemons (lvmpolld, dmeventd) exist.
pub fn lvm_conf(thin_tools: bool) -> String {
    let thin = if thin_tools {
        ""
    } else {
        // Without thin-provisioning-tools a thin pool could not be activated; skip the check.
        "    thin_check_executable = \"\"\n"
    };
    format!(
        r#"config {{
    checks = 1
}}
devices {{
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    use_devicesfile = 0
    # A secondary DRBD device refuses to open; scanning it only produces noise.
    global_filter = [ "r|^/dev/drbd|" ]
}}
activation {{
    udev_sync = 0
    udev_rules = 0
    verify_udev_operations = 1
    monitoring = 0
}}
global {{
    use_lvmpolld = 0
    event_activation = 0
{thin}}}
backup {{
    backup = 1
    archive = 0
}}
"#
    )
}

pub const DRBD_CONF: &str = r#"include "drbd.d/global_common.conf";
include "drbd.d/*.res";
"#;

/// `usage-count no` keeps drbdadm from prompting and phoning home.
pub const DRBD_GLOBAL_COMMON: &str = r#"global {
    usage-count no;
}
common {
}
"#;

pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// Groups the udev rules refer to, so udevd does not warn about each of them.
pub const GROUP: &str = "root:x:0:\ntty:x:5:\ndisk:x:6:\nlp:x:7:\nkmem:x:15:\ndialout:x:20:\ncdrom:x:24:\ntape:x:26:\naudio:x:29:\nvideo:x:44:\nutmp:x:43:\ninput:x:101:\nkvm:x:102:\nrender:x:103:\nsgx:x:104:\nnogroup:x:65534:\n";

pub const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";
