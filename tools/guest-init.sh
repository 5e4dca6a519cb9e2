#!/bin/sh
# busybox ash (not plain POSIX sh) has `read -t SECONDS -u FD`.
# shellcheck disable=SC3045
# /init of the live-update test guest (busybox sh), packed by tools/build-guest.sh.
#
# It proves guest continuity across a QEMU live update by printing, on the console (ttyS0 when
# the kernel has console=ttyS0), one line each:
#   LU-BOOT <boot_id>                          once, at start
#   LU-HB <counter> <boot_id> <uptime_seconds> every 100 ms, counter 1, 2, 3, ...
#   LU-MEM-READY <md5> <mb>                    once the tmpfs fill file is written
#   LU-MEM OK <md5> | LU-MEM BAD <md5>         re-verification of that file, 1 s after the
#                                              previous one ended (md5 ~20 ms/MiB under TCG)
#   LU-DISK <n>                                record n written and fsynced (lu.disk=1, /dev/vda)
#   LU-DISK-ERR <n>                            writing record n failed (it is retried)
#   LU-NET <ifname> <addr/prefix>              NIC configured (only with a virtio NIC)
#   LU-HTTP <port>                             httpd answering GET / with the boot id (lu.http=1)
# tools/guestlog.py parses these lines.
#
# Kernel command line parameters (read from /proc/cmdline; the kernel ignores them itself):
#   lu.fill_mb=N      MiB to fill and verify (default 16; 0 = empty file)
#   lu.disk=1         write records to /dev/vda: record n is the 512-byte string
#                     "LU-REC <n> <boot_id>" padded with spaces and ending in "\n", at byte offset
#                     n*512 (n starts at 1; wraps to n mod disk sectors on a small disk)
#   lu.ip=ADDR/PREFIX address of eth0 (default 10.0.2.15/24, QEMU user-mode net)
#   lu.gw=ADDR        default route (default none; user-mode hostfwd does not need one)
#   lu.http=1         run busybox httpd on port 80 (needs the NIC)
#
# Deliberately not `set -e`: this is pid 1, and if it exits the kernel panics. Failures of
# optional parts (absent devices) are tolerated and the heartbeat goes on.
set -u

export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Re-open stdio on the console from devtmpfs (in case the initramfs node was missing).
exec </dev/console >/dev/console 2>&1
mount -t tmpfs -o mode=0755 tmpfs /run

read -r BOOT_ID </proc/sys/kernel/random/boot_id
read -r CMDLINE </proc/cmdline

FILL_MB=16 DISK=0 IP=10.0.2.15/24 GW='' HTTP=0
set -f # split the command line on spaces, but never glob it
for w in $CMDLINE; do
    case $w in
    lu.fill_mb=*) FILL_MB=${w#*=} ;;
    lu.disk=*) DISK=${w#*=} ;;
    lu.ip=*) IP=${w#*=} ;;
    lu.gw=*) GW=${w#*=} ;;
    lu.http=*) HTTP=${w#*=} ;;
    esac
done
set +f
case $FILL_MB in '' | *[!0-9]*) FILL_MB=16 ;; esac

echo "LU-BOOT $BOOT_ID"

# Modules in dependency order (computed on the host by build-guest.sh). Loading a driver with no
# device present succeeds; any failure is only reported, never fatal.
while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "lu-init: insmod $m failed"
done </lib/modules/load-order

# A fifo opened read-write never has data: `read -t` on it is a sleep without forking a process.
mkfifo /run/tick
exec 3<>/run/tick

