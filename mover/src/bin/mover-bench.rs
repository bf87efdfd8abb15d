//! mover-bench: what the block mover costs and gains, on this machine over loopback.
//!
//! (a) throughput against a raw copy (read → socket → write, like `dd | socat`), (b) a
//! 10 %-used sparse device against a dense one, (c) CPU time and peak RSS per GiB moved,
//! (d) the cost of resuming after a cut at 50 %. Both ends run in this process; the files
//! live in a temporary directory removed at the end.
//!
//! `cargo run --release -p hwameistor-mover --bin mover-bench -- --size-mib 1024`

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hwameistor_mover::testing::{fill_random, CuttingProxy};
use hwameistor_mover::{
    CancellationToken, Client, ClientConfig, CopyIdentity, FileCheckpointStore, Grant, NodeKey,
    Outcome, Phase, RetryPolicy, Server, ServerOptions, StaticAuthorizer, TargetZeroed,
};
use tokio::net::TcpListener;

const MIB: u64 = 1024 * 1024;
/// The client's first wait before reconnecting.
const BACKOFF: Duration = Duration::from_millis(100);
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "Benchmarks the block mover over loopback")]
struct Args {
    /// Size of the copied device in MiB (shrunk if the disk has too little room).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each throughput measurement in (a); the fastest counts (the disk is shared).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Chunk size in KiB.
    #[arg(long, default_value_t = 4096)]
    chunk_kib: u32,
    /// Where to put the files (default: the system's temp directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Removes the bench's directory however the bench ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_bytes(dir: &Path) -> io::Result<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a statvfs the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// User plus system CPU time of the whole process (both ends of every copy).
fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0), so each run's peak is its own;
/// memory earlier runs freed is first handed back, or it would count as this run's.
fn reset_peak_rss() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// What one run cost.
struct Measured {
    elapsed: Duration,
    cpu: Duration,
    peak_rss: u64,
}

fn measure<T>(run: impl FnOnce() -> T) -> (T, Measured) {
    reset_peak_rss();
    let cpu = cpu_time();
    let start = Instant::now();
    let value = run();
    let m = Measured {
        elapsed: start.elapsed(),
        cpu: cpu_time() - cpu,
        peak_rss: peak_rss(),
    };
    (value, m)
}

fn fresh_target(path: &Path, size: u64) -> io::Result<()> {
    let _ = fs::remove_file(path);
    File::create(path)?.set_len(size)
}

/// Writes a device image of `size` bytes: random data in every chunk when `every` is 1,
/// in every `every`-th chunk otherwise (the rest left as holes).
fn make_source(path: &Path, size: u64, chunk: u64, every: u64) -> io::Result<()> {
    let file = File::create(path)?;
    file.set_len(size)?;
    let mut buf = vec![0u8; chunk as usize];
    let mut index = 0;
    while index * chunk < size {
        if index % every == 0 {
            let len = chunk.min(size - index * chunk) as usize;
            fill_random(&mut buf[..len], index + 1);
            file.write_all_at(&buf[..len], index * chunk)?;
        }
        index += 1;
    }
    file.sync_all()
}

/// The baseline: one thread reads the file into a loopback socket, another writes what
/// arrives into the target, and syncs it at the end when `sync` is set (the mover syncs).
fn raw_copy(source: &Path, target: &Path, sync: bool) -> io::Result<u64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let target = target.to_path_buf();
    let receiver = std::thread::spawn(move || -> io::Result<u64> {
        let (mut socket, _) = listener.accept()?;
        let mut file = OpenOptions::new().write(true).open(&target)?;
        let mut buf = vec![0u8; MIB as usize];
        let mut total = 0;
        loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])?;
            total += n as u64;
        }
        if sync {
            file.sync_data()?;
        }
        Ok(total)
    });
    let mut socket = std::net::TcpStream::connect(addr)?;
    let mut file = File::open(source)?;
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        socket.write_all(&buf[..n])?;
    }
    drop(socket);
    receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))?
}

