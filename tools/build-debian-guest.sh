#!/usr/bin/env bash
# Build a real Debian 12 (bookworm) guest with systemd and nginx for live-update tests:
# OUTDIR/{vmlinuz,vmlinux,initrd.img,rootfs.qcow2,guest.json}.
#
# Usage: tools/build-debian-guest.sh [--force] [OUTDIR]     (prints the path of OUTDIR/guest.json)
#
# Default OUTDIR: ${LU_IMAGE_CACHE:-/var/cache/liveupdate-qemu}/debian12-nginx-<sha16>, where sha16
# is the start of the sha256 of this script and the package list (the whole guest is defined in
# this file, so any change to it gives a new directory and a rebuild). When OUTDIR/guest.json
# records the same inputs, the script exits 0 at once without touching apt or the network.
# --force rebuilds anyway (e.g. to pick up a newer kernel from the archive).
#
# Boot it (TCG; never write the cached image: boot a fresh qcow2 overlay on top of it):
#   qemu-img create -f qcow2 -F qcow2 -b OUTDIR/rootfs.qcow2 overlay.qcow2
#   qemu-system-x86_64 -accel tcg -m 1G \
#       -object memory-backend-file,id=mem0,size=1G,mem-path=/dev/shm/NAME,share=on \
#       -machine q35,memory-backend=mem0 \
#       -kernel OUTDIR/vmlinux -initrd OUTDIR/initrd.img -append "<"append" of guest.json>" \
#       -drive file=overlay.qcow2,if=virtio \
#       -netdev user,id=n0,hostfwd=tcp:127.0.0.1:PORT-:80 -device virtio-net-pci,netdev=n0 \
#       -display none -serial file:serial.log
# Static address instead of DHCP: add `ip=10.0.3.2::10.0.3.1:255.255.255.0::eth0:off` to the
# append string (systemd-network-generator turns it into a .network file).
#
# What the guest prints on ttyS0 (besides kernel warnings):
#   LU-NET <ifname> <addr/prefix>    each IPv4 address, just before LU-READY
#   LU-READY <boot_id>               once nginx answers GET /boot_id with this boot's id
#   LU-HEARTBEAT <n> <boot_id>       every second, n = 1, 2, 3, ...
#   LU-DEBUG ...                     with lu.debug=1 on the command line: systemd-analyze and
#                                    failed units, once boot has finished
# HTTP on port 80 (nginx, keep-alive 300 s / 1000000 requests, no access log):
#   /  a small page    /boot_id  the guest's boot id    /ok  "ok" without touching the disk
#
# How it is built: debootstrap (variant minbase) from the mirror the host's own apt sources use,
# configured offline (systemctl --root, no daemons run), kernel modules pruned to what a virtio
# VM can use, then `mkfs.ext4 -d` on a plain file (no loop mount) and `qemu-img convert`. The
# initramfs is our own: static busybox plus the virtio and ext4 modules, ~2 MB, no udev, so it
# hands over to systemd in well under a second under TCG. Everything happens in a temp dir
# beside OUTDIR that is renamed into place at the end, after the image booted once here (that
# boot is the self-test, and its time is recorded in guest.json).
set -euo pipefail

