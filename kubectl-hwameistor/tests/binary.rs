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

/// Runs the binary on a blocking thread (it is a process; the test's runtime keeps serving
/// an in-process API server meanwhile).
async fn run_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .expect("the binary ran")
}

fn args(env: &Env, rest: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--kubeconfig".to_string(),
        env.kubeconfig.to_string_lossy().into_owned(),
        "-n".to_string(),
        env.ns.clone(),
    ];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "needs a cluster without the HwameiStor CRDs; on a shared cluster other tests install them"
)]
async fn the_binary_says_to_install_on_a_cluster_without_hwameistor() {
    let env = Env::start_without_crds().await;
    let out = run_async(args(&env, &["disk", "list"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: HwameiStor is not installed in this cluster: run `kubectl hwameistor install`\n"
    );
}

#[tokio::test]
async fn commands_against_a_cluster_through_a_kubeconfig_file() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let out = run_async(args(&env, &["--request-timeout", "10s", "pool", "list"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        cells(&stdout)[0],
        ["NODE", "CLASS", "TOTAL", "USED", "FREE", "USE%", "VOLUMES", "DISKS"]
    );
    assert_eq!(
        row(&stdout, &fx.node_a),
        [
            fx.node_a.as_str(),
            "HDD",
            "200Gi",
            "20Gi",
            "180Gi",
            "10%",
            "1",
            "1"
        ]
    );
    assert_eq!(
        row(&stdout, &fx.node_b),
        [
            fx.node_b.as_str(),
            "HDD",
            "100Gi",
            "10Gi",
            "90Gi",
            "10%",
            "1",
            "1"
        ]
    );
    // A destructive command without a terminal and without --yes refuses, changing nothing.
    let out = run_async(args(&env, &["disk", "claim", &fx.node_a])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("Plan for claim {}-", fx.node_a)),
        "the plan is shown first: {err}"
    );
    assert!(
        err.ends_with("needs confirmation, but stdin is not a terminal: pass --yes to proceed\n"),
        "{err}"
    );
    let claims: kube::Api<hwameistor_api::LocalDiskClaim> = kube::Api::all(env.client());
    assert!(!claims
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|c| c.spec.node_name == fx.node_a));
    // diagnose exits 1 on errors (no agents, no controller in this test's namespace).
    let out = run_async(args(&env, &["diagnose", "-o", "json"])).await;
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["errors"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn resolving_a_split_brain_without_a_terminal_shows_the_plan_and_refuses() {
    let env = Env::start().await;
    let fx = env.fx();
    let name = split_brain_volume(&env, "sb").await;
    let volumes: kube::Api<hwameistor_api::LocalVolume> = kube::Api::all(env.client());
    let before = volumes.get(&name).await.unwrap();
    let out = run_async(args(
        &env,
        &["volume", "resolve-split-brain", &name, "--keep", &fx.node_a],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no result: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "Plan: resolve the split brain of volume {name} (PVC default/data-{name})\n"
        )),
        "the plan is shown first: {err}"
    );
    assert!(
        err.contains(&format!(
            "The changes made on {} since the split are DISCARDED",
            fx.node_b
        )),
        "{err}"
    );
    assert!(
        err.ends_with(&format!("error: discard the changes made on {} to volume {name} since the split brain needs confirmation, but stdin is not a terminal: pass --yes to proceed\n", fx.node_b)),
        "{err}"
    );
    let after = volumes.get(&name).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.spec.split_brain_resolution, None);
}
