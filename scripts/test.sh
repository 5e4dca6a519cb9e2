#!/usr/bin/env bash
# Run every test of the collection, in order, stopping at the first failure:
#
#   setup        scripts/setup.sh (packages, .venv, test guest, old QEMU, built + installed collection)
#   lint         ansible-lint, production profile (.ansible-lint)
#   sanity       ansible-test sanity --venv, in a copy of the tree laid out as
#                ansible_collections/liveupdate/qemu (.build/sanity)
#   unit         pytest tests/unit
#   integration  pytest tests/integration: real QEMU guests under TCG, real ansible-playbook
#   molecule     molecule test (molecule/default): the fleet rollout on three test hypervisors,
#                each in namespaces of its own and reached over SSH, two guests on each
#
# Usage: scripts/test.sh [STAGE...]   (default: all; setup always runs first)
#
# A pytest run that collects no test (exit 5) fails its stage: an empty suite is a broken suite.
# docs/testing.md describes each stage and the sanity tests that cannot run here.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LU_ROOT"

ALL_STAGES=(lint sanity unit integration molecule)
# ansible-test runs the sanity tests with the venv's Python (Debian 12's python3: 3.11).
# Other versions the compile and import sanity tests run on too, when a real interpreter of that
# version is at hand (pyenv's, on the machines of this project). Debian 12 has 3.11 only.
SANITY_EXTRA_PYTHONS=(3.9 3.10 3.12 3.13)

stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=("${ALL_STAGES[@]}")
for s in "${stages[@]}"; do
    [[ " ${ALL_STAGES[*]} " == *" $s "* ]] || die "unknown stage '$s' (stages: ${ALL_STAGES[*]})"
done
wanted() { [[ " ${stages[*]} " == *" $1 "* ]]; }

run_setup() {
    bash scripts/setup.sh
    lu_load_env
}

run_lint() {
    # ANSIBLE_COLLECTIONS_PATH (from .build/env.sh) lets the syntax check resolve this
    # collection's modules from the installed artifact; offline mode installs nothing.
    ansible-lint --nocolor
}

# The files git would ship (tracked, and untracked but not ignored) that exist.
shipped_files() {
    git ls-files -co --exclude-standard -z |
        while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done
}

# ansible-test bootstraps pip in each virtual environment it makes with a get-pip.py that it
# downloads from a file host of the Ansible project, which these machines cannot reach, and caches in
# ~/.ansible/test/cache/get_pip_<version>.py. Put a stand-in there that does the same job from the
# interpreter's own ensurepip and PyPI: pip install --upgrade --force-reinstall of the packages
# asked for (ansible-test's pinned pip), honouring get-pip's --no-setuptools and --no-wheel.
# A real get-pip.py already in the cache is left alone.
GET_PIP_MARK='# liveupdate.qemu stand-in for get-pip.py'
provide_get_pip() {
    local version cache
    version=$(python -c 'import types
from ansible_test._internal.python_requirements import get_venv_packages
import sys
print(get_venv_packages(types.SimpleNamespace(version="%d.%d" % sys.version_info[:2]))["pip"])')
    cache=$HOME/.ansible/test/cache/get_pip_${version//./_}.py
    if [[ -f $cache ]] && ! grep -qF "$GET_PIP_MARK" "$cache"; then
        log "sanity: using the cached get-pip.py $cache"
        return
    fi
    mkdir -p "$(dirname "$cache")"
    rm -f "$cache.download"
    cat >"$cache.tmp" <<EOF
$GET_PIP_MARK (scripts/test.sh), for pip $version.
import subprocess
import sys

if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--upgrade', '--force-reinstall'] + args)
    if '--no-setuptools' in sys.argv[1:]:
        # ensurepip of Python < 3.12 brings setuptools as well; get-pip.py would not.
        subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '--yes', '--quiet', 'setuptools'])
EOF
    mv "$cache.tmp" "$cache"
}

run_sanity() {
    local top=$LU_BUILD/sanity dest
    dest=$top/ansible_collections/liveupdate/qemu
    # ansible-test needs the collection at .../ansible_collections/NAMESPACE/NAME. A fresh copy
    # each run: no stale files, no output of an earlier run.
    rm -rf "$top"
    mkdir -p "$dest"
    shipped_files | rsync -a --from0 --files-from=- ./ "$dest/"
    # A git work tree of its own, so that ansible-test takes its file list from git (and the
    # copied .gitignore) rather than from everything on disk; nothing needs committing.
    git -C "$dest" init -q
    provide_get_pip
    log "sanity: $(find "$dest" -type f -not -path '*/.git/*' | wc -l) files in ${dest#"$LU_ROOT"/}"
    # The PATH is .venv, the system's, then the bin directories of the extra interpreters found:
    # pyenv's shims (python3.9, ...) exist on PATH but do not run, and ansible-test would take
    # them for interpreters.
    local path=$LU_VENV/bin:$LU_SYSTEM_PATH v bin found=()
    for v in "${SANITY_EXTRA_PYTHONS[@]}"; do
        for bin in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin; do
            if [[ -x $bin/python$v ]] && "$bin/python$v" -c 'import venv, ensurepip' 2>/dev/null; then
                path+=:$bin
                found+=("$v")
                break
            fi
        done
    done
    log "sanity: Python $(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')${found[*]:+, and ${found[*]} for compile and import}"
    # --venv: every test gets the pinned requirements of ansible-test in a virtual environment
    # of its own (cached in ~/.ansible/test/venv), no Docker. No --python: the multi-version
    # tests (compile, import) run on every supported version found on PATH, the others on the
    # venv's Python. PYTHONPATH and ANSIBLE_COLLECTIONS_PATH would point at the installed
    # artifact instead of the copy under test.
    (
        cd "$dest"
        env -u PYTHONPATH -u ANSIBLE_COLLECTIONS_PATH PATH="$path" ansible-test sanity --venv --color no
    )
}

run_pytest() {
    local dir=$1 rc=0
    shift
    python -m pytest -p no:cacheprovider -ra "$@" "$dir" || rc=$?
    if ((rc == 5)); then
        log "ERROR: pytest collected no test in $dir (exit 5). The suite must not be empty."
    fi
    return "$rc"
}

# molecule/default, every step of `molecule test` (destroy, syntax, create, prepare, check,
# converge, idempotence, side_effect, verify, destroy). Its hosts are destroyed whether it passes or fails.
run_molecule() {
    NO_COLOR=1 ANSIBLE_NOCOLOR=1 molecule test
}

total_start=$(date +%s)
lu_stage setup run_setup
if wanted lint; then lu_stage lint run_lint; fi
if wanted sanity; then lu_stage sanity run_sanity; fi
if wanted unit; then lu_stage unit run_pytest tests/unit; fi
# --durations: the slowest tests, to keep an eye on the CI budget (90 min on 2 cores).
if wanted integration; then lu_stage integration run_pytest tests/integration --durations=15; fi
if wanted molecule; then lu_stage molecule run_molecule; fi
lu_summary
log "all stages passed in $(lu_fmt_duration $(($(date +%s) - total_start)))"
