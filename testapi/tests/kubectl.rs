//! kubectl against the server through a kubeconfig: discovery, Table
//! printing, client-side apply of a CRD and of custom resources, typed
//! commands. kubectl must be on PATH (scripts/install-host-deps.sh installs
//! it); without it this test fails, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use hwameistor_testapi::{unique_name, TestCluster};

/// kubectl from PATH, or a failure that says what is missing.
fn kubectl_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kubectl is not on PATH ({}): this test needs it; install it (scripts/install-host-deps.sh does) or add its directory to PATH",
                path.to_string_lossy()
            )
        })
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            // kubectl keeps caches and config under HOME; keep them in the test dir.
            .env("HOME", &self.dir)
            .output()
            .await
            .expect("kubectl runs")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn cr_yaml(group: &str, name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: {group}/v1alpha1
kind: LocalVolume
metadata:
  name: {name}
spec:
  poolName: LocalStorage_PoolHDD
  requiredCapacityBytes: 1073741824
  replicaNumber: {replicas}
"
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[tokio::test]
async fn kubectl_gets_applies_and_prints() {
    let binary = kubectl_binary();
    let ctx = start().await;
    let dir = tempfile::tempdir().unwrap();
    // A real cluster's kubeconfig is used where it is (it may name
    // certificate files relative to itself).
    let kubeconfig = match &ctx.cluster {
        TestCluster::Real { kubeconfig } => kubeconfig.clone(),
        TestCluster::Local(server) => {
            let path = dir.path().join("kubeconfig");
            server.write_kubeconfig(&path, "127.0.0.1").unwrap();
            path
        }
    };
    let k = Kubectl {
        binary,
        kubeconfig,
        dir: dir.path().to_path_buf(),
    };

    let out = k.ok(&["get", "namespaces"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("AGE"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("default ") && l.contains("Active")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.starts_with("kube-system ")), "{out}");

    // This test's CRD, with a short name and a category of its own so that
    // kubectl cannot resolve them to another group on a shared cluster.
    let group = ctx.group();
    let tag = ctx.id.replace('-', "");
    let short = format!("lv{tag}");
    let category = format!("hwameistor{tag}");
    let mut crd = local_volume_crd(&group);
    crd["spec"]["names"]["shortNames"] = serde_json::json!([short]);
    crd["spec"]["names"]["categories"] = serde_json::json!([category]);
    ctx.cleanup.crd(ctx.lv_crd_name());
    let crd_path = dir.path().join("crd.yaml");
    std::fs::write(&crd_path, serde_yaml_ng::to_string(&crd).unwrap()).unwrap();
    let out = k.ok(&["apply", "-f", path_str(&crd_path)]).await;
    assert_eq!(
        out.trim(),
        format!(
            "customresourcedefinition.apiextensions.k8s.io/{} created",
            ctx.lv_crd_name()
        )
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{}", ctx.lv_crd_name()),
    ])
    .await;

    let cr_path = dir.path().join("cr.yaml");
    std::fs::write(&cr_path, cr_yaml(&group, "vol-1", 2)).unwrap();
    let out = k.ok(&["apply", "-f", path_str(&cr_path)]).await;
    assert_eq!(out.trim(), format!("localvolume.{group}/vol-1 created"));

    // Table output from additionalPrinterColumns, by plural, short name and category.
    for what in [format!("localvolumes.{group}"), short.clone(), category] {
        let out = k.ok(&["get", &what]).await;
        let lines: Vec<&str> = out.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "POOL", "REPLICAS", "STATE", "AGE"],
            "{out}"
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&row[..3], ["vol-1", "LocalStorage_PoolHDD", "2"], "{out}");
    }

    // Re-applying a change goes through a merge patch.
    std::fs::write(&cr_path, cr_yaml(&group, "vol-1", 3)).unwrap();
    let out = k.ok(&["apply", "-f", path_str(&cr_path)]).await;
    assert_eq!(out.trim(), format!("localvolume.{group}/vol-1 configured"));
    let out = k
        .ok(&[
            "get",
            &short,
            "vol-1",
            "-o",
            "jsonpath={.spec.replicaNumber} {.metadata.generation}",
        ])
        .await;
    assert_eq!(out, "3 2");

    // Schema violations surface as kubectl errors with the server's message.
    std::fs::write(&cr_path, cr_yaml(&group, "vol-2", 9)).unwrap();
    let out = k.run(&["apply", "-f", path_str(&cr_path)]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.replicaNumber: Invalid value: 9: spec.replicaNumber in body should be less than or equal to 4"), "{stderr}");

    // Typed commands send protobuf bodies (Namespace, ConfigMap, Secret here).
    let scratch = unique_name(&ctx.id);
    ctx.cleanup.namespace(&scratch);
    let out = k.ok(&["create", "namespace", &scratch]).await;
    assert_eq!(out.trim(), format!("namespace/{scratch} created"));
    k.ok(&[
        "-n",
        &scratch,
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
    ])
    .await;
    k.ok(&[
        "-n",
        &scratch,
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=k=v",
    ])
    .await;
    let out = k
        .ok(&[
            "-n",
            &scratch,
            "get",
            "configmap",
            "cfg",
            "-o",
            "jsonpath={.data.a}",
        ])
        .await;
    assert_eq!(out, "b");
    let out = k
        .ok(&[
            "-n",
            &scratch,
            "get",
            "secret",
            "sec",
            "-o",
            "jsonpath={.data.k} {.type}",
        ])
        .await;
    assert_eq!(out, "dg== Opaque");
    // kubectl delete waits until the namespace and its contents are gone.
    k.ok(&["delete", "namespace", &scratch, "--timeout=120s"])
        .await;
    let out = k.run(&["get", "namespace", &scratch]).await;
    assert!(!out.status.success(), "namespace and its contents are gone");

    let out = k.ok(&["delete", &short, "vol-1"]).await;
    assert_eq!(out.trim(), format!("localvolume.{group} \"vol-1\" deleted"));
    let out = k.run(&["get", &short]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found"));
}