# Which virtio devices exist (virtio device id 1 = net, 2 = block).
HAVE_NET=0 HAVE_BLK=0
for d in /sys/bus/virtio/devices/*; do
    [ -r "$d/device" ] || continue
    read -r id <"$d/device"
    case $id in
    0x0001) HAVE_NET=1 ;;
    0x0002) HAVE_BLK=1 ;;
    esac
done

# Wait up to 3 s for a path to appear (drivers probe asynchronously).
wait_path() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 30 ]; do
        read -r -t 0.1 -u 3 _ 2>/dev/null
        i=$((i + 1))
    done
    [ -e "$1" ]
}

mem_worker() {
    mkdir -p /mem
    # Own tmpfs sized for the file, so the fill cannot eat the rootfs.
    mount -t tmpfs -o size=$((FILL_MB + 2))m,mode=0700 tmpfs /mem
    # A 1 MiB random seed, then each MiB of the file is the seed rotated by a different odd
    # number of bytes: every page differs (no dedup-able or zero pages) and it costs two
    # forks per MiB instead of pulling all of it from /dev/urandom, which is slow under TCG.
    dd if=/dev/urandom of=/mem/seed bs=1048576 count=1 2>/dev/null
    : >/mem/fill
    i=0
    while [ $i -lt "$FILL_MB" ]; do
        r=$(((i * 4099) % 1048576))
        dd if=/mem/seed bs=65536 iflag=skip_bytes skip=$r 2>/dev/null
        [ $r -gt 0 ] && dd if=/mem/seed bs=$r count=1 2>/dev/null
        i=$((i + 1))
    done >>/mem/fill
    rm -f /mem/seed
    ref=$(md5sum /mem/fill)
    ref=${ref%% *}
    echo "LU-MEM-READY $ref $FILL_MB"
    while :; do
        read -r -t 1 -u 3 _
        sum=$(md5sum /mem/fill)
        sum=${sum%% *}
        if [ "$sum" = "$ref" ]; then
            echo "LU-MEM OK $sum"
        else
            echo "LU-MEM BAD ${sum:-none}"
        fi
    done
}

disk_worker() {
    [ "$DISK" = 1 ] && [ $HAVE_BLK = 1 ] || return 0
    wait_path /dev/vda || return 0
    read -r sectors </sys/block/vda/size
    [ "$sectors" -gt 1 ] || return 0
    n=1
    while :; do
        printf '%-511s\n' "LU-REC $n $BOOT_ID" >/run/rec
        if dd if=/run/rec of=/dev/vda bs=512 seek=$((n % sectors)) count=1 \
            conv=notrunc,fsync 2>/dev/null; then
            echo "LU-DISK $n"
            n=$((n + 1))
        else
            echo "LU-DISK-ERR $n"
        fi
        read -r -t 0.1 -u 3 _
    done
}

net_worker() {
    [ $HAVE_NET = 1 ] || return 0
    ip link set lo up
    wait_path /sys/class/net/eth0 || return 0
    ip addr add "$IP" dev eth0
    ip link set eth0 up
    [ -n "$GW" ] && ip route add default via "$GW"
    echo "LU-NET eth0 $IP"
    [ "$HTTP" = 1 ] || return 0
    mkdir -p /run/www
    echo "$BOOT_ID" >/run/www/index.html
    httpd -f -p 80 -h /run/www &
    echo "LU-HTTP 80"
    wait
}

mem_worker &
disk_worker &
net_worker &

# Heartbeat: builtins only (read, echo, arithmetic, [), so no process is forked per tick under
# TCG. Ticks are scheduled on uptime (centiseconds) so the rate stays 10/s on average; after a
# stall of more than 1 s the schedule restarts from now instead of bursting to catch up.
uptime_cs() { # $1 = "123.45" from /proc/uptime
    cs=$((${1%.*} * 100 + 1${1#*.} - 100))
}
n=0
read -r up _ </proc/uptime
uptime_cs "$up"
next=$cs
while :; do
    n=$((n + 1))
    read -r up _ </proc/uptime
    echo "LU-HB $n $BOOT_ID $up"
    uptime_cs "$up"
    next=$((next + 10))
    d=$((next - cs))
    if [ $d -lt -100 ]; then
        next=$cs
        d=0
    elif [ $d -gt 10 ]; then
        d=10
    fi
    if [ $d -gt 0 ]; then
        case $d in ?) t=0.0$d ;; *) t=0.$d ;; esac # 10 -> 0.10
        read -r -t $t -u 3 _
    fi
done
