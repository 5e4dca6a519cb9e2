#!/usr/bin/env bash
# Stage another Debian build of QEMU side by side with the installed one, touching nothing under
# /usr: qemu-system-x86, qemu-system-common and qemu-system-data of one version unpacked with
# `dpkg-deb -x` into a prefix, plus a wrapper that runs it.
#
# Usage:
#   stage-qemu.sh VERSION DEST            download and stage qemu-system-x86=VERSION into DEST;
#                                         prints the wrapper
#   stage-qemu.sh --debs DIR VERSION DEST stage VERSION from the .debs in DIR, a directory or a
#                                         .tar bundle (made by --download): no network, no apt;
#                                         prints the wrapper
#   stage-qemu.sh --download VERSION DIR  only download the .debs of VERSION (and of seabios and
#                                         ipxe-qemu) into DIR, or into one .tar bundle when DIR
#                                         ends in .tar (one file to copy); prints DIR
#   stage-qemu.sh --resolve SPEC          SPEC: a version, `latest` or `oldest` of the archive;
#                                         prints JSON {requested, version, data_version, safe_name,
#                                         installed, archive, error}; exit 1 when it resolves to none
#   stage-qemu.sh --list                  versions of qemu-system-x86 in the archive, oldest first
#   stage-qemu.sh --oldest PARENT         stage the oldest archive version that is not the installed
#                                         one into PARENT/<safe name>; prints the wrapper
#   stage-qemu.sh --safe-name VERSION     prints the directory name --oldest uses
#
# It is the staging step of the role liveupdate.qemu.qemu_build (roles/qemu_build/files/), and
# scripts/setup.sh runs it with --oldest for the tests.
#
# The safe name is VERSION with ':' (the epoch separator) replaced by '_':
# 1:7.2+dfsg-7+deb12u15 -> 1_7.2+dfsg-7+deb12u15 (a ':' would clash with QEMU option syntax and
# path lists; Debian versions never contain '_', so the mapping is one to one).
#
# The wrapper is DEST/bin/qemu-system-x86_64; it execs DEST/usr/bin/qemu-system-x86_64 (same pid)
# with QEMU_MODULE_DIR=DEST/usr/lib/x86_64-linux-gnu/qemu. Why:
#   - Debian builds load accelerators (TCG too) as modules and refuse modules of another build
#     ("Only modules from the same build can be loaded"). QEMU 7.2 already relocates its module
#     dir relative to the binary, so the prefix's own modules are found; the variable makes that
#     explicit and wins over any other search place.
#   - Firmware: QEMU 7.2 relocates its compiled-in firmware path (/usr/share/qemu,
#     /usr/share/seabios, /usr/lib/ipxe/qemu) relative to the binary too, so DEST/usr/share/qemu
#     (from qemu-system-data of the same version: linuxboot_dma.bin, pvh.bin, kvmvapic.bin) is
#     used, and DEST/usr/share/seabios and DEST/usr/lib/ipxe are symlinks to the host's
#     (packages seabios and ipxe-qemu, installed if missing). No -L is needed. With --debs,
#     nothing is installed: when the host lacks seabios or ipxe-qemu, their .debs from DIR are
#     unpacked into DEST instead.
#
# Idempotent: DEST/.staged-version holds the version once staging completed; re-running then only
# prints the wrapper (and "already staged" on stderr; "staged" when it did the work). Staging
# happens in a sibling temp dir renamed to DEST at the end, so an interrupted run never leaves a
# half prefix at DEST; a prefix that a running process executes from is never replaced.
# --download works the same way, with .downloaded-version in DIR (or in the bundle).
set -euo pipefail

