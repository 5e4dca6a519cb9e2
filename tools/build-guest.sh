#!/usr/bin/env bash
# Build the live-update test guest: OUTDIR/vmlinuz, OUTDIR/initramfs.gz, OUTDIR/guest.json, and
# OUTDIR/vmlinux (the same kernel uncompressed; `-kernel vmlinux` boots ~2x faster under TCG).
#
# Usage: tools/build-guest.sh [--force] OUTDIR     (prints the path of OUTDIR/guest.json)
#
# Boot it (TCG; kernel and initrd from OUTDIR, parameters in tools/guest-init.sh):
#   qemu-system-x86_64 -accel tcg -m 1G -kernel OUTDIR/vmlinux -initrd OUTDIR/initramfs.gz \
#       -append 'console=ttyS0 quiet lu.fill_mb=16' -display none -serial file:serial.log
#
# Everything comes from Debian packages fetched with `apt-get download` and unpacked with
# `dpkg-deb -x` in a temp dir: nothing is installed into the host except the tools this script
# needs (cpio, xz-utils), and only when they are missing. The kernel is the package that
# `linux-image-amd64` depends on; busybox comes from the busybox-static .deb. The guest's /init is
# tools/guest-init.sh (see that file for the LU-* lines it prints on ttyS0).
#
# Idempotent: when OUTDIR/guest.json records the same inputs (sha256 of this script and of
# guest-init.sh) and the outputs are present, it exits 0 at once without touching apt. --force
# rebuilds anyway (e.g. to pick up a newer kernel from the archive).
set -euo pipefail

force=0
if [[ ${1:-} == --force ]]; then force=1; shift; fi
if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: $0 [--force] OUTDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_src=$here/guest-init.sh
mkdir -p "$1"
outdir=$(cd "$1" && pwd)

# Modules the guest needs (virtio disk and net); their dependencies are resolved from the
# modules' own `depends=` field, because the .deb ships no modules.dep (depmod runs at install).
wanted_modules=(virtio_pci virtio_blk virtio_net)

inputs_sha=$(cat "${BASH_SOURCE[0]}" "$init_src" | sha256sum | cut -d' ' -f1)

up_to_date() {
    [[ $force -eq 0 && -s $outdir/vmlinuz && -s $outdir/vmlinux && -s $outdir/initramfs.gz && -s $outdir/guest.json ]] &&
        grep -q "\"inputs_sha256\": \"$inputs_sha\"" "$outdir/guest.json"
}
# Concurrent test runs: one builds, the others wait for it and then find the outputs current.
exec 9>"$outdir/.lock"
flock 9
rm -rf "$outdir"/.build-guest.* # left by a killed run (we hold the lock: no other build is on)
if up_to_date; then
    echo "$outdir/guest.json"
    exit 0
fi

# Tools needed on the host; installed only when missing (apt-get download and dpkg-deb are part
# of apt/dpkg, which every Debian host has).
need_pkgs=()
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
fi

