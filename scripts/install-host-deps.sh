#!/usr/bin/env bash
# Installs the Debian packages the tests and the sandbox need on the host:
# QEMU to boot node VMs, and the tools that are copied into the VMs' initramfs
# (busybox, LVM, DRBD utilities, filesystems, udev). Idempotent; needs root.
set -euo pipefail
pkgs=(qemu-system-x86 busybox-static lvm2 drbd-utils xfsprogs e2fsprogs udev util-linux fdisk cpio kmod)
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
