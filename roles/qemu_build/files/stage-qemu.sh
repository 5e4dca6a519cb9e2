#!/usr/bin/env bash
# Stage another Debian build of QEMU side by side with the installed one, touching nothing under
# /usr: `apt-get download` + `dpkg-deb -x` of qemu-system-x86, qemu-system-common and
# qemu-system-data of one version into a prefix, plus a wrapper that runs it.
#
# Usage:
#   tools/stage-qemu.sh VERSION DEST      stage qemu-system-x86=VERSION into DEST; prints the wrapper
#   tools/stage-qemu.sh --list            versions of qemu-system-x86 in the archive, oldest first
#   tools/stage-qemu.sh --oldest PARENT   stage the oldest archive version that is not the installed
#                                         one into PARENT/<safe name>; prints the wrapper
#   tools/stage-qemu.sh --safe-name VERSION   prints the directory name --oldest uses
#
# The safe name is VERSION with ':' (the epoch separator) replaced by '_':
# 1:7.2+dfsg-7+deb12u15 -> 1_7.2+dfsg-7+deb12u15 (a ':' would clash with QEMU option syntax and
# path lists).
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
#     (packages seabios and ipxe-qemu, installed if missing). No -L is needed.
#
# Idempotent: DEST/.staged-version holds the version once staging completed; re-running then only
# prints the wrapper. Staging happens in a sibling temp dir renamed to DEST at the end, so an
# interrupted run never leaves a half prefix at DEST.
set -euo pipefail

usage() {
    sed -n '5,11s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

safe_name() { printf '%s\n' "${1//:/_}"; }

# Versions of a package in the archive, oldest first (dpkg ordering, not sort -V).
archive_versions() {
    local pkg=$1 v out=() i j t
    while read -r v; do
        [[ -n $v ]] && out+=("$v")
    done < <(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | sort -u)
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
        echo "$0: qemu-system-data $v not in the archive" >&2
        return 1
    fi
}

ensure_pkgs() {
    local p missing=()
    for p in "$@"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] ||
            missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

stage_tmp=
cleanup() { [[ -z $stage_tmp ]] || rm -rf "$stage_tmp"; }
trap cleanup EXIT

stage() {
    local version=$1 dest=$2 parent dver f wrapper
    mkdir -p "$(dirname "$dest")"
    parent=$(cd "$(dirname "$dest")" && pwd)
    dest=$parent/$(basename "$dest")
    wrapper=$dest/bin/qemu-system-x86_64

    if [[ -x $wrapper && $(cat "$dest/.staged-version" 2>/dev/null || true) == "$version" ]]; then
        echo "$wrapper"
        return 0
    fi
    # Two test runs may stage the same version at once: one stages, the other waits and then
    # reuses it (so a prefix a running QEMU may use is never replaced under it).
    exec 9>"$parent/.$(basename "$dest").lock"
    flock 9
    if [[ -x $wrapper && $(cat "$dest/.staged-version" 2>/dev/null || true) == "$version" ]]; then
        echo "$wrapper"
        return 0
    fi
    if [[ -e $dest ]]; then
        # Only ever replace something this script made (it has our marker) or an empty dir.
        if [[ ! -e $dest/.staged-version && -n $(ls -A "$dest") ]]; then
            echo "$0: $dest exists and was not staged by this script; not touching it" >&2
            return 1
        fi
    fi
    if ! archive_versions qemu-system-x86 | grep -qxF -- "$version"; then
        echo "$0: qemu-system-x86 $version is not in the archive; it has:" >&2
        archive_versions qemu-system-x86 | sed 's/^/  /' >&2
        return 1
    fi

    # Firmware comes from the host's packages (see the header).
    ensure_pkgs seabios ipxe-qemu
    dver=$(data_version "$version")

    rm -rf "$parent/.$(basename "$dest").stage."* # left by a killed run (we hold the lock)
    stage_tmp=$(mktemp -d "$parent/.$(basename "$dest").stage.XXXXXX")
    # Sandbox user root: the temp dir is root-only, and _apt could not write there.
    (cd "$stage_tmp" && apt-get download -q -o APT::Sandbox::User=root \
        "qemu-system-x86=$version" "qemu-system-common=$version" "qemu-system-data=$dver" >&2)
    for f in "$stage_tmp"/*.deb; do
        dpkg-deb -x "$f" "$stage_tmp/prefix"
    done
    rm -f "$stage_tmp"/*.deb

    ln -sfn /usr/share/seabios "$stage_tmp/prefix/usr/share/seabios"
    mkdir -p "$stage_tmp/prefix/usr/lib"
    ln -sfn /usr/lib/ipxe "$stage_tmp/prefix/usr/lib/ipxe"

    mkdir -p "$stage_tmp/prefix/bin"
    cat >"$stage_tmp/prefix/bin/qemu-system-x86_64" <<EOF
#!/bin/sh
# Debian qemu-system-x86 $version, staged by tools/stage-qemu.sh. exec keeps the pid.
exec env QEMU_MODULE_DIR='$dest/usr/lib/x86_64-linux-gnu/qemu' '$dest/usr/bin/qemu-system-x86_64' "\$@"
EOF
    chmod 0755 "$stage_tmp/prefix/bin/qemu-system-x86_64"

    # It runs against the host's libraries: fail now rather than at the first VM start.
    if ldd "$stage_tmp/prefix/usr/bin/qemu-system-x86_64" | grep -q 'not found'; then
        ldd "$stage_tmp/prefix/usr/bin/qemu-system-x86_64" | grep 'not found' >&2
        echo "$0: qemu-system-x86 $version needs libraries the host lacks" >&2
        return 1
    fi
    echo "$version" >"$stage_tmp/prefix/.staged-version"

    rm -rf "$dest"
    mv "$stage_tmp/prefix" "$dest"
    echo "$wrapper"
}

case ${1:-} in
--list)
    [[ $# -eq 1 ]] || usage
    versions=$(archive_versions qemu-system-x86)
    if [[ -z $versions ]]; then
        apt-get update >&2
        versions=$(archive_versions qemu-system-x86)
    fi
    [[ -n $versions ]] && echo "$versions"
    ;;
--oldest)
    [[ $# -eq 2 ]] || usage
    inst=$(installed_version qemu-system-x86)
    oldest=
    while read -r v; do
        if [[ -n $v && $v != "$inst" ]]; then
            oldest=$v
            break
        fi
    done < <(archive_versions qemu-system-x86)
    if [[ -z $oldest ]]; then
        echo "$0: the archive has no qemu-system-x86 other than the installed ${inst:-(none)}" >&2
        exit 1
    fi
    stage "$oldest" "$2/$(safe_name "$oldest")"
    ;;
--safe-name)
    [[ $# -eq 2 ]] || usage
    safe_name "$2"
    ;;
-* | '') usage ;;
*)
    [[ $# -eq 2 ]] || usage
    stage "$1" "$2"
    ;;
esac