# Temp dir next to OUTDIR so the final renames stay on one filesystem (atomic).
work=$(mktemp -d "$outdir/.build-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Resolve the kernel package behind the linux-image-amd64 metapackage (e.g.
# linux-image-6.1.0-56-amd64, which is the signed image on bookworm). Refresh the lists once if
# apt knows nothing yet (a fresh machine).
resolve_kernel_pkg() {
    { apt-cache depends linux-image-amd64 2>/dev/null || true; } |
        awk '$1 ~ /^\|?Depends:$/ && $2 ~ /^linux-image-/ && !p { print $2; p = 1 }'
}
kpkg=$(resolve_kernel_pkg)
if [[ -z $kpkg ]]; then
    apt-get update >&2
    kpkg=$(resolve_kernel_pkg)
fi
if [[ -z $kpkg ]]; then
    echo "$0: cannot resolve the kernel package behind linux-image-amd64" >&2
    exit 1
fi

# Sandbox user root: the temp dir is root-only, and _apt could not write there.
(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" busybox-static >&2)
kdeb=$(ls "$work"/"${kpkg}"_*.deb)
bdeb=$(ls "$work"/busybox-static_*.deb)
kver=$(dpkg-deb -f "$kdeb" Version)
bver=$(dpkg-deb -f "$bdeb" Version)

dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"

kimg=$(ls "$work"/kernel/boot/vmlinuz-*)
krel=${kimg##*/vmlinuz-}
# Debian moved modules from /lib to /usr/lib (merged /usr); accept either.
moddir=
for d in "$work/kernel/lib/modules/$krel" "$work/kernel/usr/lib/modules/$krel"; do
    [[ -d $d ]] && moddir=$d
done
[[ -n $moddir ]] || { echo "$0: no modules for $krel in $kpkg" >&2; exit 1; }

# Module file of NAME (module names use _, file names may use -), or empty if built in.
mod_file() {
    local name=$1 alt=${1//_/-}
    find "$moddir/kernel" \( -name "$name.ko" -o -name "$name.ko.*" -o -name "$alt.ko" \
        -o -name "$alt.ko.*" \) -print -quit
}
# Uncompressed bytes of a module: busybox insmod in the guest cannot read .ko.xz/.ko.zst.
mod_cat() {
    case $1 in
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -dcq "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) cat "$1" ;;
    esac
}

declare -A seen=()
order=()
# Depth-first: every dependency is listed before the module that needs it (so virtio_ring comes
# before virtio, failover before net_failover before virtio_net).
add_module() {
    local name=$1 file deps dep
    [[ -n ${seen[$name]:-} ]] && return 0
    seen[$name]=1
    file=$(mod_file "$name")
    if [[ -z $file ]]; then
        if grep -q "/${name}.ko\$\|/${name//_/-}.ko\$" "$moddir/modules.builtin"; then
            return 0 # built into this kernel
        fi
        echo "$0: module $name not found in $kpkg" >&2
        exit 1
    fi
    deps=$(mod_cat "$file" | tr '\0' '\n' | sed -n 's/^depends=//p')
    deps=${deps%%$'\n'*}
    for dep in ${deps//,/ }; do
        add_module "$dep"
    done
    mod_cat "$file" >"$work/root/lib/modules/$name.ko"
    order+=("$name")
}

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,mem,etc,lib/modules}
for m in "${wanted_modules[@]}"; do
    add_module "$m"
done
printf '%s\n' "${order[@]}" >"$root/lib/modules/load-order"

# busybox plus one symlink per applet, so the guest needs no `busybox --install` at boot.
install -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
while read -r applet; do
    applet=${applet#/}
    [[ $applet == bin/busybox ]] && continue
    [[ -e $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)

install -m 0755 "$init_src" "$root/init"
printf 'kernel_package=%s\nkernel_version=%s\nkernel_release=%s\n' "$kpkg" "$kver" "$krel" \
    >"$root/etc/lu-guest"
# The kernel opens /dev/console before /init runs (devtmpfs is not auto-mounted in this kernel);
# without the node early output is lost. /init re-opens the console after mounting devtmpfs anyway.
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true
mknod -m 0666 "$root/dev/null" c 1 3 2>/dev/null || true

# Fixed mtimes and owners: the same inputs give the same initramfs bytes.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$work/initramfs.gz"
cp "$kimg" "$work/vmlinuz"

# Also the uncompressed ELF vmlinux: QEMU boots it through its PVH entry point, which skips the
# in-guest xz decompression that takes seconds under TCG (first heartbeat measured 5.5 s instead
# of 8-13 s wall). The tests and the demo boot it, so a kernel it cannot be taken from is an error.
xz_off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$kimg" | { read -r l || true; echo "${l%%:*}"; cat >/dev/null; })
if ! { [[ -n $xz_off ]] &&
    { tail -c +$((xz_off + 1)) "$kimg" || true; } | xz -dcq --single-stream >"$work/vmlinux" 2>/dev/null &&
    [[ $(head -c 4 "$work/vmlinux") == $'\x7fELF' ]]; }; then
    echo "$0: cannot extract an uncompressed vmlinux from $kimg (not an xz-compressed kernel image)" >&2
    exit 1
fi

sha() { sha256sum "$1" | cut -d' ' -f1; }
mods_json=$(printf '"%s", ' "${order[@]}")
cat >"$work/guest.json" <<EOF
{
  "kernel_package": "$kpkg",
  "kernel_version": "$kver",
  "kernel_release": "$krel",
  "busybox_version": "$bver",
  "modules": [${mods_json%, }],
  "vmlinuz": "$outdir/vmlinuz",
  "initramfs": "$outdir/initramfs.gz",
  "vmlinux": "$outdir/vmlinux",
  "vmlinuz_sha256": "$(sha "$work/vmlinuz")",
  "initramfs_sha256": "$(sha "$work/initramfs.gz")",
  "append": "console=ttyS0 quiet lu.fill_mb=16",
  "inputs_sha256": "$inputs_sha"
}
EOF

# Publish: drop the old marker first, then rename the images, the marker last. An interrupted run
# leaves either the old complete set or no guest.json (which makes the next run rebuild).
rm -f "$outdir/guest.json"
mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initramfs.gz" "$outdir/initramfs.gz"
mv -f "$work/vmlinux" "$outdir/vmlinux"
mv -f "$work/guest.json" "$outdir/guest.json"
echo "$outdir/guest.json"
