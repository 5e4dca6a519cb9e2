#!/usr/bin/env bash
# Build the controller's execution environment (execution-environment.yml, ansible-builder v3) on
# the base image the operator names. No base image is built in: the definition holds a placeholder,
# and this script puts the operator's image in, after checking that the reference is fully
# qualified (docs/awx.md).
#
# Usage: scripts/build-ee.sh [--create-only] BASE_IMAGE [ANSIBLE_BUILDER_BUILD_OPTION...]
#
#   BASE_IMAGE     REGISTRY/NAMESPACE/IMAGE@sha256:DIGEST (best: the exact image), or
#                  REGISTRY/NAMESPACE/IMAGE:TAG (a warning: a tag can be moved). REGISTRY is the
#                  registry's host, with a dot or a port, or localhost. Refused: no registry host,
#                  neither tag nor digest, the tag latest without a digest.
#   --create-only  `ansible-builder create`: the build context only, no container engine needed
#   options after BASE_IMAGE go to `ansible-builder build` (or create), for example
#                  -t liveupdate-qemu-ee:0.1.0 --container-runtime podman
#
#   1. builds the collection (ansible-galaxy collection build) into
#      .build/ee/liveupdate-qemu-VERSION.tar.gz, VERSION from galaxy.yml, which must be the
#      tarball execution-environment.yml installs;
#   2. writes .build/ee/execution-environment.yml: the definition with BASE_IMAGE and absolute paths;
#   3. runs ansible-builder create or build with it, the build context in .build/ee/context.
#
# Needs ansible-galaxy and ansible-builder on PATH (`source .build/env.sh` after scripts/setup.sh,
# or pip install the versions of requirements-dev.txt), and python3 with PyYAML.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LU_ROOT"

EE_DIR=$LU_BUILD/ee
DEFINITION=execution-environment.yml

usage() {
    sed -n '7,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The grammar of an image reference (the distribution project's reference grammar), in parts.
HOST_COMPONENT='([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])'
HOST_RE="^$HOST_COMPONENT(\\.$HOST_COMPONENT)*(:[0-9]+)?\$"
PATH_COMPONENT='[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*'
PATH_RE="^$PATH_COMPONENT(/$PATH_COMPONENT)*\$"
TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'
DIGEST_RE='^sha256:[a-f0-9]{64}$'

# Refuses (exit 1, saying why) a base image reference that is not fully qualified.
check_base_image() {
    local ref=$1 host rest tag='' digest=''
    [[ $ref == */* ]] ||
        die "base image '$ref' has no registry host: give REGISTRY/NAMESPACE/IMAGE@sha256:DIGEST"
    host=${ref%%/*}
    rest=${ref#*/}
    if [[ $rest == *@* ]]; then
        digest=${rest#*@}
        rest=${rest%%@*}
    fi
    if [[ ${rest##*/} == *:* ]]; then
        tag=${rest##*:}
        rest=${rest%:*}
    fi
    [[ ($host == *.* || $host == *:* || $host == localhost) && $host =~ $HOST_RE ]] ||
        die "base image '$ref' has no registry host ('$host' is not a host name with a dot or a port, nor localhost): give REGISTRY/NAMESPACE/IMAGE@sha256:DIGEST"
    [[ $rest =~ $PATH_RE ]] ||
        die "base image '$ref': '$rest' is not a repository path (lower-case components separated by /)"
    [[ -z $digest || $digest =~ $DIGEST_RE ]] ||
        die "base image '$ref': '$digest' is not a digest (sha256: and 64 lower-case hex digits)"
    [[ -z $tag || $tag =~ $TAG_RE ]] || die "base image '$ref': '$tag' is not a tag"
    [[ -n $tag || -n $digest ]] ||
        die "base image '$ref' has neither a digest nor a tag: give REGISTRY/NAMESPACE/IMAGE@sha256:DIGEST"
    [[ $tag != latest || -n $digest ]] ||
        die "base image '$ref': the tag latest pins nothing: give its digest (@sha256:DIGEST)"
    if [[ -z $digest ]]; then
        log "WARNING: base image '$ref' is pinned by a tag only; a digest (@sha256:DIGEST) pins the exact image"
    fi
}

# Writes the definition to build with ($2) from the repository's ($1): the base image ($3), and
# every relative path made absolute (ansible-builder reads them relative to the definition's
# directory). Refuses a definition that does not install the tarball of galaxy.yml's version ($4).
render_definition() {
    python3 - "$@" <<'PY'
import os
import sys

import yaml

source, target, image, tarball = sys.argv[1:]
root = os.path.dirname(os.path.abspath(source))
with open(source, encoding='utf-8') as f:
    definition = yaml.safe_load(f)


def absolute(path):
    return path if os.path.isabs(path) else os.path.join(root, path)


definition.setdefault('images', {}).setdefault('base_image', {})['name'] = image
dependencies = definition.get('dependencies', {})
for key in ('python', 'system', 'galaxy'):
    if isinstance(dependencies.get(key), str):
        dependencies[key] = absolute(dependencies[key])
files = definition.get('additional_build_files', [])
for entry in files:
    entry['src'] = absolute(entry['src'])

galaxy = dependencies.get('galaxy')
names = [c.get('name') for c in galaxy.get('collections', [])] if isinstance(galaxy, dict) else []
if 'collections/' + tarball not in names:
    sys.exit('%s: dependencies.galaxy does not install collections/%s (galaxy.yml\'s version); it has %s'
             % (source, tarball, ', '.join(map(str, names)) or 'nothing'))
if not any(os.path.basename(e['src']) == tarball and e.get('dest') == 'collections' for e in files):
    sys.exit('%s: additional_build_files does not copy %s into collections/' % (source, tarball))

with open(target, 'w', encoding='utf-8') as f:
    f.write('# Written by scripts/build-ee.sh from %s; do not edit.\n' % source)
    yaml.safe_dump(definition, f, default_flow_style=False, sort_keys=False)
PY
}

create_only=false
if [[ ${1:-} == --create-only ]]; then
    create_only=true
    shift
fi
[[ $# -ge 1 && $1 != -* ]] || usage
base_image=$1
shift
check_base_image "$base_image"

for tool in ansible-galaxy ansible-builder python3; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH (source .build/env.sh after scripts/setup.sh)"
done
python3 -c 'import yaml' 2>/dev/null || die "python3 has no PyYAML (source .build/env.sh after scripts/setup.sh)"

version=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' galaxy.yml)
tarball=liveupdate-qemu-$version.tar.gz

rm -rf "$EE_DIR"
mkdir -p "$EE_DIR"
log "collection: ansible-galaxy collection build into .build/ee"
ansible-galaxy collection build --force --output-path "$EE_DIR" . >&2
[[ -f $EE_DIR/$tarball ]] || die "ansible-galaxy collection build left no .build/ee/$tarball"

render_definition "$DEFINITION" "$EE_DIR/execution-environment.yml" "$base_image" "$tarball" ||
    die "$DEFINITION does not match galaxy.yml (see above)"
log "definition: .build/ee/execution-environment.yml on $base_image"

if $create_only; then
    ansible-builder create -f "$EE_DIR/execution-environment.yml" -c "$EE_DIR/context" "$@"
else
    ansible-builder build -f "$EE_DIR/execution-environment.yml" -c "$EE_DIR/context" "$@"
fi
log "build context: .build/ee/context"
