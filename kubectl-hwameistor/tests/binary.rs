//! The built binary itself: start-up flags, a real command over a kubeconfig file, and the
//! exit codes and messages a script sees.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-hwameistor"))
        .args(args)
        // No terminal: confirmations must refuse rather than wait.
        .stdin(Stdio::null())
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl-hwameistor")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("kubectl-hwameistor {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["disk", "claim", "--help"]);
    assert!(out.status.success());
    for flag in [
        "--type",
        "--min-size",
        "--disk",
        "--dry-run",
        "--yes",
        "--kubeconfig",
        "--context",
        "--namespace",
        "--request-timeout",
    ] {
        assert!(text(&out.stdout).contains(flag), "{flag} missing from help");
    }
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completion", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(text(&out.stdout).contains("kubectl-hwameistor"), "{shell}");
    }
}

#[test]
fn a_bad_size_is_a_usage_error_with_parse_size_message() {
    let out = run(&["volume", "expand", "pvc-1", "10Xi"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid size: unit \"Xi\" in size \"10Xi\" is not known; use one of Ki Mi Gi Ti Pi, K M G T P, or plain bytes"),
        "{err}"
    );
}

#[test]
fn an_unloadable_kubeconfig_fails_with_exit_1() {
    let out = run(&["--kubeconfig", "/nonexistent/kubeconfig", "node", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: cannot load kubeconfig /nonexistent/kubeconfig: "),
        "{err}"
    );
}

#[tokio::test]
async fn commands_against_a_cluster_through_a_kubeconfig_file() {
    let env = Env::start().await;
    let kc = env.kubeconfig.to_str().unwrap().to_string();
    // Not installed yet.
    let kc2 = kc.clone();
    let out = tokio::task::spawn_blocking(move || run(&["--kubeconfig", &kc2, "disk", "list"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: HwameiStor is not installed in this cluster: run `kubectl hwameistor install`\n"
    );

    env.install_crds().await;
    populate(&env.client()).await;
    let kc2 = kc.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "--kubeconfig",
            &kc2,
            "--request-timeout",
            "10s",
            "pool",
            "list",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        [
            "NODE     CLASS   TOTAL   USED   FREE    USE%   VOLUMES   DISKS",
            "node-a   HDD     200Gi   20Gi   180Gi   10%    1         1",
            "node-b   HDD     100Gi   10Gi   90Gi    10%    1         1",
        ]
    );
    // A destructive command without a terminal and without --yes refuses, changing nothing.
    let kc2 = kc.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&["--kubeconfig", &kc2, "disk", "claim", "node-a"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Plan for claim node-a-"),
        "the plan is shown first: {err}"
    );
    assert!(
        err.ends_with("needs confirmation, but stdin is not a terminal: pass --yes to proceed\n"),
        "{err}"
    );
    let claims: kube::Api<hwameistor_api::LocalDiskClaim> = kube::Api::all(env.client());
    assert!(claims
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());
    // diagnose exits 1 on errors (no agents, no controller in this cluster).
    let out =
        tokio::task::spawn_blocking(move || run(&["--kubeconfig", &kc, "diagnose", "-o", "json"]))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["errors"].as_u64().unwrap() > 0);
}
