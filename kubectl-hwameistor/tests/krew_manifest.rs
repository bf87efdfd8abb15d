//! The krew manifest parses, names every platform, matches this version, and its checksums
//! are visibly placeholders for the release job.

use serde_json::Value;

fn manifest() -> (String, Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../krew/hwameistor.yaml");
    let text = std::fs::read_to_string(path).expect("krew/hwameistor.yaml exists");
    let value = serde_yaml_ng::from_str(&text).expect("krew manifest is YAML");
    (text, value)
}

#[test]
fn krew_manifest_is_a_plugin_for_every_platform() {
    let (text, m) = manifest();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "hwameistor");
    let spec = &m["spec"];
    assert_eq!(spec["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
    for field in ["shortDescription", "description", "caveats", "homepage"] {
        assert!(
            spec[field].as_str().is_some_and(|s| !s.trim().is_empty()),
            "{field}"
        );
    }
    assert!(spec["shortDescription"].as_str().unwrap().len() <= 80);
    let mut seen = Vec::new();
    for p in spec["platforms"].as_array().expect("platforms") {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        seen.push(format!("{os}/{arch}"));
        assert_eq!(p["bin"], "kubectl-hwameistor");
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.contains(&format!("{os}-{arch}"))
                && uri.contains(spec["version"].as_str().unwrap()),
            "{uri}"
        );
        let sha = p["sha256"].as_str().unwrap();
        assert_eq!(sha.len(), 64);
        assert!(
            sha.chars().all(|c| c == '0'),
            "placeholder until the release job fills it: {sha}"
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        ["darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"]
    );
    assert_eq!(
        text.matches("# PLACEHOLDER: filled by the release job")
            .count(),
        4
    );
}
