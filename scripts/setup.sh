#!/usr/bin/env bash
# Prepare this checkout for the demo and the tests, on Debian 12 as root. Idempotent: a second
# run changes nothing and takes a few seconds.
#
#   1. Debian packages (apt-get update only when a package is missing)
#   2. .venv from requirements-dev.txt (rebuilt when that file or the interpreter changes)
#   3. the test guest in .cache/guest (tools/build-guest.sh), and the Debian 12 guest with systemd and
#      nginx (tools/build-debian-guest.sh: debootstrap, cached outside the checkout by its inputs in
#      $LU_IMAGE_CACHE, default /var/cache/liveupdate-qemu; about a minute the first time)
#   4. an older QEMU 7.2 build staged in .cache/qemu (roles/qemu_build/files/stage-qemu.sh
#      --oldest: the oldest other 7.2 of Debian 12's own suites; when they have none, the
#      installed version itself, side by side)
#   5. QEMU 10.0 staged in .cache/qemu, the newest of bookworm-backports (stage-qemu.sh --suite,
#      which adds the suite to apt when missing); when the suite cannot be reached, a warning and
#      no QEMU 10.0 (the demo then updates between 7.2 builds)
#   6. the collection built with `ansible-galaxy collection build` into .build/, that tarball
#      installed into .build/collections, and `ansible-doc` run on every module of it
#   7. .build/env.sh, to `source` for PATH, ANSIBLE_COLLECTIONS_PATH, LIVEUPDATE_GUEST_DIR,
#      LIVEUPDATE_DEBIAN_GUEST_DIR,
#      LIVEUPDATE_OLD_QEMU, LIVEUPDATE_NEW_QEMU (empty without QEMU 10.0),
#      LIVEUPDATE_NEW_QEMU_VERSION and PYTHONPATH
#
# Environment:
#   LIVEUPDATE_PYTHON    interpreter for .venv (default /usr/bin/python3; must be >= 3.11)
#   LIVEUPDATE_OLD_QEMU, LIVEUPDATE_NEW_QEMU  only read when roles/qemu_build/files/stage-qemu.sh
#                        does not exist: the old and the new QEMU to use
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LU_ROOT"

DEB_PACKAGES=(
    qemu-system-x86 # the hypervisor the modules drive
    qemu-utils      # qemu-img
    passt           # user-mode networking that survives a live update (liveupdate.qemu.vm)
    busybox-static  # the test guest's userland (tools/build-guest.sh)
    cpio            # the guest's initramfs
    debootstrap e2fsprogs # the Debian guest (tools/build-debian-guest.sh)
    xz-utils        # unpacking .debs (tools/)
    python3 python3-venv python3-pip
    python3-packaging # ansible.builtin.pip in the hypervisor role (the molecule hosts cannot apt-get)
    git            # the file list of the sanity copy (scripts/test.sh)
    openssh-client # ansible's ssh connection for remote hypervisors
    openssh-server # the sshd of each molecule test host (molecule/default/testhosts.sh)
    rsync          # the sanity copy (scripts/test.sh)
    shellcheck     # ansible-test sanity's shellcheck test on scripts/ and tools/
    iproute2       # network namespaces and taps of the tap NIC test
    chromium       # the headless browser of the rollout report test (tests/integration/test_report_html.py)
)

missing_packages() {
    local pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) == 'ii ' ]] || printf '%s\n' "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "Debian packages: all present"
        return
    fi
    [[ $EUID -eq 0 ]] || die "missing Debian packages (${missing[*]}); run as root to install them"
    log "Debian packages: installing ${missing[*]}"
    # Refresh the lists first when there are none (a fresh machine), and once more when the
    # install fails on stale lists.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -q
    fi
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        log "apt-get install failed; refreshing the package lists and trying again"
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

make_venv() {
    local python=${LIVEUPDATE_PYTHON:-/usr/bin/python3} version stamp
    command -v "$python" >/dev/null || die "Python interpreter $python not found (set LIVEUPDATE_PYTHON)"
    version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$python is Python $version; ansible-core 2.19 needs Python >= 3.11 (set LIVEUPDATE_PYTHON)"
    "$python" -c 'import ensurepip, venv' 2>/dev/null ||
        die "$python cannot create virtual environments (on Debian: apt-get install python3-venv)"

    stamp="python=$(readlink -f "$(command -v "$python")") $version requirements=$(sha256sum requirements-dev.txt | cut -d' ' -f1)"
    if [[ -x $LU_VENV/bin/python && -r $LU_VENV/.setup-stamp && $(<"$LU_VENV/.setup-stamp") == "$stamp" ]] &&
        "$LU_VENV/bin/python" -c '' 2>/dev/null; then
        log ".venv: up to date (Python $version)"
        return
    fi
    log ".venv: creating with $python (Python $version) from requirements-dev.txt"
    rm -rf "$LU_VENV"
    "$python" -m venv "$LU_VENV"
    # -qq: this machine's pip configuration names local package indexes that may not exist, and
    # pip warns about each of them for every package; errors still show.
    "$LU_VENV/bin/python" -m pip install -qq -r requirements-dev.txt
    "$LU_VENV/bin/python" -m pip check
    printf '%s\n' "$stamp" >"$LU_VENV/.setup-stamp"
}

