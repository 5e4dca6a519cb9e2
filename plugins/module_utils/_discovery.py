# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM discovery: every QEMU process on the host, what it runs, and whether it
can be live-updated by moving device state only (x-ignore-shared)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._migration_settings import query_capabilities
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import filesystem_of, qemu_processes
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths

VERSION_RE = re.compile(r'version\s+(\d+\.\d+\.\d+)\s*(?:\((.*)\))?')
UPDATABLE_STATES = ('running', 'paused')
IDLE_MIGRATION_STATES = ('none', 'completed', 'failed', 'cancelled')
# Before 9.0 a source under TCG can lose guest writes while it copies RAM (QEMU commit "physmem: Fix
# migration dirty bitmap coherency with TCG memory access"); seen here as guests corrupted by full copies.
TCG_FULL_COPY_SAFE_FROM = (9, 0)


def normalize_package(package):
    """' (Debian 1:7.2+dfsg-7)' and 'Debian 1:7.2+dfsg-7' are the same package string."""
    return (package or '').strip().strip('()').strip() or None


def binary_version(path, cache=None):
    """{'path', 'version', 'package'} of a QEMU binary from ``--version`` (None if it cannot run)."""
    if cache is not None and path in cache:
        return cache[path]
    info = None
    try:
        out = subprocess.run([path, '--version'], capture_output=True, text=True, timeout=30, check=False).stdout
        match = VERSION_RE.search(out)
        if match:
            info = dict(path=path, version=match.group(1), package=normalize_package(match.group(2)))
    except (OSError, subprocess.SubprocessError):
        pass
    if cache is not None:
        cache[path] = info
    return info


def probe_binary(path, timeout=30):
    """Start ``path`` with no machine and ask it over QMP on stdio what it supports:
    {'path', 'version', 'package', 'capabilities': [...], 'machines': [...]}."""
    commands = [('qmp_capabilities', None), ('query-version', None), ('query-migrate-capabilities', None),
                ('query-machines', None), ('quit', None)]
    script = ''.join(json.dumps({'execute': c, 'id': i}) + '\n' for i, (c, dummy) in enumerate(commands))
    argv = [path, '-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio']
    try:
        proc = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InvalidInput('target binary %s cannot run: %s' % (path, exc))
    replies = {}
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and 'return' in msg and 'id' in msg:
            replies[msg['id']] = msg['return']
    if not all(i in replies for i in (1, 2, 3)):
        raise InvalidInput('target binary %s did not answer QMP queries (exit %s): %s'
                           % (path, proc.returncode, (proc.stderr or proc.stdout).strip()[-500:]))
    version = replies[1]['qemu']
    machines = set()
    for machine in replies[3]:
        machines.add(machine['name'])
        if machine.get('alias'):
            machines.add(machine['alias'])
    return dict(path=path, version='%d.%d.%d' % (version['major'], version['minor'], version['micro']),
                package=normalize_package(replies[1].get('package')),
                capabilities=sorted(c['capability'] for c in replies[2]), machines=sorted(machines))


def qmp_version(qmp):
    data = qmp.execute('query-version')
    q = data['qemu']
    return dict(version='%d.%d.%d' % (q['major'], q['minor'], q['micro']), package=normalize_package(data.get('package')))


def memory_backends(qmp, pid):
    """The guest's memory backends with their QOM type, path and filesystem."""
    types = dict((o['name'], o['type'][len('child<'):-1]) for o in qmp.execute('qom-list', {'path': '/objects'})
                 if o['type'].startswith('child<'))
    backends = []
    for memdev in qmp.execute('query-memdev'):
        backend_id = memdev.get('id')
        qom_type = types.get(backend_id)
        path = None
        if qom_type == 'memory-backend-file':
            path = qmp.execute('qom-get', {'path': '/objects/%s' % backend_id, 'property': 'mem-path'})
        backends.append(dict(id=backend_id, type=qom_type, size=memdev['size'], share=memdev['share'],
                             path=path, filesystem=filesystem_of(path, pid) if path else None))
    return backends


def state_reasons(vm):
    """Why ``vm`` cannot be migrated at all right now."""
    reasons = []
    if vm['status'] not in UPDATABLE_STATES:
        reasons.append('run state is %s, not running or paused' % vm['status'])
    if vm['migration'] not in IDLE_MIGRATION_STATES:
        reasons.append('a migration is in progress (%s)' % vm['migration'])
    return reasons


def memory_reasons(vm):
    """Why a migration of ``vm`` would copy guest RAM instead of leaving it in place."""
    reasons = []
    caps = vm['capabilities']
    if 'x-ignore-shared' not in caps:
        reasons.append('this QEMU has no x-ignore-shared migration capability')
    if caps.get('postcopy-ram'):
        reasons.append('postcopy-ram is on; QEMU refuses it with x-ignore-shared')
    backends = vm['memory_backends']
    for b in backends:
        if b['type'] != 'memory-backend-file' or not b['path']:
            reasons.append('memory backend %s is %s, not a named file: its RAM would be copied' % (b['id'], b['type']))
        elif not b['share']:
            reasons.append('memory backend %s is share=off: x-ignore-shared would copy all its RAM' % b['id'])
    backed = sum(b['size'] for b in backends)
    if backed < vm['ram_size']:
        reasons.append('%d MiB of guest RAM is anonymous memory, not a memory backend' % ((vm['ram_size'] - backed) >> 20))
    return reasons


