#!/usr/bin/env bash
# Test hypervisors on this machine, each in namespaces of its own, reached over SSH: the hosts of
# the molecule scenario molecule/default, and of anyone who wants a small fleet by hand.
#
# Usage: testhosts.sh create N | status N | destroy [N]
#
#   create N    host 1..N up (a host that is already up is kept), then prints the hosts as JSON:
#               {"key": KEY, "hosts": [{"name", "address", "port", "user", "netns", "pid", "up"}, ...]}
#               (pid: the host's sshd, its init, as a pid of the root namespace)
#   status N    the same JSON; exit 1 when one of the N is not up
#   destroy     every host of the prefix: processes, namespaces, veths, files. N is accepted and
#               ignored (all hosts found are removed). Safe to run when there is nothing.
#
# Host i (named PREFIXi, e.g. luhost1) is:
#   - a network namespace PREFIXi with lo and eth0, the end of a veth pair whose other end PREFIXi-r
#     stays in the root namespace: NET.(4i+1)/30 on the root side, NET.(4i+2)/30 on the host. No
#     route out: the host reaches the controller's side of its veth and nothing else.
#   - a PID namespace whose init is the host's sshd (sshd reaps orphaned children, so a QEMU that
#     daemonized is reaped when it quits); its /proc shows that host's processes only. When sshd
#     dies the kernel kills every process of the host.
#   - a mount namespace with private tmpfs on /run, /tmp, /dev/shm, /opt and /var/lib/liveupdate-qemu
#     (what one host installs or runs stays on that host and is gone with it); the rest of the
#     root filesystem is shared, read-write, as on the controller.
#   - sshd on NET.(4i+2):22, its own host key, root login with the key KEY only.
#
# Environment:
#   TESTHOSTS_DIR     state: keys, sshd configs and logs (default /var/lib/liveupdate-testhosts;
#                     not under a path the hosts mount over, since their sshd reads it)
#   TESTHOSTS_PREFIX  names of the hosts, their network namespaces and veths (default luhost)
#   TESTHOSTS_NET     the first three octets of the /24 the hosts' addresses are taken from
#                     (default 10.213.77); nothing else may use that /24
set -euo pipefail

DIR=${TESTHOSTS_DIR:-/var/lib/liveupdate-testhosts}
PREFIX=${TESTHOSTS_PREFIX:-luhost}
NET=${TESTHOSTS_NET:-10.213.77}
SSHD=/usr/sbin/sshd
# Private tmpfs mounts of every host, and their sizes (tmpfs uses only what is written).
PRIVATE_MOUNTS=(/run:64m /tmp:1g /dev/shm:2g /opt:2g /var/lib/liveupdate-qemu:1g)
MAX_HOSTS=60 # 4i+2 must stay below 255

log() { printf '[testhosts] %s\n' "$*" >&2; }
die() {
    printf '[testhosts] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '5,12s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

[[ $PREFIX =~ ^[a-z][a-z0-9]{0,8}$ ]] || die "TESTHOSTS_PREFIX must be 1-9 lower-case letters and digits (it names interfaces)"
[[ $NET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "TESTHOSTS_NET must be three octets, like 10.213.77"

name_of() { printf '%s%d' "$PREFIX" "$1"; }
host_addr() { printf '%s.%d' "$NET" $((4 * $1 + 2)); }
root_addr() { printf '%s.%d' "$NET" $((4 * $1 + 1)); }

netns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }

# The pid (in the root namespace) of `unshare` that holds host i, if it still runs.
holder_pid() {
    local pidfile pid
    pidfile=$DIR/$(name_of "$1")/holder.pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -d /proc/$pid && $(readlink "/proc/$pid/exe" 2>/dev/null) == */unshare ]] || return 1
    printf '%s\n' "$pid"
}

# The host's init (its sshd), as a pid of the root namespace: the child of its unshare.
init_pid() {
    local holder pid
    holder=$(holder_pid "$1") || return 1
    pid=$(<"/proc/$holder/task/$holder/children") || return 1
    pid=${pid%% *}
    [[ -n $pid ]] && printf '%s\n' "$pid"
}

ssh_opts() {
    printf '%s\n' -i "$DIR/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5
}

host_up() {
    local i=$1 opts
    init_pid "$i" >/dev/null || return 1
    mapfile -t opts < <(ssh_opts)
    ssh "${opts[@]}" "root@$(host_addr "$i")" true 2>/dev/null
}