build_guest() {
    [[ -x tools/build-guest.sh ]] ||
        die "tools/build-guest.sh is missing or not executable: the test guest cannot be built"
    log "test guest: tools/build-guest.sh .cache/guest"
    tools/build-guest.sh "$LU_CACHE/guest"
    local f
    for f in vmlinuz vmlinux initramfs.gz guest.json; do
        [[ -s $LU_CACHE/guest/$f ]] || die "tools/build-guest.sh left no $LU_CACHE/guest/$f"
    done
    GUEST_DIR=$LU_CACHE/guest
}

build_debian_guest() {
    local json
    json=$(tools/build-debian-guest.sh | tail -n 1)
    [[ -s $json ]] || die "tools/build-debian-guest.sh printed no guest.json ($json)"
    DEBIAN_GUEST_DIR=$(dirname "$json")
    log "Debian guest: $DEBIAN_GUEST_DIR"
}

STAGE_QEMU=roles/qemu_build/files/stage-qemu.sh

# The wrapper stage-qemu.sh printed last (its output: $1).
staged_wrapper() {
    local wrapper
    wrapper=$(printf '%s\n' "$1" | awk 'NF { last = $0 } END { print last }')
    [[ -n $wrapper && -x $wrapper ]] ||
        die "$STAGE_QEMU printed no executable wrapper path (its output: ${1:-nothing})"
    printf '%s\n' "$wrapper"
}

stage_old_qemu() {
    if [[ ! -e $STAGE_QEMU ]]; then
        if [[ -n ${LIVEUPDATE_OLD_QEMU:-} && -x ${LIVEUPDATE_OLD_QEMU:-} ]]; then
            log "WARNING: $STAGE_QEMU does not exist; using LIVEUPDATE_OLD_QEMU=$LIVEUPDATE_OLD_QEMU from the environment"
            OLD_QEMU=$LIVEUPDATE_OLD_QEMU
            return
        fi
        die "$STAGE_QEMU does not exist: the old QEMU build cannot be staged (or set LIVEUPDATE_OLD_QEMU to an executable QEMU)"
    fi
    log "old QEMU: $STAGE_QEMU --oldest .cache/qemu"
    local out rc=0 installed
    out=$(bash "$STAGE_QEMU" --oldest "$LU_CACHE/qemu") || rc=$?
    if ((rc == 3)); then
        # Debian 12's suites carry one 7.2 build only, the installed one: a second copy of it, so
        # that the tests still have another binary to move VMs between. It is the same version,
        # so vm_info does not count a VM on it as outdated against /usr/bin.
        installed=$(dpkg-query -W -f='${Version}' qemu-system-x86)
        log "WARNING: Debian 12's suites have no 7.2 build but the installed $installed; staging that one side by side as the old QEMU"
        out=$(bash "$STAGE_QEMU" "$installed" "$LU_CACHE/qemu/$(bash "$STAGE_QEMU" --safe-name "$installed")")
    elif ((rc != 0)); then
        die "$STAGE_QEMU --oldest failed (exit $rc, see above)"
    fi
    OLD_QEMU=$(staged_wrapper "$out")
    "$OLD_QEMU" --version | head -n1 | sed 's/^/[setup] old QEMU: /' >&2
}

# A field of stage-qemu.sh's --resolve JSON on stdin.
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1" 2>/dev/null || true
}

stage_new_qemu() {
    NEW_QEMU='' NEW_QEMU_VERSION='' NEW_QEMU_MISSING=''
    if [[ ! -e $STAGE_QEMU ]]; then
        NEW_QEMU=${LIVEUPDATE_NEW_QEMU:-} NEW_QEMU_VERSION=${LIVEUPDATE_NEW_QEMU_VERSION:-}
        NEW_QEMU_MISSING="$STAGE_QEMU does not exist"
        return
    fi
    log "new QEMU: $STAGE_QEMU --suite $LU_NEW_QEMU_SUITE --resolve latest"
    local json version out
    if ! json=$(bash "$STAGE_QEMU" --suite "$LU_NEW_QEMU_SUITE" --resolve latest); then
        NEW_QEMU_MISSING="$(json_field error <<<"$json")"
    else
        version=$(json_field version <<<"$json")
        log "new QEMU: $STAGE_QEMU $version .cache/qemu/$(json_field safe_name <<<"$json")"
        if out=$(bash "$STAGE_QEMU" "$version" "$LU_CACHE/qemu/$(json_field safe_name <<<"$json")"); then
            NEW_QEMU=$(staged_wrapper "$out")
            NEW_QEMU_VERSION=$version
            "$NEW_QEMU" --version | head -n1 | sed 's/^/[setup] new QEMU: /' >&2
            return
        fi
        NEW_QEMU_MISSING="staging $version failed (see above)"
    fi
    log "WARNING: no QEMU from $LU_NEW_QEMU_SUITE: ${NEW_QEMU_MISSING:-see above}. LIVEUPDATE_NEW_QEMU stays empty; the demo updates between 7.2 builds instead"
}

