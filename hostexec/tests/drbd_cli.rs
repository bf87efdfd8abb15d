//! The command lines DrbdCli runs and how it reads their answers, against a scripted
//! executor and in-memory files. The stderr texts are the ones DRBD 8.4.11 with drbd-utils
//! 9.22 printed in VMs; behaviour against the real thing is `drbd_vm.rs`.

use async_trait::async_trait;
use futures::future::BoxFuture;
use hwameistor_core::drbd::{ConnState, Host, ResourceConfig};
use hwameistor_hostexec::drbd::{ConfigFiles, Drbd, DrbdCli, DrbdError};
use hwameistor_hostexec::{CmdOutput, ExecError, Executor, HostCommand};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const DIR: &str = "/etc/test/drbd";
const ADM: &str = "drbdadm -c /etc/test/drbd/drbd.conf";

type Rule = (String, Result<CmdOutput, ExecError>, bool);

/// Answers each command with the first rule whose prefix matches its command line; a rule
/// made with `once` is used up by its first match. Records every command.
#[derive(Clone, Default)]
struct Script {
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn rule(&self, prefix: &str, answer: Result<CmdOutput, ExecError>, once: bool) -> &Self {
        self.rules
            .lock()
            .expect("rules")
            .push((prefix.to_string(), answer, once));
        self
    }
    fn ok(&self, prefix: &str, stdout: &str) -> &Self {
        self.rule(prefix, Ok(out(stdout)), false)
    }
    fn fail(&self, prefix: &str, code: i32, stderr: &str) -> &Self {
        self.rule(prefix, Err(failed(prefix, code, stderr)), false)
    }
    fn fail_once(&self, prefix: &str, code: i32, stderr: &str) -> &Self {
        self.rule(prefix, Err(failed(prefix, code, stderr)), true)
    }
    fn commands(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

fn out(stdout: &str) -> CmdOutput {
    CmdOutput {
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn failed(command: &str, code: i32, stderr: &str) -> ExecError {
    ExecError::Failed {
        command: command.into(),
        code: Some(code),
        stdout: String::new(),
        stderr: stderr.into(),
    }
}

impl Executor for Script {
    fn run<'a>(&'a self, cmd: &'a HostCommand) -> BoxFuture<'a, Result<CmdOutput, ExecError>> {
        let line = cmd.to_string();
        self.log.lock().expect("log").push(line.clone());
        let answer = {
            let mut rules = self.rules.lock().expect("rules");
            match rules
                .iter()
                .position(|(p, _, _)| line.starts_with(p.as_str()))
            {
                Some(i) if rules[i].2 => Some(rules.remove(i).1),
                Some(i) => Some(rules[i].1.clone()),
                None => None,
            }
        };
        Box::pin(async move {
            answer.unwrap_or_else(|| {
                Err(ExecError::Spawn {
                    command: line,
                    reason: "no scripted answer".into(),
                })
            })
        })
    }
}

#[derive(Clone, Default)]
struct MemFiles(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

impl MemFiles {
    fn get(&self, path: &str) -> Option<String> {
        self.0
            .lock()
            .expect("files")
            .get(path)
            .map(|d| String::from_utf8_lossy(d).into_owned())
    }
}

#[async_trait]
impl ConfigFiles for MemFiles {
    async fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().expect("files").get(path).cloned())
    }
    async fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .expect("files")
            .insert(path.into(), data.to_vec());
        Ok(())
    }
    async fn remove(&self, path: &str) -> std::io::Result<()> {
        self.0.lock().expect("files").remove(path);
        Ok(())
    }
}

fn cli(ex: &Script, files: &MemFiles) -> DrbdCli {
    DrbdCli::with_config_dir(Arc::new(ex.clone()), Arc::new(files.clone()), DIR)
        .expect("valid directory")
}

fn config(name: &str) -> ResourceConfig {
    let host = |h: &str, ip: &str| Host {
        hostname: h.into(),
        address: ip.into(),
        disk: format!("/dev/vg/{name}"),
        meta_disk: format!("/dev/vg/{name}_drbdmeta"),
    };
    ResourceConfig {
        name: name.into(),
        minor: 3,
        port: 43004,
        hosts: vec![host("n1", "192.168.77.10"), host("n2", "192.168.77.11")],
        handler: None,
    }
}

#[tokio::test]
async fn configuration_lives_in_its_own_directory() {
    let (ex, files) = (Script::default(), MemFiles::default());
    let d = cli(&ex, &files);
    assert!(d.write_config(&config("r0")).await.expect("write"));
    assert!(!d.write_config(&config("r0")).await.expect("same again"));
    let mut changed = config("r0");
    changed.port = 43005;
    assert!(d.write_config(&changed).await.expect("changed"));
    let main = files.get("/etc/test/drbd/drbd.conf").expect("drbd.conf");
    assert!(main.contains("usage-count no;"), "{main}");
    assert!(main.contains("include \"/etc/test/drbd/*.res\";"), "{main}");
    let res = files.get("/etc/test/drbd/r0.res").expect("r0.res");
    assert_eq!(res, changed.render());
    d.remove_config("r0").await.expect("remove");
    d.remove_config("r0").await.expect("remove again");
    assert_eq!(files.get("/etc/test/drbd/r0.res"), None);
    assert!(ex.commands().is_empty(), "files only: {:?}", ex.commands());

    // A name that could be read as an option or a path is never written.
    let bad = d.write_config(&config("-c")).await;
    assert!(matches!(bad, Err(DrbdError::Config { .. })), "{bad:?}");
    for dir in ["relative/dir", "/etc/with space", "/etc/\"q", "/etc/*"] {
        let r = DrbdCli::with_config_dir(Arc::new(ex.clone()), Arc::new(files.clone()), dir);
        assert!(matches!(r, Err(DrbdError::Config { .. })), "{dir}");
    }
}

#[tokio::test]
async fn each_operation_is_one_drbdadm_call_on_our_file() {
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.ok("drbdadm", "");
    let d = cli(&ex, &files);
    d.up("r0").await.expect("up");
    d.adjust("r0").await.expect("adjust");
    d.primary("r0", true).await.expect("primary --force");
    d.primary("r0", false).await.expect("primary");
    d.secondary("r0").await.expect("secondary");
    d.connect("r0", false).await.expect("connect");
    d.connect("r0", true)
        .await
        .expect("connect --discard-my-data");
    d.disconnect("r0").await.expect("disconnect");
    d.outdate("r0").await.expect("outdate");
    d.resume_io("r0").await.expect("resume-io");
    d.skip_initial_sync("r0").await.expect("new-current-uuid");
    d.resize("r0", false).await.expect("resize");
    d.resize("r0", true).await.expect("resize alone");
    d.down("r0").await.expect("down");
    let want: Vec<String> = [
        "up r0",
        "adjust r0",
        "primary --force r0",
        "primary r0",
        "secondary r0",
        "connect r0",
        "connect --discard-my-data r0",
        "disconnect r0",
        "outdate r0",
        "resume-io r0",
        "new-current-uuid --clear-bitmap r0",
        "resize r0",
        "-- --assume-peer-has-space resize r0",
        "down r0",
    ]
    .iter()
    .map(|c| format!("{ADM} {c}"))
    .collect();
    assert_eq!(ex.commands(), want);
    // The top-level file was written before the first drbdadm call.
    assert!(files.get("/etc/test/drbd/drbd.conf").is_some());
}

#[tokio::test]
async fn refusals_become_typed_errors() {
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(
        &format!("{ADM} secondary busy"),
        11,
        "0: State change failed: (-12) Device is held open by someone\nCommand 'drbdsetup-84 secondary 0' terminated with exit code 11",
    )
    .fail(
        &format!("{ADM} down busy"),
        11,
        "r0: State change failed: (-12) Device is held open by someone\nadditional info from kernel:\nfailed to demote\nCommand 'drbdsetup-84 down r0' terminated with exit code 11",
    )
    .fail(
        &format!("{ADM} primary peer"),
        11,
        "0: State change failed: (-1) Multiple primaries not allowed by config\nCommand 'drbdsetup-84 primary 0' terminated with exit code 11",
    )
    .fail(
        &format!("{ADM} primary stale"),
        17,
        "0: State change failed: (-2) Need access to UpToDate data\nCommand 'drbdsetup-84 primary 0' terminated with exit code 17",
    )
    .fail(
        &format!("{ADM} up other"),
        1,
        "'other' not defined in your config (for this host).",
    )
    .fail(
        &format!("{ADM} secondary down"),
        10,
        "1: Failure: (127) Device minor not allocated\nadditional info from kernel:\nunknown minor\nCommand 'drbdsetup-84 secondary 1' terminated with exit code 10",
    )
    .fail(
        &format!("{ADM} resize r0"),
        10,
        "1: Failure: (131) Need one Primary node to resize.\nCommand 'drbdsetup-84 resize 1' terminated with exit code 10",
    );
    let d = cli(&ex, &files);
    assert_eq!(
        d.secondary("busy").await,
        Err(DrbdError::InUse("busy".into()))
    );
    assert_eq!(d.down("busy").await, Err(DrbdError::InUse("busy".into())));
    assert_eq!(
        d.primary("peer", false).await,
        Err(DrbdError::PeerIsPrimary("peer".into()))
    );
    assert_eq!(
        d.primary("stale", false).await,
        Err(DrbdError::NotUpToDate("stale".into()))
    );
    assert_eq!(
        d.up("other").await,
        Err(DrbdError::NoSuchResource("other".into()))
    );
    assert_eq!(
        d.secondary("down").await,
        Err(DrbdError::NoSuchResource("down".into()))
    );
    // Anything else keeps the command and its stderr.
    let e = d.resize("r0", false).await.expect_err("no primary");
    assert!(
        matches!(&e, DrbdError::Exec(_)) && e.to_string().contains("Need one Primary"),
        "{e}"
    );
    // A name no resource can have is not passed to drbdadm at all.
    let n = ex.commands().len();
    assert_eq!(
        d.primary("--force", false).await,
        Err(DrbdError::NoSuchResource("--force".into()))
    );
    assert_eq!(ex.commands().len(), n);
}

const NO_MD: &str = "No valid meta data found";

#[tokio::test]
async fn metadata_is_never_overwritten() {
    // Metadata there: refused before create-md runs.
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.ok(
        &format!("{ADM} get-gi r0"),
        "5992FE646FC2AC88:0000000000000000:14F4DA22F8F32FF0:14F3DA22F8F32FF0:1:1:0:1:0:0:1\n",
    );
    let d = cli(&ex, &files);
    assert!(d.has_metadata("r0").await.expect("probe"));
    assert_eq!(
        d.create_metadata("r0").await,
        Err(DrbdError::MetadataExists("r0".into()))
    );
    assert!(!ex.commands().iter().any(|c| c.contains("create-md")));

    // None: get-gi fails silently, dump-md says why, create-md runs without --force.
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} get-gi"), 1, "")
        .fail(&format!("{ADM} dump-md"), 1, NO_MD)
        .ok(&format!("{ADM} create-md"), "");
    let d = cli(&ex, &files);
    assert!(!d.has_metadata("r0").await.expect("probe"));
    d.create_metadata("r0").await.expect("create");
    assert_eq!(
        ex.commands().last().map(String::as_str),
        Some(&*format!("{ADM} create-md r0"))
    );

    // Unclean metadata (taken down uncleanly) is metadata.
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} get-gi"), 1, "").fail(
        &format!("{ADM} dump-md"),
        1,
        "Found meta data is \"unclean\", please apply-al first",
    );
    assert!(cli(&ex, &files).has_metadata("r0").await.expect("probe"));

    // Leftovers that are not metadata (an old activity log): drbdmeta asks, declines, and
    // only then, with no valid metadata found twice, --force.
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} get-gi"), 1, "")
        .fail(&format!("{ADM} dump-md"), 1, NO_MD)
        .fail_once(
            &format!("{ADM} create-md r0"),
            1,
            "\nDo you want to proceed?\nstdin not a TTY, not waiting for confirmation",
        )
        .ok(&format!("{ADM} create-md --force r0"), "");
    cli(&ex, &files)
        .create_metadata("r0")
        .await
        .expect("create");
    let cmds = ex.commands();
    let creates: Vec<_> = cmds.iter().filter(|c| c.contains("create-md")).collect();
    assert_eq!(
        creates,
        [
            &format!("{ADM} create-md r0"),
            &format!("{ADM} create-md --force r0")
        ]
    );

    // drbdmeta's own refusal of valid metadata is typed too (e.g. made concurrently).
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} get-gi"), 1, "")
        .fail(&format!("{ADM} dump-md"), 1, NO_MD)
        .fail(
            &format!("{ADM} create-md r0"),
            1,
            "\nValid meta data seems to be in place.\nDo you really want to overwrite?\nstdin not a TTY, not waiting for confirmation",
        );
    assert_eq!(
        cli(&ex, &files).create_metadata("r0").await,
        Err(DrbdError::MetadataExists("r0".into()))
    );
}

