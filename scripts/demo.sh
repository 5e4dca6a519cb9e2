#!/usr/bin/env bash
# The main job on the local default fleet: prepare this machine (scripts/setup.sh), start the demo
# VMs (playbooks/demo.yml), then roll the operator's playbook (playbooks/live_update.yml) over them:
# it stages the target build, live-updates every outdated VM, prints a line per VM with its guest
# pause and writes the rollout report.
#
# Which update: when setup.sh staged QEMU 10.0 from bookworm-backports (LIVEUPDATE_NEW_QEMU), a
# major upgrade - the VMs start on Debian 12's own QEMU 7.2 (/usr/bin/qemu-system-x86_64) and the
# rollout stages the newest QEMU of that suite and moves them onto it. When the suite could not be
# reached, the same-major fallback - the VMs start on the older 7.2 build of .cache/qemu
# (LIVEUPDATE_OLD_QEMU) and move onto the installed 7.2. Both playbooks get the choice with -e.
#
# Usage: scripts/demo.sh [stop] [arguments of the rollout's ansible-playbook, e.g. -v or --check]
#   stop   stops the demo VMs and removes their files.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LU_ROOT"

bash scripts/setup.sh
lu_load_env
inventory=playbooks/inventory/local.yml
if [[ ${1:-} == stop ]]; then
    shift
    exec ansible-playbook -i "$inventory" playbooks/demo.yml -e demo_state=stopped "$@"
fi
if [[ -n ${LIVEUPDATE_NEW_QEMU:-} ]]; then
    log "demo: Debian 12's QEMU 7.2 -> QEMU 10.0 of $LU_NEW_QEMU_SUITE ($LIVEUPDATE_NEW_QEMU_VERSION), a major upgrade"
    fleet=(-e demo_upgrade=major -e "demo_suite=$LU_NEW_QEMU_SUITE")
    rollout=(-e "qemu_build_suite=$LU_NEW_QEMU_SUITE" -e qemu_build_version=latest)
else
    log "WARNING: demo: no QEMU 10.0 (setup.sh could not stage it from $LU_NEW_QEMU_SUITE); falling back to an older 7.2 build -> the installed 7.2"
    fleet=(-e demo_upgrade=fallback -e "demo_suite=$LU_NEW_QEMU_SUITE")
    # The installed binary itself: nothing to download, so the fallback works offline too.
    rollout=(-e qemu_build_suite= -e qemu_build_method=path -e qemu_build_binary_path=/usr/bin/qemu-system-x86_64
        -e "qemu_build_version=$(dpkg-query -W -f='${Version}' qemu-system-x86)")
fi
ansible-playbook -i "$inventory" playbooks/demo.yml "${fleet[@]}"
exec ansible-playbook -i "$inventory" playbooks/live_update.yml "${rollout[@]}" "$@"
