//! Embeds every manifest under ../manifests (CRDs now; deploy/ when it lands) into the
//! binary, so `kubectl hwameistor install` needs nothing but itself.

use std::fs;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

fn main() {
    // With HWAMEISTOR_TEST_KUBECONFIG set and non-empty the tests run against a real
    // cluster; `cfg(real_cluster)` compiles the tests that only make sense on the
    // in-process server as ignored, so they are reported as not run.
    println!("cargo::rustc-check-cfg=cfg(real_cluster)");
    println!("cargo::rerun-if-env-changed=HWAMEISTOR_TEST_KUBECONFIG");
    if std::env::var_os("HWAMEISTOR_TEST_KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=real_cluster");
    }
    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = crate_dir.join("../manifests");
    // A directory here makes cargo rescan it recursively, so files added later rebuild us.
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    if files.is_empty() {
        println!(
            "cargo:warning=no manifests found under {}: install will have nothing to apply",
            root.display()
        );
    }
    let mut code = String::from(
        "/// Every manifest file under manifests/, as (path relative to it, contents), sorted by path.\n\
         pub static EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        let abs = f.canonicalize().unwrap_or_else(|_| f.clone());
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("embedded_manifests.rs");
    fs::write(&out, code).expect("write embedded_manifests.rs");
}
