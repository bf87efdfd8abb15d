//! VM tests of the primitives HA (DRBD) failover tests build on: network partitions on the
//! private segment, and hard crashes followed by a power-on.

mod common;

use std::time::Duration;

use common::{assets, bounded, MIB};
use hwameistor_testbed::{Error, Testbed, Vm, VmSpec, HOST_ADDR_FROM_GUEST};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A server on host loopback answering one line `x` with `hello x`; the guests reach it at
/// [`HOST_ADDR_FROM_GUEST`] through their user-mode NIC.
async fn host_echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (rd, mut wr) = s.split();
                let mut line = String::new();
                let _ = BufReader::new(rd).read_line(&mut line).await;
                let _ = wr
                    .write_all(format!("hello {}\n", line.trim()).as_bytes())
                    .await;
            });
        }
    });
    (port, task)
}

async fn reaches_host(vm: &Vm, port: u16) -> Result<(), Error> {
    let reply = vm
        .exec_ok(&format!(
            "echo {} | nc -w 10 {HOST_ADDR_FROM_GUEST} {port}",
            vm.name()
        ))
        .await?;
    assert_eq!(reply.trim(), format!("hello {}", vm.name()));
    Ok(())
}

/// `from` gets an answer from `to` on the private segment within a few tries (the first may
/// wait for ARP after a heal or a boot).
async fn pings(from: &Vm, to: &Vm) -> Result<(), Error> {
    from.exec_ok(&format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do ping -c 1 -W 2 {} >/dev/null && exit 0; done; exit 1",
        to.private_ip()
    ))
    .await
    .map(drop)
}

/// Three pings over four seconds get no answer.
async fn ping_fails(from: &Vm, to: &Vm) -> Result<(), Error> {
    let cmd = format!("ping -c 3 -w 4 {}", to.private_ip());
    let out = from.exec(&cmd).await?;
    assert!(
        !out.success(),
        "{} -> {} should be cut, but: {}",
        from.name(),
        to.name(),
        out.stdout
    );
    Ok(())
}

/// What a node on one side of a partition sees: `cut` unreachable, `peer` and the host reachable.
async fn check_side(me: &Vm, cut: &Vm, peer: &Vm, host_port: u16) -> Result<(), Error> {
    tokio::try_join!(
        ping_fails(me, cut),
        pings(me, peer),
        reaches_host(me, host_port)
    )
    .map(drop)
}