ensure_tools() {
    local missing=() tool
    for tool in ip unshare ssh ssh-keygen setsid; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [[ -x $SSHD ]] || missing+=("$SSHD")
    ((${#missing[@]} == 0)) && return
    # Debian packages: iproute2 (ip), util-linux (unshare, setsid; always installed), openssh-client,
    # openssh-server (sshd; its service is not needed and not started here).
    log "installing what is missing (${missing[*]}): iproute2 openssh-client openssh-server"
    [[ $EUID -eq 0 ]] || die "run as root"
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        iproute2 openssh-client openssh-server
}

common_setup() {
    mkdir -p "$DIR"
    chmod 0700 "$DIR"
    if [[ ! -s $DIR/id_ed25519 ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "testhosts@$(hostname)" -f "$DIR/id_ed25519"
    fi
    cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
    chmod 0600 "$DIR/authorized_keys"
    # The hosts mount over /var/lib/liveupdate-qemu, which must exist as a mountpoint. Made here
    # only when missing, and then removed by destroy (when still empty).
    if [[ ! -e /var/lib/liveupdate-qemu ]]; then
        mkdir -p /var/lib/liveupdate-qemu
        touch "$DIR/made-var-lib-liveupdate-qemu"
    fi
}

# The network of host i: namespace, veth pair, addresses.
make_net() {
    local i=$1 ns veth
    ns=$(name_of "$i")
    veth=$ns-r
    netns_exists "$ns" || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip addr replace "$(root_addr "$i")/30" dev "$veth"
    ip link set "$veth" up
    ip -n "$ns" addr replace "$(host_addr "$i")/30" dev eth0
    ip -n "$ns" link set eth0 up
}

write_sshd_config() {
    local i=$1 hdir=$2
    [[ -s $hdir/ssh_host_ed25519_key ]] ||
        ssh-keygen -q -t ed25519 -N '' -C "$(name_of "$i")" -f "$hdir/ssh_host_ed25519_key"
    cat >"$hdir/sshd_config" <<EOF
# Written by $0 for test host $(name_of "$i").
ListenAddress $(host_addr "$i"):22
HostKey $hdir/ssh_host_ed25519_key
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $DIR/authorized_keys
UsePAM no
PrintMotd no
AcceptEnv LANG LC_*
# Ansible runs many tasks at once over one connection per host.
MaxSessions 50
MaxStartups 50:30:100
Subsystem sftp internal-sftp
EOF
}

# The script that becomes the host: run as `sh -c` in the new namespaces, mounts the private
# filesystems and then turns into sshd (pid 1 of the host).
host_init_script() {
    local hdir=$1 m path size
    printf 'set -e\n'
    for m in "${PRIVATE_MOUNTS[@]}"; do
        path=${m%%:*} size=${m##*:}
        printf 'mount -t tmpfs -o size=%s,mode=0755 testhost %s\n' "$size" "$path"
    done
    printf 'chmod 1777 /tmp /dev/shm\n'
    printf 'mkdir -p -m 0755 /run/sshd\n'
    printf 'exec %s -D -f %s -E %s\n' "$SSHD" "$hdir/sshd_config" "$hdir/sshd.log"
}

start_host() {
    local i=$1 ns hdir holder deadline
    ns=$(name_of "$i")
    hdir=$DIR/$ns
    mkdir -p "$hdir"
    write_sshd_config "$i" "$hdir"
    : >"$hdir/sshd.log"
    # setsid and the redirections: the host outlives the caller's session, and a caller that
    # reads this script's output (ansible) does not wait for it;
    # --kill-child: should unshare die, the host goes with it.
    setsid ip netns exec "$ns" \
        unshare --pid --mount --fork --kill-child --mount-proc --propagation private \
        sh -c "$(host_init_script "$hdir")" </dev/null >>"$hdir/console.log" 2>&1 &
    holder=$!
    printf '%s\n' "$holder" >"$hdir/holder.pid"
    deadline=$((SECONDS + 30))
    until host_up "$i"; do
        if ! kill -0 "$holder" 2>/dev/null || ((SECONDS > deadline)); then
            cat "$hdir/console.log" "$hdir/sshd.log" >&2 || true
            die "$ns did not come up (see above; state in $hdir)"
        fi
        sleep 0.2
    done
    log "$ns up: sshd pid $(init_pid "$i") at $(host_addr "$i")"
}

# A host's JSON line.
host_json() {
    local i=$1 up=$2 pid
    pid=$(init_pid "$i" 2>/dev/null) || pid=null
    printf '{"name": "%s", "address": "%s", "port": 22, "user": "root", "netns": "%s", "pid": %s, "up": %s}' \
        "$(name_of "$i")" "$(host_addr "$i")" "$(name_of "$i")" "$pid" "$up"
}

print_json() {
    local n=$1 i up sep='' rc=0
    printf '{"key": "%s", "hosts": [' "$DIR/id_ed25519"
    for ((i = 1; i <= n; i++)); do
        if host_up "$i"; then up=true; else up=false rc=1; fi
        printf '%s\n  %s' "$sep" "$(host_json "$i" "$up")"
        sep=,
    done
    printf '\n]}\n'
    return "$rc"
}

check_count() {
    if ! [[ ${1:-} =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > MAX_HOSTS)); then
        die "N must be a number from 1 to $MAX_HOSTS"
    fi
}

# The /24 must be ours alone: no address or route in it but those of our veths.
check_net_free() {
    local others
    others=$(ip -o route show | awk -v net="$NET." -v pre="$PREFIX" \
        'index($1, net) == 1 { for (f = 1; f < NF; f++) if ($f == "dev" && $(f + 1) !~ "^" pre "[0-9]+-r$") print }')
    [[ -z $others ]] || die "$NET.0/24 is already in use on this machine: $others (set TESTHOSTS_NET)"
}

cmd_create() {
    local n=$1 i
    check_count "$n"
    [[ $EUID -eq 0 ]] || die "run as root"
    ensure_tools
    check_net_free
    common_setup
    for ((i = 1; i <= n; i++)); do
        if host_up "$i"; then
            log "$(name_of "$i") already up"
            continue
        fi
        stop_host "$i" # whatever is left of an earlier one
        make_net "$i"
        start_host "$i"
    done
    print_json "$n"
}

# Stop host i's processes: its init first (SIGTERM, then SIGKILL); the kernel kills the rest of
# its PID namespace with it. Then whatever still runs in its network namespace.
stop_host() {
    local i=$1 ns pid holder pids
    ns=$(name_of "$i")
    holder=$(holder_pid "$i") || holder=
    if pid=$(init_pid "$i"); then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone 5 "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    [[ -n $holder ]] && { wait_gone 5 "$holder" || kill -KILL "$holder" 2>/dev/null || true; }
    if netns_exists "$ns"; then
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        if ((${#pids[@]})); then
            log "$ns: killing what still runs in its network namespace: ${pids[*]}"
            kill -KILL "${pids[@]}" 2>/dev/null || true
            wait_gone 5 "${pids[@]}" || die "$ns: processes ${pids[*]} do not exit"
        fi
    fi
    rm -f "$DIR/$ns/holder.pid"
}

# Wait up to $1 seconds until the processes $2... are gone.
wait_gone() {
    local deadline=$((SECONDS + $1)) p alive
    shift
    while :; do
        alive=0
        for p in "$@"; do
            [[ -d /proc/$p ]] && alive=1
        done
        ((alive)) || return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

cmd_destroy() {
    local i
    [[ $EUID -eq 0 ]] || die "run as root"
    # Every host of the prefix: those with state, those whose namespace or veth remains.
    local found=()
    mapfile -t found < <(
        {
            ip netns list | awk '{print $1}'
            ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sed -n 's/-r$//p'
            [[ -d $DIR ]] && find "$DIR" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'
        } | grep -E "^${PREFIX}[0-9]+\$" | sed "s/^${PREFIX}//" | sort -un
    )
    local failed=()
    for i in "${found[@]}"; do
        # A host that cannot be removed must not keep the others alive: go on, fail at the end.
        # (In a subshell, so that its `die` ends only this host.)
        if (destroy_host "$i"); then
            log "$(name_of "$i") destroyed"
        else
            failed+=("$(name_of "$i")")
        fi
    done
    ((${#failed[@]} == 0)) || die "could not destroy ${failed[*]} (state kept in $DIR)"
    if [[ -e $DIR/made-var-lib-liveupdate-qemu ]]; then
        rmdir /var/lib/liveupdate-qemu 2>/dev/null ||
            log "left /var/lib/liveupdate-qemu in place: it is not empty"
    fi
    rm -rf "$DIR"
}

destroy_host() {
    local i=$1 ns deadline
    ns=$(name_of "$i")
    stop_host "$i"
    if netns_exists "$ns"; then
        ip netns del "$ns" || return 1
    fi
    # Deleting the namespace deletes the veth pair too, but asynchronously.
    deadline=$((SECONDS + 5))
    while ip link show "$ns-r" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            ip link del "$ns-r" 2>/dev/null || true
            ! ip link show "$ns-r" >/dev/null 2>&1 || die "$ns: veth $ns-r cannot be deleted"
            break
        fi
        sleep 0.1
    done
}

cmd_status() {
    local n=$1
    check_count "$n"
    if [[ ! -d $DIR ]]; then
        log "no hosts: $DIR does not exist"
    fi
    print_json "$n"
}

case ${1:-}:$# in
create:2) cmd_create "$2" ;;
status:2) cmd_status "$2" ;;
destroy:1 | destroy:2) cmd_destroy ;;
*) usage ;;
esac
