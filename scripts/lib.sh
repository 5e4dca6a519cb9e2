# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Shared helpers of scripts/*.sh. Source it; it does not run anything by itself.
#
# Layout of a checkout once scripts/setup.sh has run (all ignored by git):
#   .venv/                      controller + test tooling (requirements-dev.txt)
#   .cache/guest/               the test guest (tools/build-guest.sh)
#   .cache/qemu/                QEMU builds staged side by side (roles/qemu_build/files/stage-qemu.sh): the
#                               oldest other 7.2 of Debian 12's own suites, and QEMU 10.0 of LU_NEW_QEMU_SUITE
#   .build/liveupdate-qemu-*.tar.gz   the collection artifact (ansible-galaxy collection build)
#   .build/collections/         that artifact installed (ANSIBLE_COLLECTIONS_PATH)
#   .build/sanity/              the copy that ansible-test sanity runs in
#   .build/env.sh               `source` it to get the environment the tests use

LU_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LU_VENV=$LU_ROOT/.venv
LU_CACHE=$LU_ROOT/.cache
LU_BUILD=$LU_ROOT/.build
LU_ENV_SH=$LU_BUILD/env.sh
LU_NAME=${LU_NAME:-$(basename "$0" .sh)}
# Where the newer major QEMU for this release comes from: bookworm-backports carries QEMU 10.0
# built for Debian 12 (setup.sh stages it; demo.sh updates to it).
LU_NEW_QEMU_SUITE=bookworm-backports

# Directories that hold no Python we want: pyenv shims, for one, answer `python3.9` with an
# error instead of "not found", which confuses tools (ansible-test) that probe interpreters.
LU_SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1

log() { printf '[%s] %s\n' "$LU_NAME" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$LU_NAME" "$*" >&2
    exit 1
}

# "75s" -> "1m15s"
lu_fmt_duration() {
    local s=$1
    if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# Stages with timings. `lu_stage NAME CMD...` runs CMD in this shell (so it may set variables)
# under `set -e`: a failing CMD ends the script, and the EXIT trap that lu_stage installs
# records that stage as failed and prints the summary table. `lu_summary` prints it on demand.
LU_STAGE_NAMES=()
LU_STAGE_RESULTS=()
LU_STAGE_SECONDS=()
LU_CURRENT_STAGE=
LU_CURRENT_START=0
lu_stage() {
    LU_CURRENT_STAGE=$1
    shift
    trap lu_on_exit EXIT
    printf '\n==> %s: %s\n' "$LU_NAME" "$LU_CURRENT_STAGE" >&2
    LU_CURRENT_START=$(date +%s)
    "$@"
    lu_stage_done ok
}
lu_stage_done() {
    LU_STAGE_NAMES+=("$LU_CURRENT_STAGE")
    LU_STAGE_SECONDS+=($(($(date +%s) - LU_CURRENT_START)))
    LU_STAGE_RESULTS+=("$1")
    printf '<== %s: %s %s in %s\n' "$LU_NAME" "$LU_CURRENT_STAGE" "$1" \
        "$(lu_fmt_duration "${LU_STAGE_SECONDS[-1]}")" >&2
    LU_CURRENT_STAGE=
}
lu_on_exit() {
    local rc=$?
    if [[ -n $LU_CURRENT_STAGE ]]; then
        lu_stage_done "FAILED (exit $rc)"
        lu_summary >&2
    fi
    return "$rc"
}
lu_summary() {
    local i total=0
    printf '\n%s summary:\n' "$LU_NAME"
    for i in "${!LU_STAGE_NAMES[@]}"; do
        printf '  %-14s %-18s %8s\n' "${LU_STAGE_NAMES[$i]}" "${LU_STAGE_RESULTS[$i]}" \
            "$(lu_fmt_duration "${LU_STAGE_SECONDS[$i]}")"
        total=$((total + LU_STAGE_SECONDS[i]))
    done
    printf '  %-14s %-18s %8s\n' total '' "$(lu_fmt_duration "$total")"
}

# Source the environment scripts/setup.sh wrote.
lu_load_env() {
    [[ -r $LU_ENV_SH ]] || die "$LU_ENV_SH is missing: run scripts/setup.sh first"
    # shellcheck source=/dev/null
    source "$LU_ENV_SH"
}