# sha256 over the names and contents of the files git would ship (tracked and untracked but not
# ignored), plus this script: the build is redone when any of them changes.
source_digest() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -co --exclude-standard -z |
            while IFS= read -r -d '' f; do [[ -f $f ]] && printf '%s\0' "$f"; done |
            sort -z | xargs -0 -r sha256sum
    else
        date +%s%N # not a git checkout: always rebuild
    fi
    sha256sum "${BASH_SOURCE[0]}" galaxy.yml
}

build_collection() {
    local digest stamp=$LU_BUILD/.collection-stamp tarball modules=() m
    export ANSIBLE_COLLECTIONS_PATH=$LU_BUILD/collections
    digest=$(source_digest | sha256sum | cut -d' ' -f1)
    if [[ -r $stamp && $(<"$stamp") == "$digest" && -d $ANSIBLE_COLLECTIONS_PATH/ansible_collections/liveupdate/qemu ]]; then
        log "collection: built and installed, sources unchanged"
        return
    fi
    rm -f "$stamp" "$LU_BUILD"/liveupdate-qemu-*.tar.gz
    mkdir -p "$LU_BUILD"
    log "collection: ansible-galaxy collection build"
    ansible-galaxy collection build --force --output-path "$LU_BUILD" .
    tarball=$(compgen -G "$LU_BUILD/liveupdate-qemu-*.tar.gz") || die "ansible-galaxy collection build left no tarball"
    log "collection: installing $(basename "$tarball") into .build/collections"
    rm -rf "$ANSIBLE_COLLECTIONS_PATH"
    ansible-galaxy collection install --offline --force -p "$ANSIBLE_COLLECTIONS_PATH" "$tarball"

    # Every module of the installed artifact must have documentation ansible-doc can render.
    for m in "$ANSIBLE_COLLECTIONS_PATH"/ansible_collections/liveupdate/qemu/plugins/modules/*.py; do
        modules+=("liveupdate.qemu.$(basename "$m" .py)")
    done
    [[ -f $ANSIBLE_COLLECTIONS_PATH/ansible_collections/liveupdate/qemu/plugins/modules/vm.py ]] ||
        die "the installed collection has no module vm"
    ansible-doc --json "${modules[@]}" >"$LU_BUILD/ansible-doc.json" ||
        die "ansible-doc cannot render the documentation of the installed collection (see above)"
    python - "$LU_BUILD/ansible-doc.json" "${modules[@]}" <<'PY' || die "ansible-doc: see above"
import json, sys
docs = json.load(open(sys.argv[1]))
missing = [m for m in sys.argv[2:] if not docs.get(m, {}).get('doc', {}).get('short_description')]
if missing:
    sys.exit('no documentation rendered for: %s' % ', '.join(missing))
PY
    rm -f "$LU_BUILD/ansible-doc.json"
    log "collection: ansible-doc renders ${modules[*]}"
    printf '%s\n' "$digest" >"$stamp"
}

write_env() {
    local tmp=$LU_ENV_SH.tmp
    cat >"$tmp" <<EOF
# Written by scripts/setup.sh; \`source .build/env.sh\` to use the environment of the tests.
case ":\$PATH:" in
*":$LU_VENV/bin:"*) ;;
*) export PATH="$LU_VENV/bin:\$PATH" ;;
esac
export VIRTUAL_ENV="$LU_VENV"
# The installed artifact of the collection (ansible-playbook, ansible-doc, integration tests).
export ANSIBLE_COLLECTIONS_PATH="$LU_BUILD/collections"
# The same tree on the Python path, for the unit tests' imports of ansible_collections.*.
export PYTHONPATH="$LU_BUILD/collections"
export LIVEUPDATE_GUEST_DIR="$GUEST_DIR"
# The Debian 12 guest (systemd, nginx), cached outside the checkout by its inputs.
export LIVEUPDATE_DEBIAN_GUEST_DIR="$DEBIAN_GUEST_DIR"
export LIVEUPDATE_OLD_QEMU="$OLD_QEMU"
# QEMU 10.0 from $LU_NEW_QEMU_SUITE, staged side by side, and its Debian version: both empty when
# the suite could not be reached.
export LIVEUPDATE_NEW_QEMU="$NEW_QEMU"
export LIVEUPDATE_NEW_QEMU_VERSION="$NEW_QEMU_VERSION"
EOF
    mv "$tmp" "$LU_ENV_SH"
    log "wrote .build/env.sh"
}

lu_stage packages install_packages
lu_stage venv make_venv
export PATH=$LU_VENV/bin:$PATH VIRTUAL_ENV=$LU_VENV
lu_stage guest build_guest
lu_stage debian-guest build_debian_guest
lu_stage old-qemu stage_old_qemu
lu_stage new-qemu stage_new_qemu
lu_stage collection build_collection
write_env
lu_summary
if [[ -z $NEW_QEMU ]]; then
    log "WARNING: no QEMU 10.0 ($LU_NEW_QEMU_SUITE: ${NEW_QEMU_MISSING:-not staged}); LIVEUPDATE_NEW_QEMU is empty"
fi