#[tokio::test]
async fn wiping_runs_drbdmeta_as_drbdadm_would_with_force() {
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.ok(
        &format!("{ADM} -d wipe-md r1"),
        "drbdmeta 1 v08 /dev/vg/r1_drbdmeta flex-external wipe-md\n",
    )
    .ok("drbdmeta", "");
    cli(&ex, &files).wipe_metadata("r1").await.expect("wipe");
    assert_eq!(
        ex.commands(),
        [
            format!("{ADM} -d wipe-md r1"),
            "drbdmeta --force 1 v08 /dev/vg/r1_drbdmeta flex-external wipe-md".to_string()
        ]
    );
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.ok(&format!("{ADM} -d wipe-md r1"), "something else\n");
    let e = cli(&ex, &files).wipe_metadata("r1").await;
    assert!(matches!(e, Err(DrbdError::Parse { .. })), "{e:?}");
}

#[tokio::test]
async fn repeated_up_connect_disconnect_are_done() {
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(
        &format!("{ADM} up r0"),
        1,
        "Device '0' is configured!\nCommand 'drbdmeta 0 v08 /dev/vg/r0_drbdmeta flex-external apply-al' terminated with exit code 20",
    )
    .ok(&format!("{ADM} adjust r0"), "")
    .fail(
        &format!("{ADM} connect"),
        10,
        "r0: Failure: (102) Local address(port) already in use.\nCommand 'drbdsetup-84 connect r0 ipv4:192.168.77.10:43001 ipv4:192.168.77.11:43001 --protocol=C' terminated with exit code 10",
    )
    .fail(
        &format!("{ADM} disconnect"),
        10,
        "??: Failure: (162) Invalid configuration request\nadditional info from kernel:\nunknown connection\nCommand 'drbdsetup-84 disconnect ipv4:192.168.77.10:43001 ipv4:192.168.77.11:43001' terminated with exit code 10",
    )
    .ok(
        "drbdsetup events2 --now --statistics all",
        "exists resource name:r0 role:Secondary suspended:no\n\
         exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary\n\
         exists device name:r0 volume:0 minor:0 disk:UpToDate size:65536\n\
         exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate out-of-sync:0\n\
         exists -\n",
    );
    let d = cli(&ex, &files);
    d.up("r0").await.expect("up twice is adjust");
    d.connect("r0", false).await.expect("already connected");
    // Discarding data is never claimed done by a connection that already exists.
    assert!(matches!(
        d.connect("r0", true).await,
        Err(DrbdError::Exec(_))
    ));
    d.disconnect("r0")
        .await
        .expect("resource there: already StandAlone");
    assert_eq!(
        d.disconnect("gone").await,
        Err(DrbdError::NoSuchResource("gone".into()))
    );
    let s = d.status().await.expect("status");
    assert_eq!(s[0].connection, ConnState::Connected);
}