force=0
if [[ ${1:-} == --force ]]; then force=1; shift; fi
if [[ $# -gt 1 || ${1:-} == -* ]]; then
    echo "usage: $0 [--force] [OUTDIR]" >&2
    exit 2
fi

script=$(realpath "${BASH_SOURCE[0]}")
# linux-image-amd64 pulls initramfs-tools (its dependency) but INITRD=No keeps it from building
# an initramfs we would not use; busybox-static is for our own initramfs.
packages=(systemd systemd-sysv udev kmod iproute2 nginx-light busybox-static linux-image-amd64)
inputs_sha=$({ cat "$script"; printf '%s\n' "${packages[@]}"; } | sha256sum | cut -d' ' -f1)

if [[ $# -eq 1 ]]; then
    outdir=$(realpath -m "$1")
else
    outdir=${LU_IMAGE_CACHE:-/var/cache/liveupdate-qemu}/debian12-nginx-${inputs_sha:0:16}
    outdir=$(realpath -m "$outdir")
fi
parent=$(dirname "$outdir")
base=$(basename "$outdir")

current() {
    [[ $force -eq 0 && -s $outdir/guest.json && -s $outdir/rootfs.qcow2 && -s $outdir/vmlinuz &&
        -s $outdir/vmlinux && -s $outdir/initrd.img ]] &&
        grep -q "\"inputs_sha256\": \"$inputs_sha\"" "$outdir/guest.json"
}
# Fast path without the lock: OUTDIR only ever appears complete (it is renamed into place).
if current; then
    echo "$outdir/guest.json"
    exit 0
fi
if [[ -e $outdir && ! -e $outdir/guest.json && -n $(ls -A "$outdir" 2>/dev/null) ]]; then
    # We replace OUTDIR as a whole; never do that to a directory that is not ours.
    echo "$0: $outdir exists, is not empty and has no guest.json: refusing to replace it" >&2
    exit 1
fi

mkdir -p "$parent"
# Parallel callers: one builds, the others wait here and then find OUTDIR current.
exec 9>"$outdir.lock"
flock 9
if current; then
    echo "$outdir/guest.json"
    exit 0
fi

# Undo what a killed build left (we hold the lock, so no other build of OUTDIR is running):
# mounts debootstrap made inside the chroot first, so that rm never descends into /proc or /sys.
umount_under() {
    local m
    findmnt -rn -o TARGET | awk -v p="$1/" 'index($0, p) == 1' | sort -r |
        while read -r m; do umount -l "$m" || true; done
}
for stale in "$parent/.$base".build.* "$parent/.$base".old.*; do
    [[ -e $stale ]] || continue
    # The self-test QEMU of a build killed with SIGKILL (only if that pid still runs on that dir).
    if [[ -s $stale/qemu.pid ]]; then
        pid=$(<"$stale/qemu.pid")
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$stale/"; then
            kill "$pid" 2>/dev/null || true
        fi
    fi
    umount_under "$stale"
    rm -rf --one-file-system "$stale"
done
# Guest RAM files of self-test boots whose build (the pid in the name) is gone.
for f in /dev/shm/lu-debian-build-*; do
    [[ -e $f ]] || continue
    pid=${f#/dev/shm/lu-debian-build-}
    pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || rm -f "$f"
done

t_start=$EPOCHREALTIME

# Host tools, installed only when missing.
need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v qemu-img >/dev/null || need_pkgs+=(qemu-utils)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v python3 >/dev/null || need_pkgs+=(python3)
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 || {
        apt-get update >&2
        apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2
    }
fi

# The Debian mirror: LU_DEBIAN_MIRROR, else the URI of the host's own apt source for the plain
# `bookworm` suite (deb822 .sources first, then one-line .list files), else of any Debian source
# that is not the security archive. Read at run time so no mirror is ever named in this repo.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # Paragraph mode: one stanza per record; the first URI of a deb stanza with bookworm.
        awk 'BEGIN { RS = ""; FS = "\n" }
            {
                types = uris = suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/) types = " " substr($i, 7) " "
                    else if ($i ~ /^URIs:/) uris = substr($i, 6)
                    else if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
                    else if ($i ~ /^Enabled:/) enabled = $i
                }
                if (types ~ /[ \t]deb[ \t]/ && suites ~ /[ \t]bookworm[ \t]/ && enabled !~ /no/) {
                    n = split(uris, u, /[ \t]+/)
                    for (j = 1; j <= n; j++) if (u[j] != "") { print u[j]; exit }
                }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        sed -En 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+bookworm[[:space:]].*/\2/p' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        grep -v '^[[:space:]]*#' "$f" | grep -Eo '[a-z]+://[^[:space:]]+/debian/?' | grep -v security || true
    done
}
mirror=${LU_DEBIAN_MIRROR:-$(host_mirror | head -n1)}
if [[ -z $mirror ]]; then
    echo "$0: no Debian mirror in the host's apt sources; set LU_DEBIAN_MIRROR" >&2
    exit 1
fi

# Temp dir beside OUTDIR (same filesystem: the final rename is atomic). The QEMU and the /dev/shm
# file of the self-test boot are ours to clean up too.
work=$(mktemp -d "$parent/.$base.build.XXXXXX")
qpid=
shm=/dev/shm/lu-debian-build-$$-${work##*.}
cleanup() {
    if [[ -n $qpid ]]; then kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
    rm -f "$shm"
    umount_under "$work"
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # through the EXIT trap: no QEMU, /dev/shm file or temp dir left
root=$work/root
out=$work/out
mkdir -p "$out"

echo "debootstrap bookworm (${packages[*]})" >&2
keyring=()
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
# INITRD=No is read by the kernel's initramfs-tools hook: skip building an unused initramfs.
INITRD=No DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase "${keyring[@]}" \
    --include="$(IFS=,; echo "${packages[*]}")" bookworm "$root" "$mirror" >&2
umount_under "$root" # debootstrap unmounts on success; be sure before mkfs -d copies the tree

krel=$(find "$root/usr/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)
kpkg=linux-image-$krel
pkg_version() { chroot "$root" dpkg-query -W -f "\${Version}" "$1"; }
kver=$(pkg_version "$kpkg")
nginx_ver=$(pkg_version nginx-light)
systemd_ver=$(pkg_version systemd)
debian_ver=$(cat "$root/etc/debian_version")

# ---- Guest configuration (offline: files and systemctl --root) ----

echo lu-debian >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tlu-debian\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$root/etc/hosts"
# No fstab entry: the initramfs mounts root rw already, and an entry for it would make systemd
# wait for udev to announce dev-vda.device and run systemd-remount-fs (seconds under TCG).
echo '# / is mounted rw by the initramfs (root= rw on the kernel command line)' >"$root/etc/fstab"
# Empty machine-id: a new one each boot, and not "first boot" (which would run systemd-firstboot
# and preset-all). debootstrap left the build's id in it, shared by every copy otherwise.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
: >"$root/etc/resolv.conf" # the host's resolvers mean nothing in the guest

# Networking: ip= on the kernel command line becomes /run/systemd/network/70-*.network through
# systemd-network-generator, which sorts before (so wins over) this DHCP fallback.
cat >"$root/etc/systemd/network/99-lu-dhcp.network" <<'EOF'
# Any ethernet NIC not configured by ip= on the kernel command line: DHCP (QEMU user-mode
# networking hands out 10.0.2.15). No IPv6: nothing here uses it, and it only slows boot.
[Match]
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
# udev coldplug: only network and block devices, and PCI network controllers (their "add" event
# loads the driver of a NIC that is not virtio, e.g. -nic user's default e1000e). The initramfs
# loaded the virtio drivers already, so replaying every device's event (10 s under TCG) would only
# run rules nobody needs; networkd does need its links initialized by udev.
mkdir -p "$root/etc/systemd/system/systemd-udev-trigger.service.d"
cat >"$root/etc/systemd/system/systemd-udev-trigger.service.d/lu.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=pci --attr-match=class=0x020000
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=net --subsystem-match=block
EOF
# network-online.target: one configured link is enough, and never hang the boot for 2 minutes.
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/lu.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
EOF

# nginx: one small site, keep-alive long enough for load tests that span a live update.
mkdir -p "$root/var/www/lu"
cat >"$root/var/www/lu/index.html" <<'EOF'
<!doctype html>
<html><head><title>lu-debian</title></head>
<body><p>lu-debian: liveupdate.qemu test guest (nginx on Debian 12).</p></body></html>
EOF
rm -f "$root/etc/nginx/sites-enabled/default"
cat >"$root/etc/nginx/sites-available/lu" <<'EOF'
# liveupdate.qemu test site. access_log off: a load test would grow the log without bound.
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name _;
    root /var/www/lu;
    index index.html;
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;

    # Written at boot by lu-boot-id.service: the same value means the same (not rebooted) guest.
    location = /boot_id {
        default_type text/plain;
        add_header Cache-Control no-store;
        alias /run/lu/boot_id;
    }
    location = /ok {
        default_type text/plain;
        return 200 "ok\n";
    }
    location / {
        try_files $uri $uri/ =404;
    }
}
EOF
ln -s ../sites-available/lu "$root/etc/nginx/sites-enabled/lu"
# The stock unit runs `nginx -t` before starting: a second nginx start, ~1 s under TCG.
mkdir -p "$root/etc/systemd/system/nginx.service.d"
cat >"$root/etc/systemd/system/nginx.service.d/lu.conf" <<'EOF'
[Unit]
After=lu-boot-id.service
Wants=lu-boot-id.service

[Service]
ExecStartPre=
EOF

# The LU-* units.
cat >"$root/etc/systemd/system/lu-boot-id.service" <<'EOF'
[Unit]
Description=liveupdate.qemu: publish the boot id for nginx (/boot_id)
DefaultDependencies=no
After=local-fs.target
Before=nginx.service

[Service]
Type=oneshot
RemainAfterExit=yes
RuntimeDirectory=lu
RuntimeDirectoryPreserve=yes
ExecStart=/bin/cp /proc/sys/kernel/random/boot_id /run/lu/boot_id

[Install]
WantedBy=multi-user.target
EOF
cat >"$root/etc/systemd/system/lu-ready.service" <<'EOF'
[Unit]
Description=liveupdate.qemu: LU-READY on ttyS0 once nginx answers
After=nginx.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=300
ExecStart=/usr/local/sbin/lu-ready

[Install]
WantedBy=multi-user.target
EOF
cat >"$root/etc/systemd/system/lu-heartbeat.service" <<'EOF'
[Unit]
Description=liveupdate.qemu: LU-HEARTBEAT on ttyS0 every second
After=lu-ready.service

[Service]
ExecStart=/usr/local/sbin/lu-heartbeat
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/usr/local/sbin"
cat >"$root/usr/local/sbin/lu-ready" <<'EOF'
#!/bin/bash
# Print LU-READY <boot_id> on ttyS0 once nginx serves this boot's id on port 80 (so the line
# means: HTTP works, and it is this boot answering). bash's /dev/tcp: no HTTP client installed.
set -u
read -r id </proc/sys/kernel/random/boot_id
for _ in $(seq 1 1200); do
    if exec 3<>/dev/tcp/127.0.0.1/80; then
        printf 'GET /boot_id HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
        reply=$(cat <&3)
        exec 3<&-
        if [[ $reply == "HTTP/1.1 200"* && $reply == *"$id"* ]]; then
            ip -4 -o addr show scope global | awk '{ print "LU-NET", $2, $4 }' >/dev/ttyS0
            echo "LU-READY $id" >/dev/ttyS0
            exit 0
        fi
    fi 2>/dev/null
    sleep 0.1
done
echo "LU-NOT-READY $id" >/dev/ttyS0
exit 1
EOF
cat >"$root/usr/local/sbin/lu-heartbeat" <<'EOF'
#!/bin/bash
# Print LU-HEARTBEAT <n> <boot_id> on ttyS0 every second: the tests read the serial log to see
# that the guest kept running, and stayed the same boot, across a live update.
set -u
read -r id </proc/sys/kernel/random/boot_id
exec 3>/dev/ttyS0
# A fifo nobody writes to: `read -t 1` on it sleeps 1 s without forking sleep(1) every time.
fifo=/run/lu/heartbeat.fifo
mkdir -p /run/lu
rm -f "$fifo"
mkfifo "$fifo"
exec 4<>"$fifo"
debug=0
[[ " $(cat /proc/cmdline) " == *" lu.debug=1 "* ]] && debug=1
n=0
while :; do
    n=$((n + 1))
    echo "LU-HEARTBEAT $n $id" >&3
    if [[ $debug -eq 1 ]] && [[ $(systemctl is-system-running 2>/dev/null) != starting ]]; then
        debug=0
        { systemd-analyze; systemd-analyze critical-chain lu-ready.service
            systemd-analyze blame | head -n 25; systemctl --failed --no-legend; } 2>&1 |
            sed 's/^/LU-DEBUG /' >&3
    fi
    read -r -t 1 -u 4 _ || true
done
EOF
chmod 0755 "$root/usr/local/sbin/lu-ready" "$root/usr/local/sbin/lu-heartbeat"

systemctl --root="$root" enable systemd-networkd.service systemd-network-generator.service \
    systemd-networkd-wait-online.service lu-boot-id.service lu-ready.service \
    lu-heartbeat.service nginx.service >&2
# Not needed in a test VM, and each costs boot time under TCG (every unit started is a second or
# more there) or prints on the console: timers (apt, dpkg backup, e2scrub, fstrim,
# tmpfiles-clean), gettys (the getty generator would start one on ttyS0 because of
# console=ttyS0), logind (no dbus here), first-boot and "needs update" jobs (mkfs -d keeps /usr
# newer than /etc/.updated, which would rebuild hwdb at every boot), the API file systems nothing
# here uses, module preloads for them, utmp, the journal flush (the journal stays in /run), the
# random seed (nothing here needs crediting it), sysusers (debootstrap created the users).
masked=(apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
    e2scrub_reap.service fstrim.timer man-db.timer systemd-tmpfiles-clean.timer
    systemd-timesyncd.service getty.target getty@.service serial-getty@.service
    console-getty.service systemd-logind.service systemd-firstboot.service
    systemd-hwdb-update.service systemd-journal-catalog-update.service ldconfig.service
    systemd-update-done.service systemd-pstore.service remote-fs.target
    proc-sys-fs-binfmt_misc.automount systemd-binfmt.service
    dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount sys-kernel-tracing.mount
    sys-kernel-config.mount sys-fs-fuse-connections.mount kmod-static-nodes.service
    modprobe@configfs.service modprobe@dm_mod.service modprobe@fuse.service
    modprobe@loop.service modprobe@drm.service modprobe@efi_pstore.service
    systemd-modules-load.service systemd-remount-fs.service systemd-update-utmp.service
    systemd-update-utmp-runlevel.service systemd-journal-flush.service
    systemd-random-seed.service systemd-sysusers.service systemd-tmpfiles-setup-dev.service
    systemd-repart.service systemd-boot-system-token.service systemd-fsck-root.service
    systemd-sysctl.service systemd-user-sessions.service)
for u in "${masked[@]}"; do
    ln -sfn /dev/null "$root/etc/systemd/system/$u"
done
rm -f "$root"/etc/systemd/system/*.wants/{e2scrub_reap.service,remote-fs.target,getty@tty1.service}
# Generators run before any unit starts, each one an exec that costs ~0.5 s under TCG; these
# have nothing to find here (no LUKS, GPT auto-mount, resume, rc.local, SysV-only services).
# Kept: fstab, debug (systemd.mask= and friends on the command line), run.
mkdir -p "$root/etc/systemd/system-generators"
for g in getty cryptsetup gpt-auto hibernate-resume integritysetup rc-local system-update sysv \
    veritysetup; do
    ln -sfn /dev/null "$root/etc/systemd/system-generators/systemd-$g-generator"
done

# Small: no docs, man pages or translations (now and for later installs), no package cache or
# lists; no apt sources, logs or lists that would carry the build host's mirror.
cat >"$root/etc/dpkg/dpkg.cfg.d/lu-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
rm -rf "$root"/usr/share/{man,info,locale}/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/etc/apt/sources.list \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
mkdir -p "$root/var/lib/apt/lists/partial"

# Kernel modules: keep what a virtio VM can use (400 MB -> ~90 MB): drop sound, wireless, GPUs,
# media, InfiniBand, physical NICs (but QEMU's e1000/e1000e, the default -nic models) and storage
# HBAs, USB, and file systems other than the usual.
moddir=$root/usr/lib/modules/$krel
kmod=$moddir/kernel
rm -rf "$kmod/sound" "$kmod"/net/{wireless,mac80211,bluetooth,nfc,ieee802154,can,6lowpan,rxrpc} \
    "$kmod"/drivers/{gpu,media,infiniband,staging,iio,comedi,hwmon,usb,hid,isdn,bluetooth,mtd} \
    "$kmod"/drivers/{misc,mmc,memstick,spi,thunderbolt,firewire,pcmcia,parport,w1,leds,power} \
    "$kmod"/drivers/{nfc,atm,fpga,soundwire,ssb,bcma,gnss,target,video,platform,mfd,gpio} \
    "$kmod"/drivers/{pinctrl,regulator,phy,extcon,clk,mailbox,ntb,dca,uio,vfio,rtc,leds} \
    "$kmod"/drivers/net/{wireless,can,usb,wwan,ieee802154,hamradio,arcnet,fddi,plip,slip}
find "$kmod/drivers/net/ethernet" -mindepth 1 -maxdepth 1 ! -name intel -exec rm -rf {} +
find "$kmod/drivers/net/ethernet/intel" -mindepth 1 -maxdepth 1 ! -name e1000 ! -name e1000e \
    -exec rm -rf {} +
find "$kmod/drivers/scsi" -mindepth 1 -type d -prune -exec rm -rf {} +
for d in "$kmod"/fs/*/; do
    case $(basename "$d") in
    ext4 | jbd2 | fat | fuse | 9p | overlayfs | squashfs | isofs | netfs | fscache | nls | autofs) ;;
    *) rm -rf "$d" ;;
    esac
done
chroot "$root" depmod "$krel"

# ---- initramfs: static busybox, the modules for a virtio disk/NIC and ext4, our /init ----

ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
install -m 0755 "$root/bin/busybox" "$ird/bin/busybox"
for applet in $("$ird/bin/busybox" --list); do
    [[ -e $ird/bin/$applet ]] || ln -s busybox "$ird/bin/$applet"
done
# Load order from the guest's own modprobe: dependencies and soft dependencies (ext4 wants
# crypto-crc32c for metadata_csum) come before the module; built-ins print no insmod line.
mods=()
declare -A seen=()
for m in virtio_pci virtio_blk virtio_net ext4; do
    while read -r _ path; do
        [[ -n ${seen[$path]:-} ]] && continue
        seen[$path]=1
        mods+=("$path")
    done < <(chroot "$root" modprobe -S "$krel" --show-depends "$m" | awk '$1 == "insmod" { print $1, $2 }')
done
: >"$ird/lib/modules/load-order"
for path in "${mods[@]}"; do
    name=$(basename "$path")
    name=${name%%.ko*}.ko
    # busybox insmod cannot read compressed modules.
    case $path in
    *.ko.xz) xz -dc "$root$path" ;;
    *.ko.zst) zstd -dcq "$root$path" ;;
    *.ko.gz) gzip -dc "$root$path" ;;
    *) cat "$root$path" ;;
    esac >"$ird/lib/modules/$name"
    echo "$name" >>"$ird/lib/modules/load-order"
