#!/usr/bin/env bash
# The demo: prepare this machine (scripts/setup.sh), then run playbooks/demo.yml against the
# local hypervisor with the collection as built and installed by setup.
# Extra arguments go to ansible-playbook (e.g. -v, -e name=value).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LU_ROOT"

bash scripts/setup.sh
lu_load_env
[[ -f playbooks/demo.yml ]] || die "playbooks/demo.yml does not exist"
exec ansible-playbook -i playbooks/inventory/local.yml playbooks/demo.yml "$@"
