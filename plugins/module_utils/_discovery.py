# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM discovery: every QEMU process on the host, what it runs, and whether it
can be live-updated by moving device state only (x-ignore-shared)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import filesystem_of, qemu_processes
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths

VERSION_RE = re.compile(r'version\s+(\d+\.\d+\.\d+)\s*(?:\((.*)\))?')
UPDATABLE_STATES = ('running', 'paused')
IDLE_MIGRATION_STATES = ('none', 'completed', 'failed', 'cancelled')


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


def eligibility(vm):
    """Reasons why ``vm`` cannot get a device-state-only live update (empty: eligible)."""
    reasons = []
    if vm['status'] not in UPDATABLE_STATES:
        reasons.append('run state is %s, not running or paused' % vm['status'])
    if vm['migration'] not in IDLE_MIGRATION_STATES:
        reasons.append('a migration is in progress (%s)' % vm['migration'])
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


def inspect(proc, runtime_dir, target_binary=None, timeout=5.0, version_cache=None):
    """Everything vm_info reports about one QEMU process."""
    sockets = proc.cmdline.qmp_sockets()
    name = proc.cmdline.name()
    managed = None
    if name and runtime_dir:
        paths = RuntimePaths(runtime_dir, name)
        state = paths.read_state()
        if state and proc.uses_file(state.get('memory_file') or '\0'):
            managed = paths.root
            sockets = [paths.qmp_socket] + [s for s in sockets if s != paths.qmp_socket]
    target_path = find_target(proc.exe, target_binary)
    binary_state = proc.binary_state()
    vm = dict(pid=proc.pid, name=name, argv=proc.argv, managed=managed is not None, runtime_dir=managed,
              qmp_socket=sockets[0] if sockets else None,
              binary=dict(path=proc.exe, deleted=binary_state == 'deleted', replaced=binary_state == 'replaced'),
              target=binary_version(target_path, version_cache) if target_path else None,
              running=None, machine=None, status=None, migration=None, capabilities={}, memory_backends=[],
              ram_size=None, qmp_error=None)
    if not sockets:
        vm['qmp_error'] = 'no unix QMP socket on its command line'
    else:
        try:
            with QMPSession(vm['qmp_socket'], timeout) as qmp:
                vm['running'] = qmp_version(qmp)
                vm['status'] = qmp.execute('query-status')['status']
                vm['machine'] = qmp.execute('qom-get', {'path': '/machine', 'property': 'type'})
                vm['migration'] = qmp.execute('query-migrate').get('status', 'none')
                vm['capabilities'] = dict((c['capability'], c['state'])
                                          for c in qmp.execute('query-migrate-capabilities'))
                vm['memory_backends'] = memory_backends(qmp, proc.pid)
                summary = qmp.execute('query-memory-size-summary')
                vm['ram_size'] = summary['base-memory'] + summary.get('plugged-memory', 0)
        except QMPError as exc:
            vm['qmp_error'] = str(exc)
    if vm['machine'] and vm['machine'].endswith('-machine'):
        vm['machine'] = vm['machine'][:-len('-machine')]
    vm['outdated_reasons'] = outdated_reasons(vm)
    vm['outdated'] = bool(vm['outdated_reasons'])
    vm['ineligible_reasons'] = (['QMP: %s' % vm['qmp_error']] if vm['qmp_error'] else eligibility(vm))
    vm['eligible'] = not vm['ineligible_reasons']
    return vm


def discover(runtime_dir, target_binary=None, timeout=5.0):
    """vm_info's list: one entry per QEMU process on the host."""
    cache = {}
    return [inspect(p, runtime_dir, target_binary, timeout, cache) for p in qemu_processes()]