struct Bench {
    dir: PathBuf,
    chunk: u32,
    source_key: Arc<NodeKey>,
    target_key: Arc<NodeKey>,
    runs: u32,
}

struct MoverRun {
    outcome: Outcome,
    /// Bytes the source sent to the target through the proxy, cut frames included.
    proxied: u64,
    /// Until every chunk was on the target and synced (verification excluded).
    streaming: Duration,
    measured: Measured,
}

impl Bench {
    /// Copies `source` to a fresh `target` with the mover, through a proxy when `proxy` is
    /// set (cutting its first connection after that many bytes when it is `Some(Some(n))`).
    async fn mover(
        &mut self,
        source: &Path,
        target: &Path,
        zeroed: TargetZeroed,
        proxy: Option<Option<u64>>,
    ) -> Result<MoverRun, Box<dyn Error>> {
        self.runs += 1;
        let size = fs::metadata(source)?.len();
        fresh_target(target, size)?;
        let identity = CopyIdentity {
            operation: format!("bench-{}", self.runs),
            uid: format!("uid-{}", self.runs),
            volume: "pvc-bench".into(),
            source_node: "node-a".into(),
            target_node: "node-b".into(),
        };
        let grant = Grant {
            device: source.to_path_buf(),
            uid: identity.uid.clone(),
            volume: identity.volume.clone(),
            target_node: identity.target_node.clone(),
            target_key: self.target_key.public_key(),
            size: None,
        };
        let authorizer = StaticAuthorizer::new().grant(identity.operation.clone(), grant);
        let server = Server::new(
            "node-a",
            self.source_key.clone(),
            authorizer,
            ServerOptions::default(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let serving = {
            let stop = stop.clone();
            tokio::spawn(async move { server.serve(listener, stop).await })
        };
        let proxy = match proxy {
            Some(cut) => Some(CuttingProxy::start(server_addr, cut).await?),
            None => None,
        };
        let addr: SocketAddr = proxy.as_ref().map_or(server_addr, |p| p.addr());

        let checkpoint = self.dir.join("copy.checkpoint.json");
        let _ = fs::remove_file(&checkpoint);
        let mut config = ClientConfig::new(
            identity,
            addr.to_string(),
            self.source_key.public_key(),
            target,
        );
        config.chunk_size = self.chunk;
        config.target_zeroed = zeroed;
        config.retry = RetryPolicy {
            initial_backoff: BACKOFF,
            ..RetryPolicy::default()
        };
        let client = Client::new(
            config,
            self.target_key.clone(),
            Arc::new(FileCheckpointStore::new(&checkpoint)),
        )?;
        let mut progress = client.progress();
        let start = Instant::now();
        let streamed = tokio::spawn(async move {
            let _ = progress.wait_for(|p| p.phase == Phase::Verifying).await;
            start.elapsed()
        });
        reset_peak_rss();
        let cpu = cpu_time();
        let outcome = client.run(CancellationToken::new()).await?;
        let measured = Measured {
            elapsed: start.elapsed(),
            cpu: cpu_time() - cpu,
            peak_rss: peak_rss(),
        };
        stop.cancel();
        serving.await?;
        let streaming = streamed.await?;
        let _ = fs::remove_file(&checkpoint);
        Ok(MoverRun {
            outcome,
            proxied: proxy.map_or(0, |p| p.bytes_from_upstream()),
            streaming,
            measured,
        })
    }
}

fn mib_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / MIB as f64 / t.as_secs_f64()
}

fn per_gib(d: Duration, bytes: u64) -> f64 {
    d.as_secs_f64() / (bytes as f64 / GIB)
}

/// A raw copy of `source` to a fresh target, measured.
async fn raw_run(
    source: &Path,
    target: &Path,
    size: u64,
    sync: bool,
) -> Result<Measured, Box<dyn Error>> {
    fresh_target(target, size)?;
    let (s, t) = (source.to_path_buf(), target.to_path_buf());
    let (copied, measured) =
        tokio::task::spawn_blocking(move || measure(|| raw_copy(&s, &t, sync))).await?;
    if copied? != size {
        return Err("the raw copy fell short".into());
    }
    Ok(measured)
}

fn fastest(best: Option<Measured>, run: Measured) -> Option<Measured> {
    match best {
        Some(best) if best.elapsed <= run.elapsed => Some(best),
        _ => Some(run),
    }
}

fn row(label: &str, t: Duration, extra: &str) {
    println!("    {label:<44} {:>6.2} s  {extra}", t.as_secs_f64());
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    hwameistor_mover::validate_chunk_size(args.chunk_kib.saturating_mul(1024))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = WorkDir(base.join(format!("mover-bench-{}", std::process::id())));
    fs::create_dir_all(&work.0)?;
    let chunk = u64::from(args.chunk_kib) * 1024;

    // At most two full-size files exist at once; keep them under 3 GiB and leave room.
    let free = free_bytes(&work.0)?;
    let room = free.saturating_sub(1024 * MIB) / 2;
    let mut size = (args.size_mib * MIB).min(room).min(1536 * MIB);
    size -= size % chunk;
    if size < 16 * chunk {
        return Err(format!("only {} MiB free in {}", free / MIB, work.0.display()).into());
    }
    println!(
        "mover-bench: {} MiB device, {} KiB chunks, files in {} ({} MiB free){}",
        size / MIB,
        args.chunk_kib,
        work.0.display(),
        free / MIB,
        if size < args.size_mib * MIB {
            " — shrunk to fit the disk"
        } else {
            ""
        }
    );
    let mut bench = Bench {
        dir: work.0.clone(),
        chunk: chunk as u32,
        source_key: Arc::new(NodeKey::generate()?),
        target_key: Arc::new(NodeKey::generate()?),
        runs: 0,
    };
    let source = work.0.join("dense.img");
    let sparse = work.0.join("sparse.img");
    let target = work.0.join("target.img");

    make_source(&source, size, chunk, 1)?;
    let repeat = args.repeat.max(1);

    // (a) throughput, the fastest of `repeat` runs each.
    let mut raw = None;
    let mut raw_synced = None;
    let mut dense: Option<MoverRun> = None;
    for _ in 0..repeat {
        raw = fastest(raw, raw_run(&source, &target, size, false).await?);
        raw_synced = fastest(raw_synced, raw_run(&source, &target, size, true).await?);
        let run = bench
            .mover(&source, &target, TargetZeroed::No, None)
            .await?;
        if dense
            .as_ref()
            .is_none_or(|d| run.measured.elapsed < d.measured.elapsed)
        {
            dense = Some(run);
        }
    }
    let (Some(raw), Some(raw_synced), Some(dense)) = (raw, raw_synced, dense) else {
        return Err("no run measured".into());
    };
    println!(
        "\n(a) throughput, {} MiB of random data over loopback (fastest of {repeat})",
        size / MIB
    );
    row(
        "raw copy (read → socket → write)",
        raw.elapsed,
        &format!("{:>5.0} MiB/s", mib_s(size, raw.elapsed)),
    );
    row(
        "raw copy, then fdatasync",
        raw_synced.elapsed,
        &format!("{:>5.0} MiB/s", mib_s(size, raw_synced.elapsed)),
    );
    row(
        "mover, streamed, written and synced",
        dense.streaming,
        &format!("{:>5.0} MiB/s", mib_s(size, dense.streaming)),
    );
    row(
        "mover, then both sides verified",
        dense.measured.elapsed,
        &format!("{:>5.0} MiB/s", mib_s(size, dense.measured.elapsed)),
    );
    let ratio = |mover: Duration, raw: &Measured| raw.elapsed.as_secs_f64() / mover.as_secs_f64();
    println!(
        "    mover/raw throughput: streamed {:.2} of the raw copy, {:.2} of the synced one; verified {:.2} and {:.2}",
        ratio(dense.streaming, &raw),
        ratio(dense.streaming, &raw_synced),
        ratio(dense.measured.elapsed, &raw),
        ratio(dense.measured.elapsed, &raw_synced),
    );
    println!(
        "    on the wire: {} bytes for {size} of data ({:.4} % framing)",
        dense.outcome.bytes_on_wire,
        (dense.outcome.bytes_on_wire - size) as f64 * 100.0 / size as f64
    );

    // (d) resume after a cut, against an uncut run through the same proxy.
    let uncut = bench
        .mover(&source, &target, TargetZeroed::No, Some(None))
        .await?;
    let cut = bench
        .mover(&source, &target, TargetZeroed::No, Some(Some(size / 2)))
        .await?;
    fs::remove_file(&source)?;
    fs::remove_file(&target)?;

    // (b) sparse.
    make_source(&sparse, size, chunk, 10)?;
    let thin = bench
        .mover(&sparse, &target, TargetZeroed::Yes, None)
        .await?;
    let zeroing = bench
        .mover(&sparse, &target, TargetZeroed::No, None)
        .await?;
    let raw_sparse = raw_run(&sparse, &target, size, true).await?;
    fs::remove_file(&sparse)?;
    fs::remove_file(&target)?;

    println!(
        "\n(b) a 10 %-used sparse device of {} MiB (random data in every 10th chunk)",
        size / MIB
    );
    row("mover, dense device (a)", dense.measured.elapsed, "");
    row(
        "mover, sparse device to a thin target",
        thin.measured.elapsed,
        &format!(
            "{} zero chunks not sent, {} MiB on the wire",
            thin.outcome.zero_chunks,
            thin.outcome.bytes_on_wire / MIB
        ),
    );
    row(
        "mover, sparse device, target zeroed",
        zeroing.measured.elapsed,
        "holes punched",
    );
    row(
        "raw copy of the sparse device, fdatasync",
        raw_sparse.elapsed,
        "",
    );
    println!(
        "    speed-up of the sparse copy: {:.1}x over the dense copy, {:.1}x over the raw copy",
        dense.measured.elapsed.as_secs_f64() / thin.measured.elapsed.as_secs_f64(),
        raw_sparse.elapsed.as_secs_f64() / thin.measured.elapsed.as_secs_f64()
    );

    println!(
        "\n(c) cost per GiB moved (both ends in this process; the mover's includes verification)"
    );
    let cost = |label: &str, m: &Measured| {
        println!(
            "    {label:<44} CPU {:>5.2} s/GiB   peak RSS {:>4} MiB",
            per_gib(m.cpu, size),
            m.peak_rss / MIB
        );
    };
    cost("raw copy", &raw);
    cost("raw copy, then fdatasync", &raw_synced);
    cost("mover, dense device", &dense.measured);
    cost("mover, sparse device to a thin target", &thin.measured);
    println!(
        "    the mover's peak RSS is its pipelines' buffers (about 15 chunks in flight on both ends), \
         whatever the device's size: {:.0} MiB per GiB at {} MiB",
        dense.measured.peak_rss as f64 / MIB as f64 / (size as f64 / GIB),
        size / MIB
    );

    println!("\n(d) resume after the link is cut at 50 % (both runs through a loopback proxy)");
    row(
        "uncut",
        uncut.measured.elapsed,
        &format!("{} bytes sent by the source", uncut.proxied),
    );
    row(
        &format!(
            "cut, resumed at chunk {} of {}",
            cut.outcome.resume_points.get(1).copied().unwrap_or(0),
            size / chunk
        ),
        cut.measured.elapsed,
        &format!("{} bytes sent by the source", cut.proxied),
    );
    let resent = cut.proxied.saturating_sub(uncut.proxied);
    println!(
        "    re-sent {resent} bytes ({:.2} % of the device, {:.2} chunks); {:+.2} s, of which {:.2} s waiting before reconnecting",
        resent as f64 * 100.0 / size as f64,
        resent as f64 / chunk as f64,
        cut.measured.elapsed.as_secs_f64() - uncut.measured.elapsed.as_secs_f64(),
        BACKOFF.as_secs_f64()
    );
    Ok(())
}
