//! Builds (or checks) the cached testbed assets and prints where they are, e.g. to warm the
//! cache in CI before the VM tests: `cargo run -p hwameistor-testbed --example build_assets`.
use std::time::Instant;

fn main() {
    let t0 = Instant::now();
    match hwameistor_testbed::TestbedAssets::build(&[]) {
        Ok(a) => println!(
            "kernel {} ({})\ninitrd {}\nin {:?}",
            a.kernel().display(),
            a.kernel_version(),
            a.initrd().display(),
            t0.elapsed()
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
