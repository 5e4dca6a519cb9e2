# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Packaging, without VMs or a container engine: the collection tarball ships what its users need
and nothing else; the execution environment builds from execution-environment.yml as docs/awx.md
says (scripts/build-ee.sh, then the galaxy stage of the generated Containerfile run here, offline,
against the generated build context); AWX's project sync installs collections/requirements.yml.

Everything runs on a copy of the files git would ship, as a fresh clone has them. Ansible Galaxy is
pointed at a closed local port: nothing here may need a server."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
VENV_BIN = os.path.dirname(sys.executable)
DIGEST = 'sha256:' + '0123456789abcdef' * 4
# A fully qualified base image reference that names no registry (the build is never run here).
BASE_IMAGE = 'localhost:5000/liveupdate/ee-base@' + DIGEST

# What the tarball has at its top, and nothing else.
SHIPPED_TOP = {'COPYING', 'FILES.json', 'MANIFEST.json', 'README.md', 'changelogs', 'docs', 'meta',
               'playbooks', 'plugins', 'requirements.txt', 'roles'}


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tool_env(**extra):
    """The environment of the tools: this venv's first, no colour, no reachable Galaxy server, and
    not the installed collection of the other tests (ansible-galaxy would take it for installed)."""
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1',
               ANSIBLE_GALAXY_SERVER='http://127.0.0.1:%d/' % closed_port())
    env.pop('ANSIBLE_COLLECTIONS_PATH', None)
    env.pop('PYTHONPATH', None)
    env.update(extra)
    return env


