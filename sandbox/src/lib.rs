//! A local HwameiStor for tests and demos: a Kubernetes API (the in-process test server, or
//! a real cluster given by `HWAMEISTOR_TEST_KUBECONFIG`), the CRDs installed, and throwaway
//! node VMs with virtual disks running the real node agent.

pub mod bench;

use hwameistor_testapi::TestCluster;
use hwameistor_testbed::{BinarySpec, Testbed, TestbedAssets, VmSpec, HOST_ADDR_FROM_GUEST};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the agent binary lives inside a node VM.
pub const GUEST_AGENT: &str = "/usr/local/bin/hwameistor-agent";
/// Where the node VMs find their kubeconfig.
pub const GUEST_KUBECONFIG: &str = "/etc/hwameistor/kubeconfig";
/// The agent's log inside a node VM.
pub const GUEST_AGENT_LOG: &str = "/var/log/hwameistor-agent.log";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("test API server: {0}")]
    Api(#[from] hwameistor_testapi::Error),
    #[error("testbed: {0}")]
    Testbed(#[from] hwameistor_testbed::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("{0}")]
    Other(String),
}

/// Installs (server-side applies) every HwameiStor CRD and waits until each is Established.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("hwameistor-sandbox").force();
    for crd in hwameistor_api::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        let established = kube::runtime::wait::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(api.clone(), &name, established),
        )
        .await
        .map_err(|_| {
            Error::Timeout(
                Duration::from_secs(30),
                format!("CRD {name} to be Established"),
            )
        })?
        .map_err(|e| Error::Other(format!("waiting for CRD {name}: {e}")))?;
    }
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(timeout, what.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A random prefix for node names, so runs against a shared real cluster never collide
/// (testapi's one rule for generated names).
pub fn run_prefix() -> String {
    hwameistor_testapi::util::generate_name_suffix()
}

/// The API, the CRDs and the node VMs.
pub struct Sandbox {
    pub cluster: TestCluster,
    pub client: Client,
    pub testbed: Testbed,
    kubeconfig_for_vms: String,
}

impl Sandbox {
    /// Builds the VM assets with the agent at `agent_bin`, starts the API, installs the CRDs
    /// and boots `nodes` (each gets the kubeconfig at [`GUEST_KUBECONFIG`]).
    pub async fn start(agent_bin: &Path, nodes: Vec<VmSpec>) -> Result<Self, Error> {
        let bin = agent_bin.to_path_buf();
        let assets = tokio::task::spawn_blocking(move || {
            TestbedAssets::build(&[BinarySpec::new(bin, GUEST_AGENT)])
        })
        .await
        .map_err(|e| Error::Other(format!("asset build panicked: {e}")))??;
        let cluster = TestCluster::start().await?;
        let client = cluster.client().await?;
        install_crds(&client).await?;
        let kubeconfig_for_vms = cluster.kubeconfig_yaml(HOST_ADDR_FROM_GUEST)?;
        let nodes = nodes
            .into_iter()
            .map(|n| n.file(GUEST_KUBECONFIG, kubeconfig_for_vms.clone().into_bytes()))
            .collect();
        let testbed = Testbed::start(&assets, nodes).await?;
        Ok(Sandbox {
            cluster,
            client,
            testbed,
            kubeconfig_for_vms,
        })
    }

    pub fn kubeconfig_for_vms(&self) -> &str {
        &self.kubeconfig_for_vms
    }

    /// Starts the agent on `node` (the VM's name is the node name) with extra environment,
    /// e.g. `HWAMEISTOR_CRASH_POINT`. Returns its pid in the VM.
    pub async fn start_agent(&self, node: &str, env: &[(&str, &str)]) -> Result<u32, Error> {
        self.start_agent_with(
            node,
            env,
            "RUST_LOG=info,hwameistor_agent=debug",
            "--resync 20s",
        )
        .await
    }

    /// Starts the agent with a chosen log filter and extra arguments (benchmarks run it as
    /// production does: default resync, info logs).
    pub async fn start_agent_with(
        &self,
        node: &str,
        env: &[(&str, &str)],
        log: &str,
        args: &str,
    ) -> Result<u32, Error> {
        let vm = self.testbed.vm(node);
        let env: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let cmd = format!("{env}{log} exec {GUEST_AGENT} --node-name {node} --kubeconfig {GUEST_KUBECONFIG} {args}");
        Ok(vm.spawn(&cmd, GUEST_AGENT_LOG).await?)
    }

    /// The agent's log on `node`, for failure messages.
    pub async fn agent_log(&self, node: &str) -> String {
        match self.testbed.vm(node).read_file(GUEST_AGENT_LOG).await {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b).into_owned();
                let tail: Vec<&str> = s.lines().rev().take(60).collect();
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            }
            Err(e) => format!("(no agent log: {e})"),
        }
    }

    pub async fn shutdown(self) -> Result<(), Error> {
        self.testbed.shutdown().await?;
        if let TestCluster::Local(server) = self.cluster {
            server.shutdown().await;
        }
        Ok(())
    }
}

/// The controller binary running on this machine against a sandbox's API. Killed when
/// dropped.
pub struct ControllerProcess {
    pub child: tokio::process::Child,
    /// Holds its kubeconfig and CSI socket.
    _dir: tempfile::TempDir,
}

impl ControllerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

impl Sandbox {
    /// Starts the controller binary `bin` on this machine (with `RUST_LOG=warn`, metrics on a
    /// free loopback port, its CSI socket in a temporary directory), creating the system
    /// namespace its lease lives in if needed.
    pub async fn start_controller(
        &self,
        bin: &Path,
        identity: &str,
    ) -> Result<ControllerProcess, Error> {
        self.start_controller_with(bin, identity, &[]).await
    }

    /// [`Sandbox::start_controller`] with extra controller arguments.
    pub async fn start_controller_with(
        &self,
        bin: &Path,
        identity: &str,
        extra: &[&str],
    ) -> Result<ControllerProcess, Error> {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::PostParams;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(hwameistor_api::SYSTEM_NAMESPACE.into());
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let dir =
            tempfile::tempdir().map_err(|e| Error::Other(format!("temporary directory: {e}")))?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, self.cluster.kubeconfig_yaml("127.0.0.1")?)
            .map_err(|e| Error::Other(format!("writing {}: {e}", kubeconfig.display())))?;
        let child = tokio::process::Command::new(bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--identity", identity, "--metrics-addr", "127.0.0.1:0"])
            .arg("--csi-endpoint")
            .arg(format!("unix://{}", dir.path().join("csi.sock").display()))
            .args(extra)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Other(format!("starting {}: {e}", bin.display())))?;
        Ok(ControllerProcess { child, _dir: dir })
    }
}

/// A binary of this workspace's target directory (`rel` such as `hwameistor-agent` or
/// `examples/csi_node_call`): the path in environment variable `env` if set, else next to the
/// running executable (a binary in target/<profile>/) or one level up (a test in
/// target/<profile>/deps/).
pub fn workspace_binary(rel: &str, env: &str) -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::Other(e.to_string()))?;
    let dir = exe
        .parent()
        .ok_or_else(|| Error::Other("executable has no directory".into()))?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join(rel);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::Other(format!(
        "{rel} not found next to {}: run `cargo build --workspace --all-targets` first (same profile), or set {env}",
        exe.display()
    )))
}
