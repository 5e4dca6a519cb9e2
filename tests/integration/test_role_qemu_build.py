# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role liveupdate.qemu.qemu_build on localhost, through ansible-playbook: the newest and the
oldest qemu-system-x86 of Debian 12's own suites staged side by side (deb_prefix, .debs downloaded
on the "controller") in check mode (changed, nothing written), for real (changed) and again (not
changed); the staged wrappers run their own build; method path on the installed QEMU, method
package in check mode only (the installed QEMU is never changed); preflight errors. Then
qemu_build_suite: QEMU 10.0 of bookworm-backports with that suite's apt source and lists gone
(the role adds the source back and resolves; the prefix setup.sh staged is reused), and stale
lists (a version only in a suite whose list was removed: stage-qemu.sh refreshes them once).

The controller's .deb cache is kept in .cache/qemu-debs of the checkout (one bundle per version,
content fixed by the version), so that only the first run downloads."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
STAGE = os.path.join(ROOT, 'roles', 'qemu_build', 'files', 'stage-qemu.sh')
DEB_CACHE = os.path.join(ROOT, '.cache', 'qemu-debs')
SYSTEM_QEMU = '/usr/bin/qemu-system-x86_64'
SUITE = 'bookworm-backports'
SUITE_SOURCES = '/etc/apt/sources.list.d/liveupdate-qemu-%s.sources' % SUITE
APT_LISTS = '/var/lib/apt/lists'
VERSION_RE = re.compile(r'version\s+(\d+\.\d+\.\d+)\s*(?:\((.*)\))?')


