//! Marks builds whose tests run against a real cluster: with HWAMEISTOR_TEST_KUBECONFIG set
//! and non-empty, `cfg(real_cluster)` is on, and the API-level tests that only make sense on
//! the in-process server (they stop it, or count every object of a kind) are compiled as
//! ignored with the reason, so they are reported as not run instead of passing unchecked.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(real_cluster)");
    println!("cargo::rerun-if-env-changed=HWAMEISTOR_TEST_KUBECONFIG");
    if std::env::var_os("HWAMEISTOR_TEST_KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=real_cluster");
    }
}