def full_copy_risks(vm):
    """Why copying the RAM of ``vm`` (a full-copy migration) could corrupt its guest."""
    version = tuple(int(part) for part in vm['running']['version'].split('.')[:2])
    if vm['kvm'] or version >= TCG_FULL_COPY_SAFE_FROM:
        return []
    return ['a RAM copy from QEMU %s under TCG can lose guest writes (QEMU bug fixed in 9.0)'
            % vm['running']['version']]


def eligibility(vm):
    """Reasons why ``vm`` cannot get a device-state-only live update (empty: eligible)."""
    return state_reasons(vm) + memory_reasons(vm)


def outdated_reasons(vm):
    reasons = []
    if vm['binary']['deleted']:
        reasons.append('binary %s was deleted' % vm['binary']['path'])
    elif vm['binary']['replaced']:
        reasons.append('binary %s was replaced on disk' % vm['binary']['path'])
    target, running = vm['target'], vm['running']
    if target and running and (target['version'], target['package']) != (running['version'], running['package']):
        reasons.append('runs QEMU %s (%s), target %s is %s (%s)' % (
            running['version'], running['package'], target['path'], target['version'], target['package']))
    return reasons


def find_target(exe, target_binary):
    """The binary to compare with: the one given, else the installed binary of the same name."""
    if target_binary:
        return target_binary
    return shutil.which(os.path.basename(exe))


def query_vm(qmp, pid):
    """What QEMU says of itself over QMP: version, run state, machine, migration, memory."""
    summary = qmp.execute('query-memory-size-summary')
    machine = qmp.execute('qom-get', {'path': '/machine', 'property': 'type'})
    return dict(running=qmp_version(qmp), status=qmp.execute('query-status')['status'],
                machine=machine[:-len('-machine')] if machine.endswith('-machine') else machine,
                migration=qmp.execute('query-migrate').get('status', 'none'),
                capabilities=query_capabilities(qmp),
                kvm=qmp.execute('query-kvm')['enabled'],
                memory_backends=memory_backends(qmp, pid),
                ram_size=summary['base-memory'] + summary.get('plugged-memory', 0))


def managed_paths(proc, runtime_dir):
    """The RuntimePaths of ``proc`` when liveupdate.qemu.vm launched it under ``runtime_dir``."""
    name = proc.cmdline.name()
    if not name or not runtime_dir:
        return None
    paths = RuntimePaths(runtime_dir, name)
    state = paths.read_state()
    if state and state.get('memory_file') and proc.uses_file(state['memory_file']):
        return paths
    return None


def qmp_socket_of(proc, runtime_dir):
    """The QMP socket to reach ``proc`` at: its runtime directory's when managed, else
    the first on its command line, under its canonical name (see canonical_path)."""
    paths = managed_paths(proc, runtime_dir)
    if paths is not None:
        return paths.qmp_socket
    sockets = proc.cmdline.qmp_sockets()
    return canonical_path(sockets[0]) if sockets else None


def inspect(proc, runtime_dir, target_binary=None, timeout=5.0, version_cache=None):
    """Everything vm_info reports about one QEMU process."""
    paths = managed_paths(proc, runtime_dir)
    target_path = find_target(proc.exe, target_binary)
    binary_state = proc.binary_state()
    vm = dict(pid=proc.pid, name=proc.cmdline.name(), argv=proc.argv, managed=paths is not None,
              runtime_dir=paths.root if paths else None, qmp_socket=qmp_socket_of(proc, runtime_dir),
              binary=dict(path=proc.exe, deleted=binary_state == 'deleted', replaced=binary_state == 'replaced'),
              target=binary_version(target_path, version_cache) if target_path else None,
              running=None, kvm=None, machine=None, status=None, migration=None, capabilities={}, memory_backends=[],
              ram_size=None, qmp_error=None)
    if not vm['qmp_socket']:
        vm['qmp_error'] = 'no unix QMP socket on its command line'
    else:
        try:
            with QMPSession(vm['qmp_socket'], timeout) as qmp:
                vm.update(query_vm(qmp, proc.pid))
        except QMPError as exc:
            vm['qmp_error'] = str(exc)
    vm['outdated_reasons'] = outdated_reasons(vm)
    vm['outdated'] = bool(vm['outdated_reasons'])
    vm['ineligible_reasons'] = (['QMP: %s' % vm['qmp_error']] if vm['qmp_error'] else eligibility(vm))
    vm['eligible'] = not vm['ineligible_reasons']
    return vm


def discover(runtime_dir, target_binary=None, timeout=5.0):
    """vm_info's list: one entry per QEMU process on the host."""
    cache = {}
    return [inspect(p, runtime_dir, target_binary, timeout, cache) for p in qemu_processes()]