def archive_versions():
    out = subprocess.run(['bash', STAGE, '--list'], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def own_versions():
    """Debian 12's own builds (7.2) of the archive: backports' versions carry ~bpo."""
    return [v for v in archive_versions() if '~bpo' not in v]


def installed_version(package):
    return subprocess.run(['dpkg-query', '-W', '-f=${Version}', package],
                          capture_output=True, text=True, check=False).stdout.strip()


def binary_version(path):
    """{'version', 'package'} as the role (and vm_info) read them from ``--version``."""
    out = subprocess.run([path, '--version'], capture_output=True, text=True, check=True, timeout=30).stdout
    match = VERSION_RE.search(out)
    assert match, out
    return {'version': match.group(1), 'package': (match.group(2) or '').strip() or None}


def role_changed(run):
    """Tasks the play changed, less the harness's own `save results` copy (always changed)."""
    match = re.search(r'^localhost\s*:.*\bchanged=(\d+)', run.stdout, re.M)
    assert match, run.stdout
    return int(match.group(1)) - 1


def safe_name(version):
    return version.replace(':', '_')


def role(**role_vars):
    return {'name': 'qemu_build %s' % role_vars.get('qemu_build_version', role_vars.get('qemu_build_method')),
            'ansible.builtin.include_role': {'name': 'liveupdate.qemu.qemu_build'}, 'vars': role_vars}


FACTS = {'name': 'facts', 'ansible.builtin.debug': {
    'msg': {'binary': '{{ qemu_build_binary }}', 'info': '{{ qemu_build_version_info }}'}}}


def facts_of(run):
    """The FACTS results of a run, in order."""
    return [r['msg'] for r in run.results if isinstance(r.get('msg'), dict) and 'binary' in r['msg']]


def cache_listing():
    return sorted(os.listdir(DEB_CACHE)) if os.path.isdir(DEB_CACHE) else []


@pytest.fixture(scope='module')
def versions():
    found = own_versions()
    if len(found) < 2:
        pytest.skip('Debian 12\'s suites have fewer than two versions of qemu-system-x86: %s' % found)
    return {'newest': found[-1], 'oldest': found[0]}


@pytest.fixture(scope='module')
def system_qemu(versions):
    """The installed QEMU: its version, and another version of the archive."""
    installed = installed_version('qemu-system-x86')
    other = versions['oldest'] if installed == versions['newest'] else versions['newest']
    return {'installed': installed, 'other': other, 'info': binary_version(SYSTEM_QEMU)}


@pytest.fixture(scope='module')
def runs(ansible, versions, system_qemu, tmp_path_factory):
    """The same deb_prefix tasks in check mode, for real and again: the newest version by name,
    the oldest by the keyword `oldest`. Check mode also asks method package for the other
    version (reported, not done: the installed QEMU is never changed); the second run adds
    method path on the installed binary."""
    prefix_root = str(tmp_path_factory.mktemp('qemu-build') / 'prefix')
    common = {'qemu_build_prefix_root': prefix_root, 'qemu_build_controller_cache': DEB_CACHE}
    tasks = [role(qemu_build_version=versions['newest'], **common), FACTS,
             role(qemu_build_version='oldest', **common), FACTS]
    package_check = [role(qemu_build_method='package', qemu_build_version=system_qemu['other']), FACTS]
    cache_before = cache_listing()
    check = ansible.play(tasks + package_check, check=True, module_defaults=False)
    written = {'prefix_root': os.path.exists(prefix_root), 'cache': cache_listing() != cache_before,
               'installed': installed_version('qemu-system-x86')}
    real = ansible.play(tasks, module_defaults=False)
    again = ansible.play(tasks + [role(qemu_build_method='path', qemu_build_binary_path=SYSTEM_QEMU), FACTS],
                         module_defaults=False)
    return {'prefix_root': prefix_root, 'check': check, 'written_by_check': written, 'real': real, 'again': again}


def wrapper(prefix_root, version):
    return os.path.join(prefix_root, safe_name(version), 'bin', 'qemu-system-x86_64')


def test_check_mode_reports_changes_and_writes_nothing(runs, versions, system_qemu):
    check = runs['check']
    assert check.rc == 0, check.stdout
    assert role_changed(check) >= 2, check.stdout
    assert runs['written_by_check'] == {'prefix_root': False, 'cache': False, 'installed': system_qemu['installed']}
    # The facts name the paths the real run will use; there is no upstream version to read yet.
    expected = [{'binary': wrapper(runs['prefix_root'], v), 'info': {'version': None, 'package': 'Debian %s' % v}}
                for v in (versions['newest'], versions['oldest'])]
    # Method package, another version: the apt task reports the change, the facts what will be.
    expected.append({'binary': SYSTEM_QEMU, 'info': {'version': None, 'package': 'Debian %s' % system_qemu['other']}})
    assert facts_of(check) == expected


def test_real_run_stages_both_builds(runs, versions):
    real = runs['real']
    assert real.rc == 0, real.stdout
    assert role_changed(real) >= 2, real.stdout
    facts = facts_of(real)
    for fact, version in zip(facts, (versions['newest'], versions['oldest'])):
        path = wrapper(runs['prefix_root'], version)
        assert fact['binary'] == path
        # The wrapper runs the prefix's own build, which reports the package version asked for.
        assert binary_version(path) == fact['info']
        assert fact['info']['package'] == 'Debian %s' % version
        with open(os.path.join(runs['prefix_root'], safe_name(version), '.staged-version')) as handle:
            assert handle.read().strip() == version
    assert len(facts) == 2
    # Nothing but the two prefixes (and their lock files) is left in the prefix root.
    assert sorted(e for e in os.listdir(runs['prefix_root']) if not e.endswith('.lock')) == sorted(
        safe_name(v) for v in versions.values())


def test_second_run_changes_nothing(runs, system_qemu):
    """With method path on the installed binary: verified, nothing changed, its facts."""
    again = runs['again']
    assert again.rc == 0, again.stdout
    assert role_changed(again) == 0, again.stdout
    facts = facts_of(again)
    assert facts[:2] == facts_of(runs['real'])
    assert facts[2:] == [{'binary': SYSTEM_QEMU, 'info': system_qemu['info']}]


CASE_TASKS = """\
- name: One preflight case
  block:
    - name: Run the role
      ansible.builtin.include_role:
        name: liveupdate.qemu.qemu_build
      vars:
        qemu_build_method: "{{ case.method | default('deb_prefix') }}"
        qemu_build_version: "{{ case.version | default('') }}"
        qemu_build_binary_path: "{{ case.binary_path | default('') }}"
        qemu_build_prefix_root: "{{ case.prefix_root | default(prefix_root) }}"
        qemu_build_controller_cache: "{{ cache }}"
    - name: No error
      ansible.builtin.set_fact:
        case_errors: "{{ case_errors | default([]) + [''] }}"
  rescue:
    - name: Keep the error
      ansible.builtin.set_fact:
        case_errors: "{{ case_errors | default([]) + [ansible_failed_result.msg] }}"
"""


def test_preflight_errors(ansible, versions, system_qemu, tmp_path):
    case_file = tmp_path / 'case.yml'
    case_file.write_text(CASE_TASKS)
    not_executable = tmp_path / 'not-executable'
    not_executable.write_text('#!/bin/sh\n')
    not_executable.chmod(0o644)
    prefix_root = str(tmp_path / 'prefix')
    other = system_qemu['other']
    archive = ', '.join(archive_versions())  # every version, not only the two the other tests use
    cases = [
        ({}, 'qemu_build_method deb_prefix needs qemu_build_version: a version of qemu-system-x86 that the '
             'archive of the controller has (%s), or latest / oldest.' % archive),
        ({'version': '1:0.0-nope'}, 'qemu-system-x86 1:0.0-nope is not in the archive. The archive of the '
                                    'controller has these versions of qemu-system-x86: %s.' % archive),
        ({'version': 'latest', 'prefix_root': 'relative/dir'}, 'needs qemu_build_prefix_root, an absolute directory'),
        ({'method': 'path'}, 'qemu_build_method path needs qemu_build_binary_path'),
        ({'method': 'path', 'binary_path': str(not_executable)}, '%s is not executable' % not_executable),
        ({'method': 'path', 'binary_path': '/bin/true'}, '/bin/true --version on localhost prints no QEMU version'),
        ({'method': 'path', 'binary_path': SYSTEM_QEMU, 'version': other}, 'not %s.' % other),
        ({'method': 'bogus'}, 'value of qemu_build_method must be one of: deb_prefix, package, path, got: bogus'),
    ]
    run = ansible.play([
        {'name': 'cases', 'ansible.builtin.include_tasks': str(case_file), 'loop': [case for case, expected in cases],
         'loop_control': {'loop_var': 'case'}, 'vars': {'prefix_root': prefix_root, 'cache': DEB_CACHE}},
        {'name': 'errors', 'ansible.builtin.debug': {'var': 'case_errors'}},
    ], module_defaults=False)
    errors = run.results[-1]['case_errors']
    assert len(errors) == len(cases), run.stdout
    for (case, expected), error in zip(cases, errors):
        assert expected in error, (case, error)
    # The failed cases staged nothing.
    assert not os.path.exists(prefix_root)


def suite_lists(suite):
    return glob.glob(os.path.join(APT_LISTS, '*_dists_%s_*' % suite))


def apt_targets(field, release):
    """A field of apt's index targets (apt-get indextargets) of the suite RELEASE, configured ones."""
    out = subprocess.run(['apt-get', 'indextargets', '--no-release-info', '--format', '$(%s)' % field,
                          'Release: %s' % release, 'Created-By: Packages'],
                         capture_output=True, text=True, check=True).stdout
    return set(line for line in out.splitlines() if line)


@contextlib.contextmanager
def moved_away(paths, store, replace=()):
    """Move PATHS into STORE for the block, then put back each one that is not there again; those
    in REPLACE also when the block made them anew (the original goes back)."""
    os.makedirs(store, exist_ok=True)
    moved = []
    for path in paths:
        shutil.move(path, os.path.join(store, os.path.basename(path)))
        moved.append(path)
    try:
        yield
    finally:
        for path in moved:
            if path in replace or not os.path.exists(path):
                shutil.move(os.path.join(store, os.path.basename(path)), path)


def resolve(*args):
    run = subprocess.run(['bash', STAGE] + list(args), capture_output=True, text=True, check=False, timeout=300)
    return run, json.loads(run.stdout)


def test_suite_without_source_is_added_and_staged(ansible, new_qemu, new_qemu_version, tmp_path):
    """A fresh machine: no apt source for bookworm-backports and no lists of it. The role adds
    the source (the mirror and keyring of the bookworm entry), refreshes it alone, resolves
    `latest` to QEMU 10.0, and finds it staged already in the prefix root setup.sh uses."""
    entries = apt_targets('SOURCESENTRY', SUITE)
    if not entries or any(not e.startswith(SUITE_SOURCES + ':') for e in entries):
        pytest.skip('%s is configured outside %s: %s' % (SUITE, SUITE_SOURCES, sorted(entries)))
    codename_uris = set(u.rstrip('/') for u in apt_targets('REPO_URI', 'bookworm'))
    prefix = os.path.dirname(os.path.dirname(new_qemu))
    with moved_away([SUITE_SOURCES] + suite_lists(SUITE), str(tmp_path / 'apt'), replace=[SUITE_SOURCES]):
        assert not os.path.exists(SUITE_SOURCES) and suite_lists(SUITE) == []
        run = ansible.play([role(qemu_build_suite=SUITE, qemu_build_version='latest',
                                 qemu_build_prefix_root=os.path.dirname(prefix),
                                 qemu_build_controller_cache=DEB_CACHE), FACTS], module_defaults=False)
        with open(SUITE_SOURCES) as handle:
            written = handle.read()
        lists = suite_lists(SUITE)
        again, resolved = resolve('--suite', SUITE, '--resolve', 'latest')
    assert run.rc == 0, run.stdout
    # The version is staged already (setup.sh's prefix): nothing to download or unpack.
    assert role_changed(run) == 0, run.stdout
    assert facts_of(run) == [{'binary': new_qemu,
                              'info': {'version': binary_version(new_qemu)['version'],
                                       'package': 'Debian %s' % new_qemu_version}}]
    assert facts_of(run)[0]['info']['version'].startswith('10.0.')
    fields = dict(line.split(': ', 1) for line in written.splitlines() if ': ' in line and not line.startswith('#'))
    assert fields['Suites'] == SUITE and fields['Types'] == 'deb', written
    assert fields['URIs'].rstrip('/') in codename_uris, (written, codename_uris)
    assert 'main' in fields['Components'].split(), written
    assert lists, 'no package list of %s after the role' % SUITE
    # The JSON of --resolve names the suite and lists that suite's versions only.
    assert again.returncode == 0, again.stderr
    expected = (SUITE, new_qemu_version, [new_qemu_version])
    assert (resolved['suite'], resolved['version'], resolved['archive']) == expected, resolved


def test_stale_lists_are_refreshed_once(new_qemu_version, tmp_path):
    """A version only in a suite whose package list is gone (stale lists of a fresh machine):
    --resolve without --suite runs apt-get update once and finds it."""
    lists = suite_lists(SUITE)
    if not any('_Packages' in p for p in lists):
        pytest.skip('apt has no package list of %s' % SUITE)
    with moved_away(lists, str(tmp_path / 'lists')):
        run, resolved = resolve('--resolve', new_qemu_version)
        refreshed = [p for p in suite_lists(SUITE) if '_Packages' in p]
    assert run.returncode == 0, run.stderr
    assert 'running apt-get update and looking again' in run.stderr
    assert resolved['version'] == new_qemu_version and resolved['suite'] == '', resolved
    assert refreshed, 'apt-get update fetched no list of %s' % SUITE
