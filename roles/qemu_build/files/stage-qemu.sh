#!/usr/bin/env bash
# Stage another Debian build of QEMU side by side with the installed one, touching nothing under
# /usr: qemu-system-x86, qemu-system-common and qemu-system-data of one version (and the
# qemu-system-modules-* of that version the archive has) unpacked with `dpkg-deb -x` into a
# prefix, plus a wrapper that runs it.
#
# Usage:
#   stage-qemu.sh VERSION DEST            download and stage qemu-system-x86=VERSION (or `latest`
#                                         / `oldest`) into DEST; prints the wrapper
#   stage-qemu.sh --debs DIR VERSION DEST stage VERSION from the .debs in DIR, a directory or a
#                                         .tar bundle (made by --download): no network, no apt
#                                         (--suite is ignored); prints the wrapper
#   stage-qemu.sh --download VERSION DIR  only download the .debs of VERSION (or `latest` /
#                                         `oldest`; and of seabios and ipxe-qemu) into DIR, or into
#                                         one .tar bundle when DIR ends in .tar (one file to copy);
#                                         prints DIR
#   stage-qemu.sh --resolve SPEC          SPEC: a version, `latest` or `oldest` of the archive;
#                                         prints JSON {requested, suite, version, data_version,
#                                         safe_name, installed, archive, error}; exit 1 when it
#                                         resolves to none
#   stage-qemu.sh --list                  versions of qemu-system-x86 in the archive, oldest first
#   stage-qemu.sh --oldest PARENT         stage the oldest version of the release's own suites
#                                         (CODENAME, -updates, -security) that is not the installed
#                                         one into PARENT/<safe name>; prints the wrapper; exit 3
#                                         when there is none
#   stage-qemu.sh --safe-name VERSION     prints the directory name --oldest uses
#
#   --suite SUITE (before or after the mode, e.g. bookworm-backports): the archive is that apt
#   suite only - a VERSION must be in it, `latest` / `oldest` and --list / --oldest are its
#   newest / oldest / versions. A suite apt has no source for is added as
#   /etc/apt/sources.list.d/liveupdate-qemu-SUITE.sources (see "Suites" below).
#
# It is the staging step of the role liveupdate.qemu.qemu_build (roles/qemu_build/files/), and
# scripts/setup.sh runs it with --oldest and with --suite for the tests.
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
#     explicit and wins over any other search place (QEMU 10.0 needs it: without it, it tries the
#     installed 7.2's modules).
#   - Firmware: QEMU 7.2 relocates its compiled-in firmware path (/usr/share/qemu,
#     /usr/share/seabios, /usr/lib/ipxe/qemu) relative to the binary too, so DEST/usr/share/qemu
#     (from qemu-system-data of the same version: linuxboot_dma.bin, pvh.bin, kvmvapic.bin) is
#     used, and DEST/usr/share/seabios and DEST/usr/lib/ipxe are symlinks to the host's
#     (packages seabios and ipxe-qemu, installed if missing). No -L is needed. With --debs,
#     nothing is installed: when the host lacks seabios or ipxe-qemu, their .debs from DIR are
#     unpacked into DEST instead.
#   - qemu-system-modules-spice / -opengl (QEMU 10.0 splits them out) are taken along when the
#     archive has them in VERSION, best effort: QEMU loads them only for those devices, so only
#     the main binary must find all its libraries.
#
# Suites: QEMU 10.0 for Debian 12 is in bookworm-backports, which a machine often lacks. For a
# --suite apt has no source for, the source is written with the URIs, Components and Signed-By of
# the machine's Debian entry (the first deb entry whose Suites hold the release's codename, with
# component main: deb822 in /etc/apt/sources.list.d/*.sources, else a one-line entry in
# /etc/apt/sources.list or sources.list.d/*.list) and only that source is refreshed; when its
# list cannot be fetched, the file is removed again. Stale lists: when a VERSION (or anything for
# latest / oldest / --list) is not found, `apt-get update` runs once and the archive is read again.
#
# Idempotent: DEST/.staged-version holds the version once staging completed; re-running then only
# prints the wrapper (and "already staged" on stderr; "staged" when it did the work). Staging
# happens in a sibling temp dir renamed to DEST at the end, so an interrupted run never leaves a
# half prefix at DEST; a prefix that a running process executes from is never replaced.
# --download works the same way, with .downloaded-version in DIR (or in the bundle). Changes to
# apt's sources and lists are serialised by a lock of their own (the role resolves once per host,
# in parallel, on the same controller).
set -euo pipefail

