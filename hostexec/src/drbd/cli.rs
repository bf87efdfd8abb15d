//! [`Drbd`] over drbd-utils' command-line tools, driving the DRBD 8.4 kernel module.
//!
//! Facts this relies on, checked in VMs (Debian kernel 6.1 with the in-tree DRBD 8.4.11,
//! drbd-utils 9.22, which hands every command for an 8.4 kernel to `/lib/drbd/drbdadm-84`
//! and `drbdsetup-84`):
//!
//! - `drbdadm -c <our drbd.conf>` works for every command used here (create-md, get-gi,
//!   dump-md, up, adjust, primary [--force], secondary, connect [--discard-my-data],
//!   disconnect, outdate, resume-io, new-current-uuid --clear-bitmap, resize, down): the
//!   node's own /etc/drbd.conf is never read. `up` links /run/drbd/drbd-resource-<name>.conf
//!   and drbd-minor-<N>.conf to the file it was given, which is how the kernel's default
//!   usermode helper (`/sbin/drbdadm fence-peer <name>`, `/sbin/drbdadm split-brain
//!   minor-<N>`) later finds our handlers.
//! - Without `global { usage-count no; }` drbdadm prompts and tries to reach the internet.
//! - `on <host>` sections are matched against `uname -n` (the host's, under nsenter with
//!   `--uts`); a resource with no section for this host is "'<name>' not defined in your
//!   config (for this host)." (`floating ipv4 ADDR:PORT` sections, matched by a local
//!   address instead, work as well).
//! - Prompts are answered "no" because stdin is not a terminal ("stdin not a TTY, not
//!   waiting for confirmation"): `create-md` on valid metadata, and on leftover data such as
//!   the activity log an earlier `wipe-md` leaves behind ("Found some data ... Do you want
//!   to proceed?"), and `wipe-md` itself.
//! - drbdadm 9.22 accepts `create-md --force` but rejects `wipe-md --force` ("unrecognized
//!   option '--force'"), and `-- --force` too, so wiping runs the drbdmeta command
//!   `drbdadm -d wipe-md` names, with `--force`.

