//! kubectl against the server through a written kubeconfig: discovery,
//! Table printing, client-side apply of a CRD and of custom resources.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

const KUBECTL: &str = "/usr/bin/kubectl";

async fn kubectl(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        // kubectl keeps caches and config under HOME; keep them in the test dir.
        .env("HOME", dir)
        .output()
        .await
        .expect("kubectl runs")
}

async fn ok(dir: &Path, args: &[&str]) -> String {
    let out = kubectl(dir, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn cr_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: hwameistor.io/v1alpha1
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

#[tokio::test]
async fn kubectl_gets_applies_and_prints() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed; the kubectl compatibility test needs it");
        return;
    }
    let (server, _client) = start().await;
    let dir = tempfile::tempdir().unwrap();
    server
        .write_kubeconfig(&dir.path().join("kubeconfig"), "127.0.0.1")
        .unwrap();

    let out = ok(dir.path(), &["get", "namespaces"]).await;
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

    let crd_path = dir.path().join("crd.yaml");
    std::fs::write(
        &crd_path,
        serde_yaml_ng::to_string(&local_volume_crd()).unwrap(),
    )
    .unwrap();
    let out = ok(dir.path(), &["apply", "-f", crd_path.to_str().unwrap()]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/localvolumes.hwameistor.io created"
    );

    let cr_path = dir.path().join("cr.yaml");
    std::fs::write(&cr_path, cr_yaml("vol-1", 2)).unwrap();
    let out = ok(dir.path(), &["apply", "-f", cr_path.to_str().unwrap()]).await;
    assert_eq!(out.trim(), "localvolume.hwameistor.io/vol-1 created");

    // Table output from additionalPrinterColumns, by plural, short name and category.
    for what in ["localvolumes", "lv", "hwameistor"] {
        let out = ok(dir.path(), &["get", what]).await;
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
    std::fs::write(&cr_path, cr_yaml("vol-1", 3)).unwrap();
    let out = ok(dir.path(), &["apply", "-f", cr_path.to_str().unwrap()]).await;
    assert_eq!(out.trim(), "localvolume.hwameistor.io/vol-1 configured");
    let out = ok(
        dir.path(),
        &[
            "get",
            "lv",
            "vol-1",
            "-o",
            "jsonpath={.spec.replicaNumber} {.metadata.generation}",
        ],
    )
    .await;
    assert_eq!(out, "3 2");

    // Schema violations surface as kubectl errors with the server's message.
    std::fs::write(&cr_path, cr_yaml("vol-2", 9)).unwrap();
    let out = kubectl(dir.path(), &["apply", "-f", cr_path.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.replicaNumber: Invalid value: 9: spec.replicaNumber in body should be less than or equal to 4"), "{stderr}");

    // Typed commands send protobuf bodies (Namespace, ConfigMap, Secret here).
    let out = ok(dir.path(), &["create", "namespace", "scratch"]).await;
    assert_eq!(out.trim(), "namespace/scratch created");
    ok(
        dir.path(),
        &[
            "-n",
            "scratch",
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
        ],
    )
    .await;
    ok(
        dir.path(),
        &[
            "-n",
            "scratch",
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=k=v",
        ],
    )
    .await;
    let out = ok(
        dir.path(),
        &[
            "-n",
            "scratch",
            "get",
            "configmap",
            "cfg",
            "-o",
            "jsonpath={.data.a}",
        ],
    )
    .await;
    assert_eq!(out, "b");
    let out = ok(
        dir.path(),
        &[
            "-n",
            "scratch",
            "get",
            "secret",
            "sec",
            "-o",
            "jsonpath={.data.k} {.type}",
        ],
    )
    .await;
    assert_eq!(out, "dg== Opaque");
    ok(dir.path(), &["delete", "namespace", "scratch"]).await;
    let out = kubectl(dir.path(), &["get", "namespace", "scratch"]).await;
    assert!(!out.status.success(), "namespace and its contents are gone");

    let out = ok(dir.path(), &["delete", "lv", "vol-1"]).await;
    assert_eq!(out.trim(), "localvolume.hwameistor.io \"vol-1\" deleted");
    let out = kubectl(dir.path(), &["get", "lv"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found"));
}
