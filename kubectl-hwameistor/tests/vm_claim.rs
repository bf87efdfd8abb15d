//! The plugin against a real node: a disk of a VM node claimed with `kubectl hwameistor disk
//! claim`, the real agent growing the pool, and the pool shown by `pool list`. Needs root and
//! qemu-system-x86_64, and the agent built (`cargo build --workspace --all-targets`).

use hwameistor_sandbox::{run_prefix, workspace_binary, Sandbox};
use hwameistor_testbed::VmSpec;
use std::process::Command;

fn plugin(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-hwameistor"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl-hwameistor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_claimed_through_the_plugin_grows_a_pool_shown_by_pool_list() {
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN").expect("agent binary");
    let node = format!("{}-p1", run_prefix());
    let sb = Sandbox::start(
        &agent,
        vec![VmSpec::new(&node)
            .disk("plug-a", 512 << 20)
            .disk("plug-b", 256 << 20)],
    )
    .await
    .expect("sandbox");
    sb.start_agent(&node, &[]).await.expect("agent");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        sb.cluster.kubeconfig_yaml("127.0.0.1").expect("kubeconfig"),
    )
    .expect("write kubeconfig");

    // Wait for the agent to publish both disks, through the plugin itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (code, out, _) = plugin(&kc, &["disk", "list", "--node", &node, "-o", "json"]);
        if code == 0 && out.matches("\"Available\"").count() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "disks never became Available: {out}\n{}",
            sb.agent_log(&node).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // Claim only the disks of at least 300Mi: plug-a, not plug-b. The claim's name is
    // unique like the node's, so runs against one shared real cluster never collide.
    let claim = format!("{node}-claim");
    let (code, out, err) = plugin(
        &kc,
        &[
            "disk",
            "claim",
            &node,
            "--min-size",
            "300Mi",
            "--yes",
            "--timeout",
            "120s",
            "--name",
            &claim,
        ],
    );
    assert_eq!(
        code,
        0,
        "claim failed:\nstdout: {out}\nstderr: {err}\n{}",
        sb.agent_log(&node).await
    );

    let (code, out, err) = plugin(&kc, &["pool", "list", "--node", &node, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let pools: serde_json::Value = serde_json::from_str(&out).expect("pool list JSON");
    let text = pools.to_string();
    assert!(text.contains("LocalStorage_PoolHDD"), "{text}");
    let (_, table, _) = plugin(&kc, &["pool", "list", "--node", &node]);
    let row = table
        .lines()
        .find(|l| l.starts_with(node.as_str()))
        .unwrap_or_else(|| panic!("no pool row in:\n{table}"));
    // One 512Mi disk, less LVM metadata: 508Mi of extents, all free, no volume, one disk.
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [node.as_str(), "HDD", "508Mi", "0B", "508Mi", "0%", "0", "1"],
        "{table}"
    );
    // The VM agrees: one physical volume in the pool, and the small disk untouched.
    let vm = sb.testbed.vm(&node);
    let pvs = vm
        .exec_ok("pvs --noheadings -o pv_name,vg_name")
        .await
        .expect("pvs");
    assert_eq!(pvs.lines().count(), 1, "{pvs}");
    assert!(pvs.contains("LocalStorage_PoolHDD"), "{pvs}");
    let (_, disks, _) = plugin(&kc, &["disk", "list", "--node", &node]);
    let b = disks
        .lines()
        .find(|l| l.contains("256Mi"))
        .unwrap_or_else(|| panic!("plug-b missing:\n{disks}"));
    assert!(b.contains("Available"), "{b}");
    sb.shutdown().await.expect("shutdown");
}
