//! Manual check: run shell commands (args) in a fresh VM and print their output.
use hwameistor_testbed::*;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let assets = TestbedAssets::build(&[])?;
    let tb = Testbed::start(
        &assets,
        vec![VmSpec::new("probe")
            .disk("P1", 512 << 20)
            .disk("P2", 64 << 20)],
    )
    .await?;
    for cmd in std::env::args().skip(1) {
        let out = tb
            .vm("probe")
            .exec_timeout(&cmd, std::time::Duration::from_secs(120))
            .await?;
        println!(
            "$ {cmd}\n[code {:?}]\n{}--stderr--\n{}",
            out.code, out.stdout, out.stderr
        );
    }
    tb.shutdown().await
}