use super::files::{ConfigFiles, LocalConfigFiles};
use super::status::{parse_events2, parse_proc_version};
use super::{Drbd, DrbdError, KernelDrbd};
use crate::{CmdOutput, ExecError, Executor, HostCommand};
use async_trait::async_trait;
use hwameistor_core::drbd::{ConnState, DiskState, ResourceConfig, ResourceStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What drbdadm says when a resource file names no peer and it reaches the network step.
const NO_PEER: &str = "cannot configure network without knowing my peer";

/// Where the agent keeps its DRBD configuration unless told otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/hwameistor/drbd";
/// The top-level file in the configuration directory that every drbdadm call is given.
pub const MAIN_CONFIG_FILE: &str = "drbd.conf";

/// DRBD through `drbdadm`/`drbdsetup`/`drbdmeta`, run by an [`Executor`], with its own
/// configuration directory: a top-level `drbd.conf` (global options and an include of the
/// directory's `*.res`) and one `<resource>.res` per resource.
pub struct DrbdCli {
    exec: Arc<dyn Executor>,
    files: Arc<dyn ConfigFiles>,
    dir: String,
    /// The top-level file was found or written with the right content by this instance.
    main_ok: AtomicBool,
}

/// Resource names this implementation accepts: what `hwameistor_core::drbd::resource_name`
/// produces (and DRBD accepts), never starting with `-` (it would read as an option) or `.`
/// (it would be a hidden file name).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What a failed command's stderr says, as the typed error a caller acts on. The texts are
/// the ones the 8.4 module and drbd-utils 9.22 print (see each arm).
fn classify(name: &str, e: ExecError) -> DrbdError {
    if !matches!(e, ExecError::Failed { .. }) {
        return DrbdError::Exec(e);
    }
    let s = e.stderr();
    let has = |t: &str| s.contains(t);
    if has("not defined in your config") // drbdadm: no such resource for this host
        || has("no resources defined") // drbdadm: the directory has no resource at all
        || has("(127) Device minor not allocated") // drbdsetup: configured but not up
        || has("(158) Unknown resource")
    {
        DrbdError::NoSuchResource(name.into())
    } else if has("Device is held open by someone") {
        // secondary/down: "State change failed: (-12) Device is held open by someone"
        DrbdError::InUse(name.into())
    } else if has("Multiple primaries not allowed") {
        // primary: "State change failed: (-1) Multiple primaries not allowed by config"
        DrbdError::PeerIsPrimary(name.into())
    } else if has("Need access to UpToDate data") {
        // primary: "State change failed: (-2) Need access to UpToDate data"
        DrbdError::NotUpToDate(name.into())
    } else if has("Valid meta data seems to be in place") {
        // create-md: "Valid meta data seems to be in place. Do you really want to overwrite?"
        DrbdError::MetadataExists(name.into())
    } else {
        DrbdError::Exec(e)
    }
}

impl DrbdCli {
    /// Files in [`DEFAULT_CONFIG_DIR`] of this process's filesystem.
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        DrbdCli {
            exec,
            files: Arc::new(LocalConfigFiles),
            dir: DEFAULT_CONFIG_DIR.to_string(),
            main_ok: AtomicBool::new(false),
        }
    }

    /// Configuration in `dir` (an absolute path; it is written into drbd.conf's include, so
    /// quotes, backslashes, whitespace and glob characters are refused), written through
    /// `files`.
    pub fn with_config_dir(
        exec: Arc<dyn Executor>,
        files: Arc<dyn ConfigFiles>,
        dir: &str,
    ) -> Result<Self, DrbdError> {
        let dir = dir.trim_end_matches('/');
        let bad = |c: char| c.is_whitespace() || c.is_control() || "\"\\*?[]{};".contains(c);
        if !dir.starts_with('/') || dir.contains(bad) {
            return Err(DrbdError::Config {
                path: dir.to_string(),
                reason: "the DRBD configuration directory must be an absolute path without \
                         quotes, backslashes, whitespace, `;`, braces or glob characters"
                    .into(),
            });
        }
        Ok(DrbdCli {
            exec,
            files,
            dir: dir.to_string(),
            main_ok: AtomicBool::new(false),
        })
    }

    /// The configuration directory.
    pub fn config_dir(&self) -> &str {
        &self.dir
    }

    /// The top-level file every drbdadm call is given with `-c`.
    pub fn main_config_path(&self) -> String {
        format!("{}/{MAIN_CONFIG_FILE}", self.dir)
    }

    /// The file of resource `name`.
    pub fn resource_path(&self, name: &str) -> String {
        format!("{}/{name}.res", self.dir)
    }

    /// The top-level file's text.
    pub fn main_config(&self) -> String {
        format!(
            "# Written by the HwameiStor node agent; changes are overwritten.\n\
             # drbdadm runs with `-c` on this file: the node's own /etc/drbd.conf is not used.\n\
             global {{\n  usage-count no;\n}}\n\
             include \"{}/*.res\";\n",
            self.dir
        )
    }

    fn config_err(path: &str, e: std::io::Error) -> DrbdError {
        DrbdError::Config {
            path: path.to_string(),
            reason: e.to_string(),
        }
    }

    /// Writes the top-level file unless this instance already saw it right: every drbdadm
    /// call needs it, and without `usage-count no` drbdadm would prompt.
    async fn ensure_main(&self) -> Result<(), DrbdError> {
        if self.main_ok.load(Ordering::Acquire) {
            return Ok(());
        }
        let path = self.main_config_path();
        let want = self.main_config();
        let have = self
            .files
            .read(&path)
            .await
            .map_err(|e| Self::config_err(&path, e))?;
        if have.as_deref() != Some(want.as_bytes()) {
            self.files
                .write(&path, want.as_bytes())
                .await
                .map_err(|e| Self::config_err(&path, e))?;
        }
        self.main_ok.store(true, Ordering::Release);
        Ok(())
    }

    fn drbdadm<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> HostCommand {
        HostCommand::new("drbdadm")
            .args(["-c", &self.main_config_path()])
            .args(args)
    }

    /// Runs a drbdadm command on resource `name` (the last argument).
    async fn adm(&self, name: &str, args: &[&str]) -> Result<CmdOutput, DrbdError> {
        if !valid_name(name) {
            return Err(DrbdError::NoSuchResource(name.into()));
        }
        self.ensure_main().await?;
        let cmd = self.drbdadm(args.iter().copied().chain([name]));
        self.exec.run(&cmd).await.map_err(|e| classify(name, e))
    }

    /// A resource file that names no peer (a resource on one node) makes `up` and `adjust`
    /// fail in their last step, the network ("cannot configure network without knowing my
    /// peer"), after attaching (and, for `adjust`, dropping a connection the file no longer
    /// names). That is what was asked, when the resource now runs attached and StandAlone.
    async fn alone_ok(&self, name: &str, e: DrbdError) -> Result<(), DrbdError> {
        let DrbdError::Exec(x) = &e else {
            return Err(e);
        };
        if !x.stderr().contains(NO_PEER) {
            return Err(e);
        }
        match self.find(name).await? {
            Some(s) if s.connection == ConnState::StandAlone && s.disk != DiskState::Diskless => {
                Ok(())
            }
            _ => Err(e),
        }
    }

    async fn find(&self, name: &str) -> Result<Option<ResourceStatus>, DrbdError> {
        Ok(self.status().await?.into_iter().find(|s| s.name == name))
    }
}