/// What drbdadm 8.4 printed in a VM for `up` and `adjust` of a file naming no peer: it
/// attached the disk (and dropped the old connection), then failed at the network step.
const NO_PEER: &str = "/etc/test/drbd/r2.res:2: in resource r2:\n\tMissing section 'on <PEER> { ... }'.\nresource r2: cannot configure network without knowing my peer.\n";

#[tokio::test]
async fn a_resource_without_peer_is_up_and_adjusted_once_attached_standalone() {
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} up r2"), 1, NO_PEER)
        .fail(&format!("{ADM} adjust r2"), 1, NO_PEER)
        .ok(
            "drbdsetup events2 --now --statistics all",
            "exists resource name:r2 role:Primary suspended:no\n\
             exists device name:r2 volume:0 minor:2 disk:UpToDate size:65536\n\
             exists -\n",
        );
    let d = cli(&ex, &files);
    d.up("r2").await.expect("attached alone");
    d.adjust("r2").await.expect("adjusted alone");
    // The same words while the resource is not up (attach failed first) stay a failure.
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} up r2"), 1, NO_PEER)
        .ok("drbdsetup events2 --now --statistics all", "exists -\n");
    let d = cli(&ex, &files);
    assert!(matches!(d.up("r2").await, Err(DrbdError::Exec(_))));
    // ... and so does a resource still connected (the connection was not dropped).
    let (ex, files) = (Script::default(), MemFiles::default());
    ex.fail(&format!("{ADM} adjust r2"), 1, NO_PEER).ok(
        "drbdsetup events2 --now --statistics all",
        "exists resource name:r2 role:Primary suspended:no\n\
         exists connection name:r2 peer-node-id:0 conn-name:peer connection:Connected role:Secondary\n\
         exists device name:r2 volume:0 minor:2 disk:UpToDate size:65536\n\
         exists peer-device name:r2 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate out-of-sync:0\n\
         exists -\n",
    );
    let d = cli(&ex, &files);
    assert!(matches!(d.adjust("r2").await, Err(DrbdError::Exec(_))));
}