PROG=${0##*/}

usage() {
    sed -n '6,22s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

safe_name() { printf '%s\n' "${1//:/_}"; }

# What apt knows of the two packages whose versions matter, read once: apt-cache takes seconds
# on a machine without apt's binary caches, and a run asks several times.
ARCHIVE=
ARCHIVE_LOADED=
load_archive() {
    ARCHIVE=$(apt-cache madison qemu-system-x86 qemu-system-data 2>/dev/null || true)
    ARCHIVE_LOADED=1
}

# Versions of qemu-system-x86 or qemu-system-data in the archive, oldest first (dpkg ordering,
# not sort -V).
archive_versions() {
    local pkg=$1 v out=() i j t
    [[ -n $ARCHIVE_LOADED ]] || load_archive
    while read -r v; do
        [[ -n $v ]] && out+=("$v")
    done < <(awk -F'|' -v pkg="$pkg" '{gsub(/ /, "")} $1 == pkg {print $2}' <<<"$ARCHIVE" | sort -u)
    for ((i = 1; i < ${#out[@]}; i++)); do
        for ((j = i; j > 0; j--)); do
            if dpkg --compare-versions "${out[j - 1]}" gt "${out[j]}"; then
                t=${out[j]}
                out[j]=${out[j - 1]}
                out[j - 1]=$t
            else
                break
            fi
        done
    done
    [[ ${#out[@]} -gt 0 ]] && printf '%s\n' "${out[@]}"
    return 0
}

installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

# The arch:all qemu-system-data is not rebuilt by a binNMU: for 1:7.2+dfsg-7+deb12u18+b3 the
# archive has qemu-system-data 1:7.2+dfsg-7+deb12u18. Pick the exact version, else without +bN.
data_version() {
    local v=$1 avail
    avail=$(archive_versions qemu-system-data)
    if grep -qxF -- "$v" <<<"$avail"; then
        echo "$v"
    elif [[ $v =~ ^(.*)\+b[0-9]+$ ]] && grep -qxF -- "${BASH_REMATCH[1]}" <<<"$avail"; then
        echo "${BASH_REMATCH[1]}"
    else
        echo "$PROG: qemu-system-data $v not in the archive" >&2
        return 1
    fi
}

# Is DATA_VERSION the qemu-system-data that goes with VERSION (same, or VERSION without +bN)?
data_matches() {
    local v=$1 dv=$2
    [[ $dv == "$v" ]] || { [[ $v =~ ^(.*)\+b[0-9]+$ ]] && [[ $dv == "${BASH_REMATCH[1]}" ]]; }
}

# Fails, listing the archive, unless qemu-system-x86 VERSION is in it.
require_in_archive() {
    local version=$1 avail
    avail=$(archive_versions qemu-system-x86)
    if ! grep -qxF -- "$version" <<<"$avail"; then
        echo "$PROG: qemu-system-x86 $version is not in the archive; it has:" >&2
        awk '{print "  " $0}' <<<"${avail:-(nothing: apt-get update?)}" >&2
        return 1
    fi
}

ensure_pkgs() {
    local p missing=()
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# Pids of the processes whose executable lies under DIR (a QEMU started from a staged prefix).
pids_under() {
    local dir=$1 p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case $exe in "$dir"/*) printf '%s ' "${p#/proc/}" ;; esac
    done
}

# The .deb in DIR of package PKG whose version passes CHECK WANT VERSION (CHECK: a function
# name); fails when there is none.
deb_in() {
    local dir=$1 pkg=$2 check=$3 want=$4 f fields
    for f in "$dir"/*.deb; do
        [[ -f $f ]] || continue
        fields=$(dpkg-deb -f "$f" Package Version | awk '{print $2}' | paste -sd' ')
        if [[ ${fields%% *} == "$pkg" ]] && "$check" "$want" "${fields#* }"; then
            echo "$f"
            return 0
        fi
    done
    return 1
}
same_version() { [[ $1 == "$2" ]]; }
any_version() { true; }

# A JSON string (the values here are package versions and what the user asked for).
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//[$'\001'-$'\037']/}
    printf '"%s"' "$s"
}

resolve() {
    local spec=$1 avail version='' dver='' error='' first=1 v
    avail=$(archive_versions qemu-system-x86)
    if ! command -v apt-cache >/dev/null; then
        error="apt-cache not found: this needs a Debian system with apt"
    elif [[ -z $avail ]]; then
        error="apt knows no qemu-system-x86 (are the package lists there? apt-get update)"
    else
        case $spec in
        latest) version=$(tail -n1 <<<"$avail") ;;
        oldest) version=$(head -n1 <<<"$avail") ;;
        *) if grep -qxF -- "$spec" <<<"$avail"; then version=$spec; fi ;;
        esac
        if [[ -z $version ]]; then
            error="qemu-system-x86 $spec is not in the archive"
        elif ! dver=$(data_version "$version" 2>/dev/null); then
            error="qemu-system-data for $version is not in the archive"
            version=
        fi
    fi
    printf '{"requested": %s, "version": %s, "data_version": %s, "safe_name": %s, "installed": %s, "archive": [' \
        "$(json_str "$spec")" "$(json_str "$version")" "$(json_str "$dver")" \
        "$(json_str "$(safe_name "$version")")" "$(json_str "$(installed_version qemu-system-x86)")"
    while read -r v; do
        [[ -n $v ]] || continue
        ((first)) || printf ', '
        first=0
        json_str "$v"
    done <<<"$avail"
    printf '], "error": %s}\n' "$(json_str "$error")"
    [[ -z $error ]]
}

work_tmp=
cleanup() { [[ -z $work_tmp ]] || rm -rf "$work_tmp"; }
trap cleanup EXIT

# An absolute DIR for a path that may not exist yet (its parent is created).
absolute() {
    mkdir -p "$(dirname "$1")"
    printf '%s/%s\n' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"
}

# The version a --download result at PATH (a directory or a .tar bundle) holds, if any.
downloaded_version() {
    if [[ -d $1 ]]; then
        cat "$1/.downloaded-version" 2>/dev/null || true
    elif [[ -f $1 ]]; then
        tar -xOf "$1" ./.downloaded-version 2>/dev/null || true
    fi
}

download() {
    local version=$1 dest dver name parent
    dest=$(absolute "$2")
    parent=$(dirname "$dest")
    name=$(basename "$dest")
    if [[ $(downloaded_version "$dest") == "$version" ]]; then
        echo "$PROG: $version already downloaded in $dest" >&2
        echo "$dest"
        return 0
    fi
    exec 9>"$parent/.$name.lock"
    flock 9
    if [[ $(downloaded_version "$dest") == "$version" ]]; then
        echo "$PROG: $version already downloaded in $dest" >&2
        echo "$dest"
        return 0
    fi
    if [[ -e $dest && -z $(downloaded_version "$dest") ]] && [[ ! -d $dest || -n $(ls -A "$dest") ]]; then
        die "$dest exists and was not made by this script; not touching it"
    fi
    require_in_archive "$version"
    dver=$(data_version "$version")
    rm -rf "$parent/.$name.download."* # left by a killed run (we hold the lock)
    work_tmp=$(mktemp -d "$parent/.$name.download.XXXXXX")
    mkdir "$work_tmp/debs"
    # The firmware the prefix needs when the host has no seabios / ipxe-qemu (see --debs).
    # Sandbox user root: the temp dir may be root-only, and _apt could not write there.
    (cd "$work_tmp/debs" && apt-get download -q -o APT::Sandbox::User=root \
        "qemu-system-x86=$version" "qemu-system-common=$version" "qemu-system-data=$dver" \
        seabios ipxe-qemu >&2)
    chmod 0755 "$work_tmp/debs"
    echo "$version" >"$work_tmp/debs/.downloaded-version"
    if [[ $dest == *.tar ]]; then
        # One file to copy to each host; the .debs are compressed already.
        tar -C "$work_tmp/debs" -cf "$work_tmp/debs.tar" .
        chmod 0644 "$work_tmp/debs.tar"
        rm -rf "$dest"
        mv "$work_tmp/debs.tar" "$dest"
    else
        rm -rf "$dest"
        mv "$work_tmp/debs" "$dest"
    fi
    echo "$PROG: downloaded $version into $dest" >&2
    echo "$dest"
}

# stage VERSION DEST [DEBS: a directory or .tar bundle of them]
stage() {
    local version=$1 dest debs=${3:-} parent name dver f wrapper pids fw pkg debdir check
    dest=$(absolute "$2")
    parent=$(dirname "$dest")
    name=$(basename "$dest")
    wrapper=$dest/bin/qemu-system-x86_64

    if [[ -x $wrapper && $(cat "$dest/.staged-version" 2>/dev/null || true) == "$version" ]]; then
        echo "$PROG: $version already staged in $dest" >&2
        echo "$wrapper"
        return 0
    fi
    # Two runs may stage the same version at once: one stages, the other waits and then
    # reuses it (so a prefix a running QEMU may use is never replaced under it).
    exec 9>"$parent/.$name.lock"
    flock 9
    if [[ -x $wrapper && $(cat "$dest/.staged-version" 2>/dev/null || true) == "$version" ]]; then
        echo "$PROG: $version already staged in $dest" >&2
        echo "$wrapper"
        return 0
    fi
    if [[ -e $dest ]]; then
        # Only ever replace something this script made (it has our marker) or an empty dir,
        # and never a prefix that a process runs from.
        if [[ ! -e $dest/.staged-version && -n $(ls -A "$dest") ]]; then
            die "$dest exists and was not staged by this script; not touching it"
        fi
        pids=$(pids_under "$dest")
        [[ -z $pids ]] || die "$dest is in use by running processes (pids ${pids% }); not replacing it"
    fi

    rm -rf "$parent/.$name.stage."* # left by a killed run (we hold the lock)
    work_tmp=$(mktemp -d "$parent/.$name.stage.XXXXXX")
    if [[ -z $debs ]]; then
        require_in_archive "$version"
        # Firmware comes from the host's packages (see the header).
        ensure_pkgs seabios ipxe-qemu
        dver=$(data_version "$version")
        # Sandbox user root: the temp dir is root-only, and _apt could not write there.
        (cd "$work_tmp" && apt-get download -q -o APT::Sandbox::User=root \
            "qemu-system-x86=$version" "qemu-system-common=$version" "qemu-system-data=$dver" >&2)
        debdir=$work_tmp
    else
        if [[ -f $debs && $debs == *.tar ]]; then
            mkdir "$work_tmp/debs"
            tar -xf "$debs" -C "$work_tmp/debs"
            debdir=$work_tmp/debs
        else
            [[ -d $debs ]] || die "$debs is neither a directory nor a .tar bundle of .debs"
            debdir=$(cd "$debs" && pwd)
        fi
    fi
    for pkg in qemu-system-x86 qemu-system-common qemu-system-data; do
        check=same_version
        [[ $pkg != qemu-system-data ]] || check=data_matches
        f=$(deb_in "$debdir" "$pkg" "$check" "$version") || die "${debs:-the download} has no .deb of $pkg for $version"
        dpkg-deb -x "$f" "$work_tmp/prefix"
    done
    [[ -n $debs ]] || rm -f "$work_tmp"/*.deb

    # Firmware: links to the host's, or (--debs on a host without them) unpacked from DIR.
    fw=()
    for pkg in seabios ipxe-qemu; do
        if is_installed "$pkg"; then
            continue
        fi
        [[ -n $debs ]] || die "$pkg is not installed"
        f=$(deb_in "$debdir" "$pkg" any_version '') ||
            die "$pkg is not installed on this host and $debs has no .deb of it to unpack instead"
        dpkg-deb -x "$f" "$work_tmp/prefix"
        fw+=("$pkg")
    done
    if [[ " ${fw[*]} " != *" seabios "* ]]; then
        ln -sfn /usr/share/seabios "$work_tmp/prefix/usr/share/seabios"
    fi
    if [[ " ${fw[*]} " != *" ipxe-qemu "* ]]; then
        mkdir -p "$work_tmp/prefix/usr/lib"
        ln -sfn /usr/lib/ipxe "$work_tmp/prefix/usr/lib/ipxe"
    fi

    mkdir -p "$work_tmp/prefix/bin"
    cat >"$work_tmp/prefix/bin/qemu-system-x86_64" <<EOF
#!/bin/sh
# Debian qemu-system-x86 $version, staged by stage-qemu.sh (liveupdate.qemu). exec keeps the pid.
exec env QEMU_MODULE_DIR='$dest/usr/lib/x86_64-linux-gnu/qemu' '$dest/usr/bin/qemu-system-x86_64' "\$@"
EOF
    chmod 0755 "$work_tmp/prefix/bin/qemu-system-x86_64" "$work_tmp/prefix"

    # It runs against the host's libraries: fail now rather than at the first VM start.
    if ldd "$work_tmp/prefix/usr/bin/qemu-system-x86_64" | grep -q 'not found'; then
        ldd "$work_tmp/prefix/usr/bin/qemu-system-x86_64" | grep 'not found' >&2
        die "qemu-system-x86 $version needs libraries the host lacks"
    fi
    echo "$version" >"$work_tmp/prefix/.staged-version"

    rm -rf "$dest"
    mv "$work_tmp/prefix" "$dest"
    echo "$PROG: staged $version in $dest${fw[*]:+ (firmware from .debs: ${fw[*]})}" >&2
    echo "$wrapper"
}

# The oldest qemu-system-x86 of the archive that is not INSTALLED (empty: none).
oldest_other() {
    local v
    while read -r v; do
        if [[ -n $v && $v != "$1" ]]; then
            echo "$v"
            return
        fi
    done < <(archive_versions qemu-system-x86)
}

case ${1:-} in
--safe-name | --debs) ;;
*) load_archive ;; # here, not in the subshells that ask
esac
case ${1:-} in
--list)
    [[ $# -eq 1 ]] || usage
    versions=$(archive_versions qemu-system-x86)
    if [[ -z $versions ]]; then
        apt-get update >&2
        load_archive
        versions=$(archive_versions qemu-system-x86)
    fi
    [[ -n $versions ]] && echo "$versions"
    ;;
--oldest)
    [[ $# -eq 2 ]] || usage
    inst=$(installed_version qemu-system-x86)
    oldest=$(oldest_other "$inst")
    if [[ -z $oldest ]]; then
        # Stale package lists (a fresh machine) may not show a build the archive has.
        apt-get update >&2
        load_archive
        oldest=$(oldest_other "$inst")
    fi
    if [[ -z $oldest ]]; then
        die "the archive has no qemu-system-x86 other than the installed ${inst:-(none)}"
    fi
    stage "$oldest" "$2/$(safe_name "$oldest")"
    ;;
--safe-name)
    [[ $# -eq 2 ]] || usage
    safe_name "$2"
    ;;
--resolve)
    [[ $# -eq 2 ]] || usage
    resolve "$2"
    ;;
--download)
    [[ $# -eq 3 ]] || usage
    download "$2" "$3"
    ;;
--debs)
    [[ $# -eq 4 ]] || usage
    stage "$3" "$4" "$2"
    ;;
-* | '') usage ;;
*)
    [[ $# -eq 2 ]] || usage
    stage "$1" "$2"
    ;;
esac