def run(argv, cwd, env=None, expect=0):
    proc = subprocess.run(argv, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == expect, (argv, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def load_yaml(*path):
    with open(os.path.join(*path), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope='module')
def source_tree(tmp_path_factory):
    """The files git would ship (tracked, and untracked but not ignored), copied: a fresh clone."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split('\0')
    dest = tmp_path_factory.mktemp('project') / 'liveupdate-qemu'
    for name in files:
        source = os.path.join(ROOT, name)
        if name and os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(dest, name))
    return str(dest)


@pytest.fixture(scope='module')
def tarball(source_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    run(['ansible-galaxy', 'collection', 'build', '--output-path', str(out), source_tree], cwd=source_tree)
    version = load_yaml(source_tree, 'galaxy.yml')['version']
    path = out / ('liveupdate-qemu-%s.tar.gz' % version)
    assert path.is_file(), os.listdir(out)
    return str(path)


def test_tarball_ships_what_users_need(tarball, source_tree):
    with tarfile.open(tarball) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
    assert {m.split('/')[0] for m in members} == SHIPPED_TOP
    assert sorted(m for m in members if m.startswith('playbooks/')) == [
        'playbooks/clones.yml', 'playbooks/host_maintenance.yml', 'playbooks/live_update.yml']
    changelogs = sorted(m for m in members if m.startswith('changelogs/'))
    assert changelogs == ['changelogs/changelog.yaml', 'changelogs/config.yaml']
    assert not [m for m in members if '__pycache__' in m or m.endswith('.pyc')]
    # Everything the content needs is there: every plugin, role and meta file, every document.
    wanted = []
    for top in ('plugins', 'roles', 'meta', 'docs'):
        for dirpath, _dirs, names in os.walk(os.path.join(source_tree, top)):
            wanted.extend(os.path.relpath(os.path.join(dirpath, n), source_tree) for n in names
                          if not n.endswith('.pyc'))
    assert wanted and sorted(set(wanted) - set(members)) == []
    for module in ('live_update', 'vm', 'vm_info', 'qmp_command', 'migrate_capabilities', 'migrate_parameters',
                   'saved_vm', 'vm_template', 'vm_clone', 'rollout_report'):
        assert 'plugins/modules/%s.py' % module in members


def test_collection_metadata(tarball, source_tree):
    with tarfile.open(tarball) as tar:
        info = json.load(tar.extractfile('MANIFEST.json'))['collection_info']
    for key in ('repository', 'documentation', 'issues', 'homepage'):
        assert (info.get(key) or '').startswith('https://'), (key, info.get(key))
    assert info['authors'] and not [a for a in info['authors'] if 'UNKNOWN' in a.upper()], info['authors']
    # requires_ansible admits the ansible-core the tests run (requirements-dev.txt), and nothing older
    # than the 2.19 series.
    requires = SpecifierSet(load_yaml(source_tree, 'meta', 'runtime.yml')['requires_ansible'])
    tested = re.search(r'^ansible-core==(\S+)', open(os.path.join(source_tree, 'requirements-dev.txt')).read(), re.M)
    assert tested and requires.contains(tested.group(1)), (requires, tested)
    assert not requires.contains('2.18.99'), requires


def pins(path):
    """{name: version} of the exact pins of a requirements file; None for a requirement not pinned."""
    result = {}
    with open(path) as handle:
        for line in handle:
            line = line.split('#', 1)[0].strip()
            if line:
                name, _sep, version = line.partition('==')
                result[name.strip().lower()] = version.strip() or None
    return result


def test_python_requirements_pinned_alike(source_tree):
    """The modules' requirements have one version everywhere: on the hypervisor (requirements.txt,
    the hypervisor role), in the EE and in the test venv."""
    module_reqs = pins(os.path.join(source_tree, 'requirements.txt'))
    assert module_reqs and None not in module_reqs.values(), module_reqs
    role = load_yaml(source_tree, 'roles', 'hypervisor', 'defaults', 'main.yml')['hypervisor_python_requirements']
    role_reqs = dict((n.lower(), v) for n, _s, v in (r.partition('==') for r in role))
    ee_reqs = pins(os.path.join(source_tree, 'meta', 'ee-requirements.txt'))
    dev_reqs = pins(os.path.join(source_tree, 'requirements-dev.txt'))
    assert None not in ee_reqs.values() and None not in dev_reqs.values(), (ee_reqs, dev_reqs)
    for name, version in module_reqs.items():
        assert (role_reqs.get(name), ee_reqs.get(name), dev_reqs.get(name)) == (version,) * 3, name


@pytest.mark.parametrize('image, reason', [
    ('REGISTRY/NAMESPACE/IMAGE@sha256:DIGEST', 'no registry host'),  # the placeholder itself
    ('awx-ee:24.6.1', 'no registry host'),
    ('liveupdate/ee-base:1.0', 'no registry host'),
    ('localhost:5000/liveupdate/ee-base', 'neither a digest nor a tag'),
    ('localhost:5000/liveupdate/ee-base:latest', 'the tag latest pins nothing'),
    ('localhost:5000/liveupdate/ee-base@sha256:1234', 'is not a digest'),
    ('127.0.0.1:5000/Liveupdate/ee-base:1.0', 'is not a repository path'),
])
def test_build_ee_refuses_base_image(source_tree, image, reason):
    proc = run(['bash', 'scripts/build-ee.sh', '--create-only', image], cwd=source_tree, expect=1)
    assert reason in proc.stderr, proc.stderr
    assert not os.path.exists(os.path.join(source_tree, '.build', 'ee', 'context'))


def stage(containerfile, name):
    """The instructions of build stage ``name`` (FROM ... AS name up to the next FROM)."""
    lines, inside = [], False
    for line in containerfile.splitlines():
        if line.startswith('FROM '):
            inside = line.split()[-1] == name
        elif inside and line.strip():
            lines.append(line)
    assert lines, 'no stage %s' % name
    return lines


def test_execution_environment_builds(source_tree, tmp_path):
    proc = run(['bash', 'scripts/build-ee.sh', '--create-only', BASE_IMAGE, '--output-filename', 'Containerfile'],
               cwd=source_tree)
    assert 'pinned by a tag only' not in proc.stderr
    context = os.path.join(source_tree, '.build', 'ee', 'context')
    with open(os.path.join(context, 'Containerfile')) as handle:
        containerfile = handle.read()

    # The build arguments' defaults: the operator's base image, ansible-core and -runner pinned.
    args = dict(re.findall(r'^ARG (\w+)="(.*)"$', containerfile, re.M))
    assert args['EE_BASE_IMAGE'] == BASE_IMAGE
    refs = args['ANSIBLE_INSTALL_REFS'].split()
    assert sorted(r.split('==')[0] for r in refs) == ['ansible-core', 'ansible-runner'] and all('==' in r for r in refs)

    # The galaxy stage as the Containerfile has it: _build copied to /build, its RUNs from there.
    # Here /build is a copy of the context's _build, /usr/share/ansible a directory of this test,
    # and /output/scripts the context's scripts (the base stage copies them there).
    galaxy = stage(containerfile, 'galaxy')
    assert 'COPY _build /build' in galaxy and 'WORKDIR /build' in galaxy, galaxy
    build = tmp_path / 'build'
    shutil.copytree(os.path.join(context, '_build'), build)
    share = tmp_path / 'share'
    runs = [line[len('RUN '):] for line in galaxy if line.startswith('RUN ')]
    assert [r for r in runs if 'ansible-galaxy collection install' in r], runs
    env = tool_env(**dict((k, v) for k, v in args.items() if k.startswith('ANSIBLE_GALAXY_CLI')))
    for command in runs:
        command = command.replace('/usr/share/ansible', str(share)).replace(
            '/output/scripts', os.path.join(context, '_build', 'scripts'))
        run(['bash', '-ec', command], cwd=str(build), env=env)

    installed = share / 'collections' / 'ansible_collections' / 'liveupdate' / 'qemu'
    with open(installed / 'MANIFEST.json') as handle:
        assert json.load(handle)['collection_info']['version'] == load_yaml(source_tree, 'galaxy.yml')['version']
    assert (installed / 'playbooks' / 'live_update.yml').is_file()

    # The builder stage reads the installed collection's meta/execution-environment.yml: every
    # Python requirement is pinned.
    assert [line for line in stage(containerfile, 'builder') if 'introspect.py introspect' in line]
    proc = run([sys.executable, os.path.join(context, '_build', 'scripts', 'introspect.py'), 'introspect',
                str(share / 'collections')], cwd=str(tmp_path))
    deps = yaml.safe_load(proc.stdout)
    python = [re.sub(r'\s*#.*', '', r) for r in deps['python']]
    assert 'qemu.qmp==0.0.6' in python and all('==' in r for r in python), python
    assert any(r.startswith('openssh-client') for r in deps['system']), deps['system']

    # The EE's ansible-playbook finds the rollout playbook and everything it uses.
    run(['ansible-playbook', '--syntax-check', '-i', 'localhost,', 'liveupdate.qemu.live_update'],
        cwd=str(tmp_path), env=tool_env(ANSIBLE_COLLECTIONS_PATH=str(share / 'collections')))


def test_awx_project_sync(source_tree, tmp_path):
    """AWX's project sync: from the project's checkout, ansible-galaxy collection install -r of
    collections/requirements.yml into the job's collections path."""
    dest = tmp_path / 'requirements_collections'
    run(['ansible-galaxy', 'collection', 'install', '-r', os.path.join(source_tree, 'collections', 'requirements.yml'),
         '--collections-path', str(dest)], cwd=source_tree, env=tool_env(ANSIBLE_COLLECTIONS_PATH=str(dest)))
    installed = dest / 'ansible_collections' / 'liveupdate' / 'qemu'
    assert (installed / 'playbooks' / 'live_update.yml').is_file()
    assert (installed / 'roles' / 'hypervisor' / 'tasks' / 'main.yml').is_file()
    assert not (installed / 'tests').exists() and not (installed / 'playbooks' / 'demo.yml').exists()