#[tokio::test]
async fn kernel_is_loaded_when_needed_and_must_be_8_4() {
    const PROC: &str =
        "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: F73C670A7EC572DB9CF3E5B \n";
    let files = MemFiles::default();

    let ex = Script::default();
    ex.ok("cat /proc/drbd", PROC)
        .ok("drbdadm --version", "DRBDADM_VERSION=9.22.0\n");
    let k = cli(&ex, &files).kernel().await.expect("loaded");
    assert_eq!(k.version, "8.4.11");

    let ex = Script::default();
    ex.fail_once(
        "cat /proc/drbd",
        1,
        "cat: can't open '/proc/drbd': No such file or directory",
    )
    .ok("modprobe drbd", "")
    .ok("cat /proc/drbd", PROC)
    .ok("drbdadm --version", "");
    assert!(cli(&ex, &files).kernel().await.is_ok());
    assert_eq!(
        ex.commands(),
        [
            "cat /proc/drbd",
            "modprobe drbd",
            "cat /proc/drbd",
            "drbdadm --version"
        ]
    );

    let ex = Script::default();
    ex.fail("cat /proc/drbd", 1, "No such file or directory")
        .fail(
            "modprobe drbd",
            1,
            "modprobe: FATAL: Module drbd not found in directory /lib/modules/6.1.0-56-amd64",
        );
    let e = cli(&ex, &files).kernel().await.expect_err("no module");
    assert!(
        matches!(&e, DrbdError::NotLoaded { detail } if detail.contains("Module drbd not found")),
        "{e}"
    );

    let ex = Script::default();
    ex.ok("cat /proc/drbd", "version: 9.2.12 (api:2/proto:86-122)\n");
    assert_eq!(
        cli(&ex, &files).kernel().await,
        Err(DrbdError::UnsupportedVersion {
            found: "9.2.12".into()
        })
    );

    let ex = Script::default();
    ex.ok("cat /proc/drbd", PROC).fail(
        "drbdadm --version",
        20,
        "execvp() failed to exec drbdadm-84: No such file or directory",
    );
    let e = cli(&ex, &files)
        .kernel()
        .await
        .expect_err("no 8.4 userland");
    assert!(
        matches!(&e, DrbdError::NotLoaded { detail } if detail.contains("drbdadm-84")),
        "{e}"
    );
}