#[async_trait]
impl Drbd for DrbdCli {
    async fn kernel(&self) -> Result<KernelDrbd, DrbdError> {
        let read = HostCommand::new("cat").arg("/proc/drbd");
        let proc = match self.exec.run(&read).await {
            Ok(o) => o.stdout,
            // /proc/drbd exists exactly while the module is loaded.
            Err(ExecError::Failed { .. }) => {
                let load = HostCommand::new("modprobe").arg("drbd");
                if let Err(e) = self.exec.run(&load).await {
                    return Err(DrbdError::NotLoaded {
                        detail: e.to_string(),
                    });
                }
                self.exec
                    .run(&read)
                    .await
                    .map_err(|e| DrbdError::NotLoaded {
                        detail: format!("loaded with `modprobe drbd`, but {e}"),
                    })?
                    .stdout
            }
            Err(e) => return Err(DrbdError::Exec(e)),
        };
        let version = parse_proc_version(&proc).ok_or_else(|| DrbdError::Parse {
            command: read.to_string(),
            reason: "no `version:` line".into(),
        })?;
        if !version.starts_with("8.4.") {
            return Err(DrbdError::UnsupportedVersion { found: version });
        }
        // With an 8.4 module drbd-utils 9.x execs /lib/drbd/drbdadm-84 even for --version,
        // so this checks the whole userland chain ("execvp() failed to exec drbdadm-84"
        // where the 8.4 backend is missing).
        let adm = HostCommand::new("drbdadm").arg("--version");
        if let Err(e) = self.exec.run(&adm).await {
            return Err(DrbdError::NotLoaded {
                detail: format!("DRBD {version} is loaded, but drbd-utils cannot drive it: {e}"),
            });
        }
        Ok(KernelDrbd { version })
    }

    async fn write_config(&self, cfg: &ResourceConfig) -> Result<bool, DrbdError> {
        let path = self.resource_path(&cfg.name);
        if !valid_name(&cfg.name) {
            return Err(DrbdError::Config {
                path,
                reason: format!("{:?} is not a usable DRBD resource name", cfg.name),
            });
        }
        self.ensure_main().await?;
        let text = cfg.render();
        let have = self
            .files
            .read(&path)
            .await
            .map_err(|e| Self::config_err(&path, e))?;
        if have.as_deref() == Some(text.as_bytes()) {
            return Ok(false);
        }
        self.files
            .write(&path, text.as_bytes())
            .await
            .map_err(|e| Self::config_err(&path, e))?;
        Ok(true)
    }