PROG=${0##*/}
SUITE=
# The modules QEMU 10.0 packages separately; the version's own are staged when the archive has them.
MODULE_PKGS=(qemu-system-modules-spice qemu-system-modules-opengl)
APT_LOCK=/run/lock/liveupdate-qemu-apt.lock
[[ -d ${APT_LOCK%/*} ]] || APT_LOCK=/tmp/liveupdate-qemu-apt.lock

usage() {
    sed -n '7,31s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

safe_name() { printf '%s\n' "${1//:/_}"; }

# The release's codename (bookworm): its own suites, and the entry a new suite copies.
codename() {
    local c
    # shellcheck source=/dev/null
    c=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}") || true
    [[ -n $c ]] || c=$(lsb_release -sc 2>/dev/null || true)
    [[ -n $c ]] || die "cannot tell the release's codename (no VERSION_CODENAME in /etc/os-release)"
    printf '%s\n' "$c"
}

# What apt knows of the packages whose versions matter, read once: apt-cache takes seconds on a
# machine without apt's binary caches, and a run asks several times.
ARCHIVE=
ARCHIVE_LOADED=
load_archive() {
    ARCHIVE=$(apt-cache madison qemu-system-x86 qemu-system-data "${MODULE_PKGS[@]}" 2>/dev/null || true)
    ARCHIVE_LOADED=1
}

# Versions of PKG in the archive, oldest first (dpkg ordering, not sort -V); WHERE is `all`,
# `suite` (SUITE only) or `own` (the release's own suites: CODENAME, -updates, -security,
# -proposed-updates; not backports). madison's third column is "URI SUITE/COMPONENT ARCH Packages".
archive_versions() {
    local pkg=$1 where=${2:-all} v out=() i j t own=''
    [[ -n $ARCHIVE_LOADED ]] || load_archive
    [[ $where != own ]] || own=$(codename)
    while read -r v; do
        [[ -n $v ]] && out+=("$v")
    done < <(awk -F'|' -v pkg="$pkg" -v where="$where" -v suite="$SUITE" -v own="$own" '
        { for (i = 1; i <= 3; i++) gsub(/^[ \t]+|[ \t]+$/, "", $i) }
        $1 != pkg { next }
        { split($3, w, /[ \t]+/); d = w[2]; sub(/\/.*/, "", d) }
        where == "suite" && d != suite { next }
        where == "own" && d != own && d != own "-updates" && d != own "-security" && d != own "-proposed-updates" { next }
        { print $2 }' <<<"$ARCHIVE" | sort -u)
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

# qemu-system-x86 versions of the archive a request looks in: SUITE's, or all.
versions() { archive_versions qemu-system-x86 "${SUITE:+suite}"; }

# What the messages call that archive.
archive_name() { if [[ -n $SUITE ]]; then echo "suite $SUITE"; else echo "archive"; fi; }

installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

# --- apt's sources and lists -------------------------------------------------------------------

# Run the rest of the caller with apt's sources and lists to ourselves (fd 8; apt_unlock ends it).
apt_lock() {
    exec 8>>"$APT_LOCK"
    flock 8
}
apt_unlock() { exec 8>&-; }

# Is SUITE in a source apt reads (enabled), and does apt have its package list?
# shellcheck disable=SC2016 # $(RELEASE) and $(FILENAME) are apt's format fields
suite_configured() {
    apt-get indextargets --no-release-info --format '$(RELEASE)' 'Created-By: Packages' 2>/dev/null |
        grep -qxF -- "$1"
}
# shellcheck disable=SC2016
suite_listed() {
    local f
    while read -r f; do
        [[ -n $f ]] || continue
        if [[ -e $f ]] || compgen -G "$f.*" >/dev/null; then
            return 0
        fi
    done < <(apt-get indextargets --format '$(FILENAME)' "Release: $1" 'Created-By: Packages' 2>/dev/null)
    return 1
}

# The deb822 fields (URIs, Components, Signed-By, each as written, continuation lines included)
# of the machine's Debian entry: the first deb entry whose Suites hold CODENAME and whose
# Components hold main. First line of the output: the file it is in.
debian_entry() {
    local codename=$1 files=() f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && files+=("$f")
    done
    if ((${#files[@]})) && awk -v codename="$codename" '
        function flush() {
            if (!done && val["types"] ~ /(^| )deb( |$)/ && (" " val["suites"] " ") ~ (" " codename " ") &&
                (" " val["components"] " ") ~ / main / && tolower(val["enabled"]) != "no" && val["uris"] != "") {
                print file; print "URIs: " val["uris"]; print "Components: " val["components"]
                if ("signed-by" in val) print "Signed-By: " signed
                done = 1
            }
            split("", val); field = ""; signed = ""
        }
        FNR == 1 { flush(); file = FILENAME }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ {
            # A continuation line: kept as it is for Signed-By (an embedded key), else one more word.
            if (field == "signed-by") signed = signed "\n" $0
            else if (field != "") val[field] = val[field] " " $1
            next
        }
        {
            c = index($0, ":"); field = tolower(substr($0, 1, c - 1)); v = substr($0, c + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", v)
            if (field == "signed-by") signed = v
            gsub(/[ \t]+/, " ", v); val[field] = v
        }
        END { flush(); exit !done }' "${files[@]}"; then
        return 0
    fi
    files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] && files+=("$f")
    done
    ((${#files[@]})) || return 1
    awk -v codename="$codename" '
        /^[ \t]*(#|$)/ || $1 != "deb" { next }
        {
            line = $0; opts = ""; o = index(line, "["); e = index(line, "]")
            if (o && e > o) { opts = substr(line, o + 1, e - o - 1); line = substr(line, 1, o - 1) " " substr(line, e + 1) }
            n = split(line, w, /[ \t]+/); k = 0
            for (i = 1; i <= n; i++) if (w[i] != "") word[++k] = w[i]
            if (k < 4 || word[3] != codename) next
            comps = word[4]; for (i = 5; i <= k; i++) comps = comps " " word[i]
            if ((" " comps " ") !~ / main /) next
            print FILENAME; print "URIs: " word[2]; print "Components: " comps
            m = split(opts, opt, /[ \t]+/)
            for (i = 1; i <= m; i++) if (opt[i] ~ /^signed-by=/) print "Signed-By: " substr(opt[i], 11)
            found = 1; exit
        }
        END { exit !found }' "${files[@]}"
}

# Write SUITE's source, a copy of the Debian entry with Suites SUITE, to FILE.
write_suite_source() {
    local suite=$1 file=$2 codename entry tmp
    codename=$(codename)
    [[ -w ${file%/*} ]] ||
        { SUITE_ERROR="apt has no source for suite $suite, and adding ${file##*/} needs root"; return 1; }
    entry=$(debian_entry "$codename") ||
        { SUITE_ERROR="apt has no source for suite $suite, and no Debian entry for $codename (deb, main) to copy its mirror from"; return 1; }
    tmp=$(mktemp "${file%/*}/.${file##*/}.XXXXXX")
    {
        printf '# Suite %s for liveupdate.qemu (roles/qemu_build/files/stage-qemu.sh --suite),\n' "$suite"
        printf '# from the mirror and keyring of the %s entry in %s.\n' "$codename" "${entry%%$'\n'*}"
        printf '# Remove this file to drop the suite again.\n' 
        printf 'Types: deb\n'
        grep -m1 '^URIs: ' <<<"$entry"
        printf 'Suites: %s\n' "$suite"
        grep -m1 '^Components: ' <<<"$entry"
        # Signed-By may go on over continuation lines (an embedded key): all of it.
        sed -n '/^Signed-By:/,$p' <<<"$entry"
    } >"$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$file"
    echo "$PROG: added suite $suite to apt: $file" >&2
}

# Make sure apt has SUITE's package list: add its source when there is none (see the header),
# refresh it when its list is missing. On failure SUITE_ERROR says why.
SUITE_ERROR=
ensure_suite() {
    local suite=$1 file=/etc/apt/sources.list.d/liveupdate-qemu-$1.sources wrote=''
    suite_listed "$suite" && return 0
    apt_lock
    if ! suite_listed "$suite"; then
        if ! suite_configured "$suite"; then
            write_suite_source "$suite" "$file" || { apt_unlock; return 1; }
            wrote=1
        fi
        if [[ -f $file ]] && grep -qxF "Suites: $suite" "$file"; then
            # Ours: refresh that source alone, leaving the other lists as they are.
            apt-get update -q -o Dir::Etc::sourcelist="$file" -o Dir::Etc::sourceparts=- \
                -o APT::Get::List-Cleanup=0 >&2 || true
        else
            apt-get update -q >&2 || true
            REFRESHED=1
        fi
        if ! suite_listed "$suite"; then
            SUITE_ERROR="apt could not fetch the package list of suite $suite (see apt-get's messages)"
            if [[ -n $wrote ]]; then
                # A suite the mirror does not have would fail every later apt-get update.
                rm -f "$file"
                SUITE_ERROR+="; $file removed again"
            fi
            apt_unlock
            return 1
        fi
    fi
    apt_unlock
    ARCHIVE_LOADED=
}

# Stale lists (a fresh machine): `apt-get update` once per run, then read the archive again.
# Returns 1 when it ran already.
REFRESHED=
refresh_lists() {
    [[ -z $REFRESHED ]] || return 1
    REFRESHED=1
    echo "$PROG: not found in apt's package lists; running apt-get update and looking again" >&2
    apt_lock
    apt-get update -q >&2 || echo "$PROG: apt-get update failed (see above); looking again anyway" >&2
    apt_unlock
    load_archive
}

# The archive of this run, read. Without any version from SUITE, make sure apt has SUITE first
# (asking apt-get indextargets only then: like apt-cache, it rebuilds apt's cache when that is
# not kept, which takes seconds).
prepare_archive() {
    load_archive
    if [[ -n $SUITE && -z $(versions) ]]; then
        ensure_suite "$SUITE" || return 1
        [[ -n $ARCHIVE_LOADED ]] || load_archive
    fi
}

# --- versions --------------------------------------------------------------------------------

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

# The qemu-system-modules-* packages the archive has in VERSION.
module_packages() {
    local p
    for p in "${MODULE_PKGS[@]}"; do
        if archive_versions "$p" | grep -qxF -- "$1"; then
            echo "$p"
        fi
    done
}

# Fails, listing the archive, unless qemu-system-x86 VERSION is in it (after one refresh).
require_in_archive() {
    local version=$1 avail
    avail=$(versions)
    if ! grep -qxF -- "$version" <<<"$avail" && refresh_lists; then
        avail=$(versions)
    fi
    if ! grep -qxF -- "$version" <<<"$avail"; then
        echo "$PROG: qemu-system-x86 $version is not in the $(archive_name); it has:" >&2
        awk '{print "  " $0}' <<<"${avail:-(nothing)}" >&2
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

# apt-get download of the modules of VERSION into DIR, best effort (see the header).
download_modules() {
    local version=$1 dir=$2 mods=()
    mapfile -t mods < <(module_packages "$version")
    ((${#mods[@]})) || return 0
    (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "${mods[@]/%/=$version}" >&2) ||
        echo "$PROG: could not download ${mods[*]} $version; going on without them" >&2
}

# A JSON string (the values here are package versions and what the user asked for).
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//[$'\001'-$'\037']/}
    printf '"%s"' "$s"
}

# SPEC against the archive: sets RESOLVED_VERSION, RESOLVED_DATA and RESOLVE_ERROR.
resolve_spec() {
    local spec=$1 avail
    RESOLVED_VERSION='' RESOLVED_DATA='' RESOLVE_ERROR=''
    avail=$(versions)
    if [[ -z $avail ]]; then
        RESOLVE_ERROR="apt knows no qemu-system-x86${SUITE:+ in suite $SUITE} (are the package lists there? apt-get update)"
        return
    fi
    case $spec in
    latest) RESOLVED_VERSION=$(tail -n1 <<<"$avail") ;;
    oldest) RESOLVED_VERSION=$(head -n1 <<<"$avail") ;;
    *) if grep -qxF -- "$spec" <<<"$avail"; then RESOLVED_VERSION=$spec; fi ;;
    esac
    if [[ -z $RESOLVED_VERSION ]]; then
        RESOLVE_ERROR="qemu-system-x86 $spec is not in the $(archive_name)"
    elif ! RESOLVED_DATA=$(data_version "$RESOLVED_VERSION" 2>/dev/null); then
        RESOLVE_ERROR="qemu-system-data for $RESOLVED_VERSION is not in the archive"
        RESOLVED_VERSION=
    fi
}

resolve() {
    local spec=$1 first=1 v
    if ! command -v apt-cache >/dev/null; then
        RESOLVED_VERSION='' RESOLVED_DATA='' RESOLVE_ERROR="apt-cache not found: this needs a Debian system with apt"
    elif ! prepare_archive; then
        RESOLVED_VERSION='' RESOLVED_DATA='' RESOLVE_ERROR=$SUITE_ERROR ARCHIVE_LOADED=
    else
        resolve_spec "$spec"
        if [[ -n $RESOLVE_ERROR ]] && refresh_lists; then
            resolve_spec "$spec"
        fi
    fi
    printf '{"requested": %s, "suite": %s, "version": %s, "data_version": %s, "safe_name": %s, "installed": %s, "archive": [' \
        "$(json_str "$spec")" "$(json_str "$SUITE")" "$(json_str "$RESOLVED_VERSION")" "$(json_str "$RESOLVED_DATA")" \
        "$(json_str "$(safe_name "$RESOLVED_VERSION")")" "$(json_str "$(installed_version qemu-system-x86)")"
    while read -r v; do
        [[ -n $v ]] || continue
        ((first)) || printf ', '
        first=0
        json_str "$v"
    done < <([[ -z $ARCHIVE_LOADED ]] || versions)
    printf '], "error": %s}\n' "$(json_str "$RESOLVE_ERROR")"
    [[ -z $RESOLVE_ERROR ]]
}

# --- download and stage ----------------------------------------------------------------------

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
    prepare_archive || die "$SUITE_ERROR"
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
    download_modules "$version" "$work_tmp/debs"
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
    local version=$1 dest debs=${3:-} parent name dver f wrapper pids fw pkg debdir check mods=() so
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
        prepare_archive || die "$SUITE_ERROR"
        require_in_archive "$version"
        # Firmware comes from the host's packages (see the header).
        ensure_pkgs seabios ipxe-qemu
        dver=$(data_version "$version")
        # Sandbox user root: the temp dir is root-only, and _apt could not write there.
        (cd "$work_tmp" && apt-get download -q -o APT::Sandbox::User=root \
            "qemu-system-x86=$version" "qemu-system-common=$version" "qemu-system-data=$dver" >&2)
        download_modules "$version" "$work_tmp"
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
    for pkg in "${MODULE_PKGS[@]}"; do
        if f=$(deb_in "$debdir" "$pkg" same_version "$version"); then
            dpkg-deb -x "$f" "$work_tmp/prefix"
            mods+=("${pkg#qemu-system-modules-}")
        fi
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
    # A module short of a library only fails the device that loads it: say so, go on.
    for so in "$work_tmp/prefix/usr/lib/x86_64-linux-gnu/qemu"/*.so; do
        [[ -f $so ]] || continue
        if ldd "$so" 2>/dev/null | grep -q 'not found'; then
            echo "$PROG: note: module ${so##*/} needs libraries the host lacks ($(ldd "$so" | awk '/not found/ {print $1}' | paste -sd' ')); QEMU fails only what loads it" >&2
        fi
    done
    echo "$version" >"$work_tmp/prefix/.staged-version"

    rm -rf "$dest"
    mv "$work_tmp/prefix" "$dest"
    echo "$PROG: staged $version in $dest${mods[*]:+ (modules: ${mods[*]})}${fw[*]:+ (firmware from .debs: ${fw[*]})}" >&2
    echo "$wrapper"
}

# The oldest qemu-system-x86 of SUITE, or of the release's own suites, that is not INSTALLED
# (empty: none).
oldest_other() {
    local v where=own
    [[ -z $SUITE ]] || where=suite
    while read -r v; do
        if [[ -n $v && $v != "$1" ]]; then
            echo "$v"
            return
        fi
    done < <(archive_versions qemu-system-x86 "$where")
}

# VERSION of stage / --download as given, or the version `latest` / `oldest` resolve to.
pin_version() {
    case $1 in
    latest | oldest)
        prepare_archive || die "$SUITE_ERROR"
        resolve_spec "$1"
        if [[ -n $RESOLVE_ERROR ]] && refresh_lists; then
            resolve_spec "$1"
        fi
        [[ -z $RESOLVE_ERROR ]] || die "$RESOLVE_ERROR"
        echo "$PROG: $1${SUITE:+ of $SUITE} is $RESOLVED_VERSION" >&2
        VERSION=$RESOLVED_VERSION
        ;;
    *) VERSION=$1 ;;
    esac
}

# --- command line ----------------------------------------------------------------------------

args=()
while (($#)); do
    case $1 in
    --suite)
        [[ $# -ge 2 ]] || usage
        [[ $2 =~ ^[a-z0-9][a-z0-9.+-]*$ ]] || die "--suite $2: not an apt suite name"
        SUITE=$2
        shift 2
        ;;
    *)
        args+=("$1")
        shift
        ;;
    esac
done
set -- "${args[@]}"

case ${1:-} in
--list)
    [[ $# -eq 1 ]] || usage
    prepare_archive || die "$SUITE_ERROR"
    list=$(versions)
    if [[ -z $list ]] && refresh_lists; then
        list=$(versions)
    fi
    [[ -n $list ]] && echo "$list"
    ;;
--oldest)
    [[ $# -eq 2 ]] || usage
    prepare_archive || die "$SUITE_ERROR"
    inst=$(installed_version qemu-system-x86)
    oldest=$(oldest_other "$inst")
    if [[ -z $oldest ]] && refresh_lists; then
        # Stale package lists (a fresh machine) may not show a build the archive has.
        oldest=$(oldest_other "$inst")
    fi
    if [[ -z $oldest ]]; then
        where="the release's own suites"
        [[ -z $SUITE ]] || where="suite $SUITE"
        echo "$PROG: $where have no qemu-system-x86 other than the installed ${inst:-(none)}" >&2
        exit 3
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
    pin_version "$2"
    download "$VERSION" "$3"
    ;;
--debs)
    [[ $# -eq 4 ]] || usage
    stage "$3" "$4" "$2"
    ;;
-* | '') usage ;;
*)
    [[ $# -eq 2 ]] || usage
    pin_version "$1"
    stage "$VERSION" "$2"
    ;;
esac
