//! Writes the CRD YAML into manifests/crds (or the directory given as the first argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds"));
    std::fs::create_dir_all(&dir)?;
    for crd in hwameistor_api::crds::all() {
        let path = dir.join(hwameistor_api::crds::file_name(&crd));
        std::fs::write(&path, hwameistor_api::crds::render(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