    async fn remove_config(&self, name: &str) -> Result<(), DrbdError> {
        let path = self.resource_path(name);
        if !valid_name(name) {
            // No file of ours can have that name.
            return Ok(());
        }
        self.files
            .remove(&path)
            .await
            .map_err(|e| Self::config_err(&path, e))
    }

    async fn has_metadata(&self, name: &str) -> Result<bool, DrbdError> {
        // get-gi reads the generation identifiers: from the kernel while the resource is
        // up (attached or not), from the metadata device otherwise. It exits 1 without a
        // word where there is no metadata, so a failure is explained by dump-md.
        match self.adm(name, &["get-gi"]).await {
            Ok(_) => return Ok(true),
            Err(DrbdError::Exec(_)) => {}
            Err(e) => return Err(e),
        }
        match self.adm(name, &["dump-md"]).await {
            Ok(_) => Ok(true),
            Err(DrbdError::Exec(e)) if e.stderr().contains("No valid meta data found") => Ok(false),
            // Metadata of a resource taken down uncleanly: there, and `up` replays its
            // activity log ("Found meta data is \"unclean\", please apply-al first").
            Err(DrbdError::Exec(e)) if e.stderr().contains("please apply-al first") => Ok(true),
            Err(e) => Err(e),
        }
    }

    async fn create_metadata(&self, name: &str) -> Result<(), DrbdError> {
        if self.has_metadata(name).await? {
            return Err(DrbdError::MetadataExists(name.into()));
        }
        match self.adm(name, &["create-md"]).await {
            Ok(_) => Ok(()),
            // drbdmeta found no valid metadata but some other data on the metadata device
            // and asked to confirm (stdin is no terminal, so it declined). On an external
            // metadata device that is left over from an earlier use of the same extents,
            // e.g. the activity log `wipe-md` leaves. `--force` is passed only here, after
            // both the check above and drbdmeta itself found no valid metadata.
            Err(DrbdError::Exec(e)) if e.stderr().contains("Do you want to proceed?") => {
                if self.has_metadata(name).await? {
                    return Err(DrbdError::MetadataExists(name.into()));
                }
                self.adm(name, &["create-md", "--force"]).await.map(drop)
            }
            Err(e) => Err(e),
        }
    }

