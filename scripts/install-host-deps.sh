#!/usr/bin/env bash
# Installs the Debian packages the tests and the sandbox need on the host:
# QEMU to boot node VMs, and the tools that are copied into the VMs' initramfs
# (busybox, LVM, DRBD utilities, filesystems, udev; socat for benchmarks
# of the private link and of sync writes), and kubectl for the kubectl
# compatibility tests. Idempotent; needs root.
set -euo pipefail
pkgs=(qemu-system-x86 busybox-static lvm2 drbd-utils xfsprogs e2fsprogs udev util-linux fdisk cpio kmod socat)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The testbed downloads Debian's kernel package with apt-get download: it needs package lists.
if ! ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; then
  apt-get update -qq
fi
# kubectl: the kubectl compatibility tests run it from PATH. It is not in Debian's own
# archive; machines of this kind have it from a Kubernetes/Cloud SDK package repository,
# which may be disabled by now. Try the configured repositories once, else stop here.
if ! command -v kubectl >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: kubectl (not on PATH); run this script as root to install it, or put kubectl on PATH" >&2
    exit 1
  fi
  echo "installing: kubectl"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq kubectl >/dev/null 2>&1; then
    apt-get update -qq || true
    apt-get install -y -qq kubectl >/dev/null 2>&1 || true
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "missing: kubectl (not on PATH, and 'apt-get install -y kubectl' did not put it there: no configured repository provides it);" >&2
    echo "  enable a package repository that provides it (e.g. https://pkgs.k8s.io/core:/stable:/v1.36/deb/) or put kubectl on PATH" >&2
    exit 1
  fi
fi
