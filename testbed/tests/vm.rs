//! Real VM tests: each boots QEMU guests under TCG. They need qemu-system-x86_64 and the storage
//! packages on the host (see the crate docs); a missing prerequisite fails the test with the
//! package to install instead of skipping it.

mod common;

use std::time::Duration;

use common::{assets, bounded, MIB, TEST_TIMEOUT};
use hwameistor_testbed::{DiskSpec, Error, ProcessState, Testbed, VmSpec, HOST_ADDR_FROM_GUEST};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_lvm_filesystems_drbd() {
    let assets = assets().await;
    bounded(async {
        let disks = [
            ("DISK-A", 64 * MIB),
            ("DISK-B", 512 * MIB),
            ("DISK-C", 96 * MIB),
        ];
        let mut spec = VmSpec::new("node1");
        for (s, size) in disks {
            spec = spec.disk(s, size);
        }
        let tb = Testbed::start(&assets, vec![spec]).await?;
        let vm = tb.vm("node1");

        let ids = vm.exec_ok("ls /dev/disk/by-id/").await?;
        for (serial, size) in disks {
            assert!(ids.contains(&format!("virtio-{serial}")), "by-id: {ids}");
            let got = vm
                .exec_ok(&format!(
                    "blockdev --getsize64 /dev/disk/by-id/virtio-{serial}"
                ))
                .await?;
            assert_eq!(got.trim(), size.to_string(), "size of {serial}");
        }
        // sysfs serials, in attachment order vda, vdb, vdc.
        let sys = vm
            .exec_ok("for d in vda vdb vdc; do cat /sys/block/$d/serial; echo; done")
            .await?;
        let serials: Vec<&str> = sys.lines().collect();
        assert_eq!(serials, ["DISK-A", "DISK-B", "DISK-C"]);
        let udev = vm
            .exec_ok("udevadm info --query=property --name=/dev/vdb")
            .await?;
        assert!(udev.contains("ID_SERIAL=DISK-B"), "{udev}");

        let version = vm.exec_ok("lvm version").await?;
        assert!(version.contains("LVM version"), "{version}");
        vm.exec_ok(
            "set -e
             pvcreate -y /dev/disk/by-id/virtio-DISK-B
             vgcreate tbvg /dev/disk/by-id/virtio-DISK-B
             lvcreate -y -L 8M -n small tbvg
             lvextend -L 16M tbvg/small
             lvcreate -y -L 320M -n big tbvg
             lvcreate -y -L 32M -T tbvg/pool
             lvcreate -y -V 64M -T tbvg/pool -n thin1",
        )
        .await?;
        let lvs = vm
            .exec_ok("lvs --noheadings -o lv_name,lv_size --units m tbvg")
            .await?;
        for lv in ["small", "big", "pool", "thin1"] {
            assert!(lvs.contains(lv), "lvs: {lvs}");
        }
        assert!(lvs.contains("16.00m"), "lvextend: {lvs}");
        vm.exec_ok(
            "set -e
             mkfs.xfs -q /dev/tbvg/big
             mkdir -p /mnt/xfs && mount /dev/tbvg/big /mnt/xfs
             echo xfs-data > /mnt/xfs/f && sync
             xfs_info /mnt/xfs >/dev/null
             umount /mnt/xfs
             mkfs.ext4 -q -F /dev/disk/by-id/virtio-DISK-C
             mkdir -p /mnt/ext4 && mount /dev/disk/by-id/virtio-DISK-C /mnt/ext4
             echo ext4-data > /mnt/ext4/f && umount /mnt/ext4
             e2fsck -fn /dev/disk/by-id/virtio-DISK-C >/dev/null",
        )
        .await?;
        let blk = vm.exec_ok("blkid -o value -s TYPE /dev/tbvg/big").await?;
        assert_eq!(blk.trim(), "xfs");

        vm.exec_ok("modprobe drbd").await?;
        let proc_drbd = vm.exec_ok("cat /proc/drbd").await?;
        assert!(proc_drbd.contains("version: 8.4"), "{proc_drbd}");
        let v = vm.exec_ok("drbdadm --version").await?;
        assert!(v.contains("DRBDADM_VERSION"), "{v}");
        // The generated config must parse (usage-count no, no prompt).
        vm.exec_ok("drbdadm dump all >/dev/null").await?;

        // Optional benchmark tools: when the host has them, the guest runs them (every library
        // they link was copied).
        for (tool, version) in [("socat", "socat -V")] {
            if std::path::Path::new("/usr/bin").join(tool).exists() {
                vm.exec_ok(version).await?;
            }
        }

        tb.shutdown().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_reorders_disks_and_keeps_data() {
    let assets = assets().await;
    bounded(async {
        let spec = VmSpec::new("rb1")
            .disk("R1", 32 * MIB)
            .disk("R2", 48 * MIB)
            .disk("R3", 64 * MIB)
            .file("/etc/testbed-note", "from spec");
        let mut tb = Testbed::start(&assets, vec![spec]).await?;
        {
            let vm = tb.vm("rb1");
            vm.exec_ok(
                "set -e
                 for s in R1 R2; do printf \"marker-$s\" | dd of=/dev/disk/by-id/virtio-$s conv=notrunc 2>/dev/null; done
                 mkfs.ext4 -q -F /dev/disk/by-id/virtio-R3
                 mkdir -p /mnt/r3 && mount /dev/disk/by-id/virtio-R3 /mnt/r3
                 echo persisted > /mnt/r3/data && umount /mnt/r3",
            )
            .await?;
            assert_eq!(vm.exec_ok("cat /sys/block/vda/serial").await?, "R1");
            vm.exec_ok("echo volatile > /root/ram-only").await?;
        }

        let vm = tb.vm_mut("rb1");
        vm.reboot(Some(vec!["R3".into(), "R2".into(), "R1".into()]))
            .await?;
        assert_eq!(vm.disk_serials(), ["R3", "R2", "R1"]);
        let sys = vm
            .exec_ok("for d in vda vdb vdc; do cat /sys/block/$d/serial; echo; done")
            .await?;
        assert_eq!(sys.lines().collect::<Vec<_>>(), ["R3", "R2", "R1"]);
        for s in ["R1", "R2"] {
            let got = vm
                .exec_ok(&format!(
                    "dd if=/dev/disk/by-id/virtio-{s} bs=9 count=1 2>/dev/null"
                ))
                .await?;
            assert_eq!(got, format!("marker-{s}"));
        }
        let data = vm
            .exec_ok(
                "mkdir -p /mnt/r3 && mount /dev/disk/by-id/virtio-R3 /mnt/r3 && cat /mnt/r3/data && umount /mnt/r3",
            )
            .await?;
        assert_eq!(data.trim(), "persisted");
        // The root filesystem is RAM: gone after reboot, while spec files are written again.
        assert!(!vm.exec("test -e /root/ram-only").await?.success());
        assert_eq!(vm.read_file("/etc/testbed-note").await?, b"from spec");
        assert!(vm.console_log().matches("testbed-init: booting rb1").count() >= 2);

        tb.shutdown().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_network_and_host_loopback() {
    let assets = assets().await;
    bounded(async {
        // A server on host loopback, reached from the guests as 10.0.2.2.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
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

        let tb = Testbed::start(&assets, vec![VmSpec::new("net1"), VmSpec::new("net2")]).await?;
        let (a, b) = (tb.vm("net1"), tb.vm("net2"));
        assert_eq!(a.private_ip(), "192.168.77.10");
        assert_eq!(b.private_ip(), "192.168.77.11");
        let hosts = String::from_utf8_lossy(&a.read_file("/etc/hosts").await?).into_owned();
        assert!(hosts.contains("192.168.77.11 net2"), "{hosts}");
        for (from, to) in [(a, b), (b, a)] {
            from.exec_ok(&format!("ping -c 3 -W 5 {}", to.private_ip()))
                .await?;
            let reply = from
                .exec_ok(&format!(
                    "echo {} | nc -w 10 {HOST_ADDR_FROM_GUEST} {port}",
                    from.name()
                ))
                .await?;
            assert_eq!(reply.trim(), format!("hello {}", from.name()));
            assert_eq!(from.exec_ok("hostname").await?.trim(), from.name());
        }
        server.abort();
        tb.shutdown().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotplug_and_guest_daemon_operations() {
    let assets = assets().await;
    bounded(async {
        let mut tb = Testbed::start(&assets, vec![VmSpec::new("hp1").disk("BASE", 32 * MIB)]).await?;
        let vm = tb.vm_mut("hp1");

        vm.add_disk(DiskSpec::new("HOT1", 80 * MIB)).await?;
        vm.exec_ok_timeout(
            "for i in $(seq 60); do udevadm settle; [ -e /dev/disk/by-id/virtio-HOT1 ] && exit 0; sleep 0.5; done; exit 1",
            Duration::from_secs(90),
        )
        .await?;
        let size = vm
            .exec_ok("blockdev --getsize64 /dev/disk/by-id/virtio-HOT1")
            .await?;
        assert_eq!(size.trim(), (80 * MIB).to_string());
        let udev = vm
            .exec_ok("udevadm info --query=property --name=/dev/disk/by-id/virtio-HOT1")
            .await?;
        assert!(udev.contains("ID_SERIAL=HOT1"), "{udev}");

        vm.hot_remove_disk("HOT1").await?;
        vm.exec_ok_timeout(
            "for i in $(seq 60); do udevadm settle; [ -e /dev/disk/by-id/virtio-HOT1 ] || exit 0; sleep 0.5; done; exit 1",
            Duration::from_secs(90),
        )
        .await?;
        assert_eq!(vm.disk_serials(), ["BASE"]);
        // Disks attached at boot can be unplugged too.
        vm.hot_remove_disk("BASE").await?;
        vm.exec_ok_timeout(
            "for i in $(seq 60); do udevadm settle; [ -e /sys/block/vda ] || exit 0; sleep 0.5; done; exit 1",
            Duration::from_secs(90),
        )
        .await?;
        assert!(vm.disk_serials().is_empty());

        // Guest daemon operations.
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        vm.write_file("/tmp/sub/bin.dat", &data).await?;
        assert_eq!(vm.read_file("/tmp/sub/bin.dat").await?, data);
        assert!(matches!(
            vm.read_file("/nonexistent").await,
            Err(Error::Guest { .. })
        ));
        let out = vm
            .exec_stdin("tr a-z A-Z", Some(b"shout"), Duration::from_secs(10))
            .await?;
        assert_eq!(out.stdout, "SHOUT");
        let out = vm.exec("echo out; echo err >&2; exit 3").await?;
        assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (Some(3), "out\n", "err\n"));
        match vm.exec_ok("echo oops >&2; false").await {
            Err(Error::CommandFailed { stderr, .. }) => assert_eq!(stderr, "oops\n"),
            other => panic!("expected CommandFailed, got {other:?}"),
        }
        let t = std::time::Instant::now();
        match vm.exec_timeout("echo started; sleep 30", Duration::from_secs(2)).await {
            Err(Error::CommandTimeout { stdout, .. }) => assert_eq!(stdout, "started\n"),
            other => panic!("expected CommandTimeout, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(15));

        // Overlapping requests: a long command does not block short ones.
        let vm = tb.vm("hp1");
        let t = std::time::Instant::now();
        let (slow, fast) = tokio::join!(vm.exec("sleep 3; echo slow"), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let r = vm.exec("echo fast").await;
            (r, t.elapsed())
        });
        assert_eq!(slow?.stdout, "slow\n");
        let (fast, fast_at) = fast;
        assert_eq!(fast?.stdout, "fast\n");
        assert!(fast_at < Duration::from_millis(2500), "fast answered after {fast_at:?}");

        let pid = vm
            .spawn("echo bg-start; exec sleep 1000", "/var/log/bg.log")
            .await?;
        assert_eq!(vm.process_state(pid).await?, ProcessState::Running);
        vm.exec_ok("for i in $(seq 50); do grep -q bg-start /var/log/bg.log && exit 0; sleep 0.1; done; exit 1")
            .await?;
        vm.kill(pid, 15).await?;
        let mut state = ProcessState::Running;
        for _ in 0..50 {
            state = vm.process_state(pid).await?;
            if state != ProcessState::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            state,
            ProcessState::Exited {
                code: None,
                signal: Some(15)
            }
        );

        tb.shutdown().await
    })
    .await;
}

/// A panic in the middle of a test must not leave QEMU or the testbed directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_kills_vms_and_removes_dir() {
    let assets = assets().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let tb = Testbed::start(&assets, vec![VmSpec::new("doomed").disk("D1", 16 * MIB)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let vm = tb.vm("doomed");
        let _ = tx.send((vm.qemu_pid(), tb.dir().to_path_buf()));
        panic!("deliberate panic with a VM running");
    });
    let joined = tokio::time::timeout(TEST_TIMEOUT, task)
        .await
        .expect("VM start timed out");
    assert!(joined.is_err_and(|e| e.is_panic()));
    let (pid, dir) = rx.await.expect("the task reported its VM");
    let pid = pid.expect("QEMU was running");
    assert!(!dir.exists(), "{} left behind", dir.display());
    // Killed on drop; a zombie that tokio has not reaped yet counts as gone.
    let mut alive = true;
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            alive = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive, "QEMU pid {pid} still running after the panic");
}