done
cat >"$ird/init" <<'EOF'
#!/bin/sh
# /init of the lu-debian initramfs: load the virtio and ext4 modules, mount root=, switch_root to
# systemd. No udev: the one disk appears as /dev/vda in devtmpfs as soon as virtio_blk binds.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# A module that fails (crc32c-intel on a CPU without SSE4.2) is not fatal: ext4 uses the generic one.
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/load-order

root=/dev/vda fstype=ext4 mode=rw flags= init=/sbin/init
for w in $(cat /proc/cmdline); do
    case $w in
    root=*) root=${w#root=} ;;
    rootfstype=*) fstype=${w#rootfstype=} ;;
    rootflags=*) flags=,${w#rootflags=} ;;
    ro) mode=ro ;;
    rw) mode=rw ;;
    init=*) init=${w#init=} ;;
    esac
done
fail() {
    echo "LU-INITRD-FAIL $*"
    echo "LU-INITRD-FAIL dropping to a shell on the console"
    exec sh
}
i=0
while :; do
    case $root in
    LABEL=* | UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
    *) dev=$root ;;
    esac
    [ -n "$dev" ] && [ -b "$dev" ] && break
    i=$((i + 1))
    [ $i -gt 300 ] && fail "root device $root did not appear in 30 s"
    sleep 0.1