/// `ip/prefix mac` of eth1.
async fn eth1(vm: &Vm) -> Result<String, Error> {
    let out = vm
        .exec_ok(
            "echo $(ip -o -4 addr show dev eth1 | awk '{print $4}') $(cat /sys/class/net/eth1/address)",
        )
        .await?;
    Ok(out.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heal_and_power_cycle() {
    let assets = assets().await;
    bounded(async {
        let (port, server) = host_echo_server().await;
        let mut tb = Testbed::start(
            &assets,
            vec![VmSpec::new("pa"), VmSpec::new("pb"), VmSpec::new("pc")],
        )
        .await?;
        assert!(matches!(
            tb.partition("pa", "pa"),
            Err(Error::InvalidSpec(_))
        ));
        assert!(matches!(
            tb.partition("pa", "nope"),
            Err(Error::InvalidSpec(_))
        ));
        {
            let (a, b, c) = (tb.vm("pa"), tb.vm("pb"), tb.vm("pc"));
            tokio::try_join!(pings(a, b), pings(b, a), pings(a, c))?;

            // Cut a|b: they lose each other, keep c and the host.
            tb.partition("pa", "pb")?;
            tokio::try_join!(check_side(a, b, c, port), check_side(b, a, c, port))?;
            pings(c, a).await?;

            tb.heal("pb", "pa")?;
            tokio::try_join!(pings(a, b), pings(b, a))?;
        }

        // A cut outlasts a crash and power-on of one side.
        tb.partition("pa", "pb")?;
        let before = eth1(tb.vm("pb")).await?;
        let vm = tb.vm_mut("pb");
        let pid = vm.qemu_pid().expect("pb runs");
        vm.crash().await?;
        assert_eq!(vm.qemu_pid(), None);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "QEMU {pid} still exists after crash (crash reaps it)"
        );
        assert!(matches!(vm.exec("true").await, Err(Error::Vm { .. })));
        vm.power_on().await?;
        assert!(matches!(vm.power_on().await, Err(Error::Vm { .. })));
        let (a, b, c) = (tb.vm("pa"), tb.vm("pb"), tb.vm("pc"));
        assert_eq!(eth1(b).await?, before, "same private address and MAC");
        assert_eq!(b.exec_ok("hostname").await?.trim(), "pb");
        tokio::try_join!(check_side(a, b, c, port), check_side(b, a, c, port))?;

        tb.heal_all();
        tokio::try_join!(pings(a, b), pings(b, a))?;
        server.abort();
        tb.shutdown().await
    })
    .await;
}

/// Records written with O_DIRECT and fsync and acknowledged to the host (over the user-mode
/// NIC, after the fsync returned) are all on the disk after `crash` and `power_on`; a write
/// left in the guest's page cache is not (the crash is a power cut, not a clean shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_keeps_flushed_writes_and_loses_the_page_cache() {
    /// Records to see acknowledged before pulling the plug.
    const MIN_ACKS: usize = 200;
    const BLOCK: usize = 4096;
    let assets = assets().await;
    bounded(async {
        let acks_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let acks_port = acks_listener.local_addr().expect("addr").port();
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // One connection: the guest's writer; each line is the number of a record it wrote.
        let acks = tokio::spawn(async move {
            let Ok((s, _)) = acks_listener.accept().await else {
                return;
            };
            let mut lines = BufReader::new(s).lines();
            // Ends with an error or EOF when QEMU (and its user-mode network) dies.
            while let Ok(Some(line)) = lines.next_line().await {
                if ack_tx.send(line).is_err() {
                    return;
                }
            }
        });

        let spec = VmSpec::new("crash1")
            .disk("DURABLE", 64 * MIB)
            .disk("VOLATILE", 16 * MIB)
            .file("/etc/testbed-note", "from spec");
        let mut tb = Testbed::start(&assets, vec![spec]).await?;
        let vm = tb.vm_mut("crash1");

        // A write that stays in the guest's page cache. The kernel would write it out at once
        // (a device that has written nothing yet gets no share of the background dirty
        // threshold) or within seconds (periodic writeback); a guaranteed share and no periodic
        // writeback keep it in memory. The device stays open: its last close writes it out.
        vm.exec_ok(
            "d=$(basename $(readlink -f /dev/disk/by-id/virtio-VOLATILE))
             echo 50 > /sys/block/$d/bdi/min_ratio
             echo 0 > /proc/sys/vm/dirty_writeback_centisecs
             echo 360000 > /proc/sys/vm/dirty_expire_centisecs",
        )
        .await?;
        vm.spawn(
            "exec 3<>/dev/disk/by-id/virtio-VOLATILE; printf unflushed-marker >&3; echo written; exec sleep 100000",
            "/var/log/volatile.log",
        )
        .await?;
        vm.exec_ok("for i in $(seq 100); do grep -q written /var/log/volatile.log && exit 0; sleep 0.1; done; exit 1")
            .await?;
        let cached = vm
            .exec_ok("dd if=/dev/disk/by-id/virtio-VOLATILE bs=16 count=1 2>/dev/null")
            .await?;
        assert_eq!(cached, "unflushed-marker", "the guest sees its own write");
        let writes = vm
            .exec_ok("awk '{print $5}' /sys/block/$(basename $(readlink -f /dev/disk/by-id/virtio-VOLATILE))/stat")
            .await?;
        assert_eq!(writes.trim(), "0", "the marker is still only in the page cache");

        // The guest must see a volatile write cache, or its fsync would send no flush at all.
        let cache = vm
            .exec_ok("cat /sys/block/$(basename $(readlink -f /dev/disk/by-id/virtio-DURABLE))/queue/write_cache")
            .await?;
        assert_eq!(cache.trim(), "write back");

        // The writer: record i (its number, padded with zeros to a block) at block i, written
        // O_DIRECT and fsynced; only then its number goes to the host.
        let writer = format!(
            "dev=/dev/disk/by-id/virtio-DURABLE; i=0
             while :; do
               printf 'record-%06d\\n' $i > /tmp/rec
               dd if=/tmp/rec of=$dev bs={BLOCK} seek=$i count=1 conv=sync,notrunc,fsync oflag=direct 2>>/var/log/writer.err || exit 1
               echo $i
               i=$((i+1))
             done | nc {HOST_ADDR_FROM_GUEST} {acks_port}"
        );
        vm.spawn(&writer, "/var/log/writer.log").await?;
        let mut acked: Vec<usize> = Vec::new();
        while acked.len() < MIN_ACKS {
            let line = tokio::time::timeout(Duration::from_secs(60), ack_rx.recv()).await;
            match line {
                Ok(Some(l)) => acked.push(l.trim().parse().expect("a record number")),
                Ok(None) => {
                    let err = vm.exec("cat /var/log/writer.err /var/log/writer.log").await?;
                    panic!("the writer stopped after {} records: {}", acked.len(), err.stdout);
                }
                Err(_) => panic!("no record acknowledged within 60 s ({} so far)", acked.len()),
            }
        }
        // The writer keeps going: the kill lands while records are in flight.
        vm.crash().await?;
        // Acknowledgements still on their way were sent after their fsync: they count too.
        // The channel closes once the connection died with QEMU.
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = ack_rx.recv().await {
                acked.push(l.trim().parse().expect("a record number"));
            }
        })
        .await;
        assert!(drained.is_ok(), "the ack connection outlived QEMU");
        acks.abort();
        let expected: Vec<usize> = (0..acked.len()).collect();
        assert_eq!(acked, expected, "records are acknowledged in order");

        vm.power_on().await?;
        assert_eq!(vm.read_file("/etc/testbed-note").await?, b"from spec");
        assert_eq!(
            vm.console_log().matches("testbed-init: booting crash1").count(),
            2
        );
        // The first blocks, up to and including one past the last acknowledged record.
        let blocks = acked.len() + 1;
        vm.exec_ok(&format!(
            "dd if=/dev/disk/by-id/virtio-DURABLE of=/tmp/head bs={BLOCK} count={blocks} 2>/dev/null"
        ))
        .await?;
        let head = vm.read_file("/tmp/head").await?;
        assert_eq!(head.len(), blocks * BLOCK);
        for (i, block) in head.chunks(BLOCK).take(acked.len()).enumerate() {
            let want = format!("record-{i:06}\n");
            assert_eq!(
                &block[..want.len()],
                want.as_bytes(),
                "record {i} was acknowledged before the crash, {} records in all",
                acked.len()
            );
            assert!(block[want.len()..].iter().all(|&b| b == 0), "block {i} padding");
        }
        let lost = vm
            .exec_ok("dd if=/dev/disk/by-id/virtio-VOLATILE bs=16 count=1 2>/dev/null | od -An -c")
            .await?;
        assert!(
            !lost.contains('u') && lost.contains("\\0"),
            "the unflushed write survived the crash: {lost}"
        );
        let next = head.chunks(BLOCK).nth(acked.len()).unwrap_or_default();
        eprintln!(
            "crash test: {} records acknowledged before the crash, all there after power-on; \
             the next one {}",
            acked.len(),
            if next.starts_with(b"record-") { "made it too" } else { "did not" }
        );
        tb.shutdown().await
    })
    .await;
}
