#!/usr/bin/env bash
# The main job on the local default fleet: prepare this machine (scripts/setup.sh), start the demo
# VMs on the older QEMU build (playbooks/demo.yml), then roll the operator's playbook
# (playbooks/live_update.yml) over them: it stages the newer build, live-updates every outdated VM,
# prints a line per VM with its guest pause and writes the rollout report.
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
ansible-playbook -i "$inventory" playbooks/demo.yml
exec ansible-playbook -i "$inventory" playbooks/live_update.yml "$@"