done
mount -t "$fstype" -o "$mode$flags" "$dev" /newroot || fail "cannot mount $dev ($fstype) on /"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
EOF
chmod 0755 "$ird/init"
# The kernel opens /dev/console before /init runs; without the node early output is lost.
mknod -m 0600 "$ird/dev/console" c 5 1
find "$ird" -exec touch -h -d @0 {} +
(cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
    gzip -9n >"$out/initrd.img"

cp "$root/boot/vmlinuz-$krel" "$out/vmlinuz"
# Also the uncompressed ELF vmlinux (as tools/build-guest.sh does): QEMU boots it through its PVH
# entry point, skipping the in-guest decompression that takes seconds under TCG.
xz_off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$out/vmlinuz" | { read -r l || true; echo "${l%%:*}"; cat >/dev/null; })
if ! { [[ -n $xz_off ]] &&
    { tail -c +$((xz_off + 1)) "$out/vmlinuz" || true; } | xz -dcq --single-stream >"$out/vmlinux" 2>/dev/null &&
    [[ $(head -c 4 "$out/vmlinux") == $'\x7fELF' ]]; }; then
    echo "$0: cannot extract an uncompressed vmlinux from vmlinuz-$krel" >&2
    exit 1
fi

# ---- root file system: ext4 from the tree (no loop mount), then qcow2 ----

# The guest does not need the kernel image in its /boot (it is booted with -kernel).
rm -f "$root"/boot/vmlinuz-* "$root"/boot/System.map-*
used_mb=$(du -sm --apparent-size "$root" | cut -f1)
size_mb=$(((used_mb * 12 / 10 + 384 + 63) / 64 * 64)) # +20 % metadata, 384 MB free
truncate -s "${size_mb}M" "$work/rootfs.raw"
mkfs.ext4 -q -F -L lu-root -d "$root" "$work/rootfs.raw" >&2
qemu-img convert -f raw -O qcow2 "$work/rootfs.raw" "$out/rootfs.qcow2"
rm -f "$work/rootfs.raw"

# cryptomgr.notests: skip the crypto self-tests, 1-2 s of the kernel's ~5 s under TCG.
append='console=ttyS0 root=/dev/vda rw net.ifnames=0 quiet systemd.show_status=error cryptomgr.notests'

# ---- self-test: boot it once (TCG, RAM in a shared file, fresh overlay), time LU-READY ----

qemu=${QEMU:-qemu-system-x86_64}
boot_s=null
if command -v "$qemu" >/dev/null; then
    qemu-img create -q -f qcow2 -F qcow2 -b "$out/rootfs.qcow2" "$work/overlay.qcow2"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    serial=$work/serial.log
    t0=$EPOCHREALTIME
    # Under timeout(1): should this script be killed with SIGKILL, the QEMU still ends.
    timeout --kill-after=5 300 "$qemu" -accel tcg -m 1G \
        -object "memory-backend-file,id=mem0,size=1G,mem-path=$shm,share=on" \
        -machine q35,memory-backend=mem0 \
        -kernel "$out/vmlinux" -initrd "$out/initrd.img" -append "$append" \
        -drive "file=$work/overlay.qcow2,if=virtio" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:80" -device virtio-net-pci,netdev=n0 \
        -display none -monitor none -serial "file:$serial" -pidfile "$work/qemu.pid" \
        </dev/null >&2 9>&- & # 9>&-: an orphaned QEMU must not hold the build lock
    qpid=$!
    ready=
    for _ in $(seq 1 1800); do
        ready=$(grep -a -m1 '^LU-READY ' "$serial" 2>/dev/null || true)
        [[ -n $ready ]] && break
        kill -0 "$qpid" 2>/dev/null || break
        sleep 0.1
    done
    t1=$EPOCHREALTIME
    ready=${ready%$'\r'}
    if [[ -z $ready ]]; then
        echo "$0: self-test boot: no LU-READY within 180 s; serial log:" >&2
        tail -n 40 "$serial" >&2 || true
        exit 1
    fi
    boot_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    boot_id=${ready#LU-READY }
    got_id=$(curl -fsS --max-time 10 "http://127.0.0.1:$port/boot_id")
    curl -fsS --max-time 10 -o /dev/null "http://127.0.0.1:$port/"
    for _ in $(seq 1 50); do
        grep -aq "^LU-HEARTBEAT 2 $boot_id" "$serial" && break
        sleep 0.1
    done
    if [[ $got_id != "$boot_id" ]] || ! grep -aq "^LU-HEARTBEAT 2 $boot_id" "$serial"; then
        echo "$0: self-test boot: /boot_id ($got_id) or LU-HEARTBEAT does not match $ready" >&2
        tail -n 40 "$serial" >&2
        exit 1
    fi
    kill "$qpid"
    wait "$qpid" 2>/dev/null || true
    qpid=
    rm -f "$shm" "$work/overlay.qcow2"
    echo "self-test boot: LU-READY after ${boot_s} s, HTTP / and /boot_id OK" >&2
else
    echo "$0: $qemu not found: image not boot-tested, boot_seconds is null" >&2
fi

build_s=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
sha() { sha256sum "$1" | cut -d' ' -f1; }
mods_json=$(for p in "${mods[@]}"; do n=${p##*/}; printf '"%s", ' "${n%%.ko*}"; done)
cat >"$out/guest.json" <<EOF
{
  "name": "debian12-nginx",
  "inputs_sha256": "$inputs_sha",
  "packages": [$(printf '"%s", ' "${packages[@]}" | sed 's/, $//')],
  "debian_version": "$debian_ver",
  "kernel_package": "$kpkg",
  "kernel_version": "$kver",
  "kernel_release": "$krel",
  "systemd_version": "$systemd_ver",
  "nginx_version": "$nginx_ver",
  "initrd_modules": [${mods_json%, }],
  "dir": "$outdir",
  "vmlinuz": "vmlinuz",
  "vmlinux": "vmlinux",
  "initrd": "initrd.img",
  "rootfs": "rootfs.qcow2",
  "rootfs_format": "qcow2",
  "rootfs_size_mb": $size_mb,
  "vmlinuz_sha256": "$(sha "$out/vmlinuz")",
  "initrd_sha256": "$(sha "$out/initrd.img")",
  "append": "$append",
  "append_static_ip_example": "ip=10.0.3.2::10.0.3.1:255.255.255.0::eth0:off",
  "http_port": 80,
  "ready_line": "LU-READY <boot_id>",
  "heartbeat_line": "LU-HEARTBEAT <n> <boot_id>",
  "boot_seconds": $boot_s,
  "boot_measured_with": "qemu 7.2 TCG, -m 1G shared memory-backend-file, q35, -kernel vmlinux, virtio disk overlay, user net; QEMU start to LU-READY on ttyS0",
  "build_seconds": $build_s,
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF

# Publish: swap the whole directory in (an old one, e.g. with --force, is moved aside first).
if [[ -e $outdir ]]; then
    mv "$outdir" "$work/old"
fi
mv "$out" "$outdir"
echo "$outdir/guest.json"