    async fn wipe_metadata(&self, name: &str) -> Result<(), DrbdError> {
        // The dry run prints the drbdmeta command drbdadm would run, e.g.
        // `drbdmeta 1 v08 /dev/vg/r1_drbdmeta flex-external wipe-md`.
        let dry = self.adm(name, &["-d", "wipe-md"]).await?;
        let line = dry
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("drbdmeta "))
            .unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        let [tool, minor, format, device, index, "wipe-md"] = words.as_slice() else {
            return Err(DrbdError::Parse {
                command: format!("drbdadm -d wipe-md {name}"),
                reason: format!("expected one drbdmeta command, got {:?}", dry.stdout),
            });
        };
        // drbdmeta itself refuses while the minor is up ("Device '1' is configured!") and
        // succeeds with "There appears to be no drbd meta data to wipe out?" where there is
        // none.
        let cmd =
            HostCommand::new(*tool).args(["--force", minor, format, device, index, "wipe-md"]);
        self.exec
            .run(&cmd)
            .await
            .map(drop)
            .map_err(|e| classify(name, e))
    }

    async fn up(&self, name: &str) -> Result<(), DrbdError> {
        match self.adm(name, &["up"]).await {
            Ok(_) => Ok(()),
            // Already up: `up` fails in its first step ("Device '0' is configured!");
            // `adjust` brings a resource that is up to what its file says.
            Err(DrbdError::Exec(e)) if e.stderr().contains("is configured!") => {
                self.adjust(name).await
            }
            Err(e) => self.alone_ok(name, e).await,
        }
    }

    async fn adjust(&self, name: &str) -> Result<(), DrbdError> {
        match self.adm(name, &["adjust"]).await {
            Ok(_) => Ok(()),
            Err(e) => self.alone_ok(name, e).await,
        }
    }

    async fn connect(&self, name: &str, discard_my_data: bool) -> Result<(), DrbdError> {
        let args: &[&str] = if discard_my_data {
            &["connect", "--discard-my-data"]
        } else {
            &["connect"]
        };
        match self.adm(name, args).await {
            Ok(_) => Ok(()),
            // Connecting a resource that is already connected or connecting fails with
            // "Failure: (102) Local address(port) already in use.". That is done, unless
            // the caller asked to discard data, which only a fresh connect does.
            Err(DrbdError::Exec(e)) if !discard_my_data && e.stderr().contains("(102)") => {
                match self.find(name).await? {
                    Some(s) if s.connection != ConnState::StandAlone => Ok(()),
                    _ => Err(DrbdError::Exec(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn disconnect(&self, name: &str) -> Result<(), DrbdError> {
        match self.adm(name, &["disconnect"]).await {
            Ok(_) => Ok(()),
            // "Failure: (162) Invalid configuration request ... unknown connection" both
            // when already StandAlone and when the resource is not up.
            Err(DrbdError::Exec(e)) if e.stderr().contains("unknown connection") => {
                match self.find(name).await? {
                    Some(_) => Ok(()),
                    None => Err(DrbdError::NoSuchResource(name.into())),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn primary(&self, name: &str, force: bool) -> Result<(), DrbdError> {
        let args: &[&str] = if force {
            &["primary", "--force"]
        } else {
            &["primary"]
        };
        self.adm(name, args).await.map(drop)
    }

    async fn secondary(&self, name: &str) -> Result<(), DrbdError> {
        self.adm(name, &["secondary"]).await.map(drop)
    }

    /// Note: while connected to a peer whose disk is UpToDate the 8.4 module keeps the
    /// local disk UpToDate and `outdate` succeeds without changing it (seen in VMs); it
    /// takes effect when disconnected (and, with the resource down, on the metadata).
    async fn outdate(&self, name: &str) -> Result<(), DrbdError> {
        self.adm(name, &["outdate"]).await.map(drop)
    }

    async fn resume_io(&self, name: &str) -> Result<(), DrbdError> {
        self.adm(name, &["resume-io"]).await.map(drop)
    }

    async fn skip_initial_sync(&self, name: &str) -> Result<(), DrbdError> {
        // Connected, both Inconsistent -> both UpToDate at once, nothing resynced.
        self.adm(name, &["new-current-uuid", "--clear-bitmap"])
            .await
            .map(drop)
    }

    /// Note: the 8.4 module resizes only with one side Primary ("Failure: (131) Need one
    /// Primary node to resize."); the grown part is then resynced from the primary. Without
    /// a connection it keeps the last agreed size unless told the (absent) peer has room.
    async fn resize(&self, name: &str, alone: bool) -> Result<(), DrbdError> {
        let args: &[&str] = if alone {
            &["--", "--assume-peer-has-space", "resize"]
        } else {
            &["resize"]
        };
        self.adm(name, args).await.map(drop)
    }

    async fn down(&self, name: &str) -> Result<(), DrbdError> {
        // Succeeds when the resource is not up.
        self.adm(name, &["down"]).await.map(drop)
    }

    async fn status(&self) -> Result<Vec<ResourceStatus>, DrbdError> {
        let cmd = HostCommand::new("drbdsetup").args(["events2", "--now", "--statistics", "all"]);
        let out = self.exec.run(&cmd).await?;
        parse_events2(&out.stdout).map_err(|e| DrbdError::Parse {
            command: cmd.to_string(),
            reason: e.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_be_options_or_paths_are_refused() {
        for ok in ["r0", "pvc-1a2b", "a.b_c-d", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-c",
            ".hidden",
            "a/b",
            "a b",
            "r\"",
            &"x".repeat(64),
            "..",
            "ä",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
