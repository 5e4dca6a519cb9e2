# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a running QEMU says of itself over QMP: version, run state, machine,
migration state and capabilities, memory backends, user-mode forwarding rules,
and the timestamps of its events. Queries only, except ``set_capabilities``."""

from __future__ import annotations

import re

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import filesystem_of, mapped_file_state
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import normalize_package
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPCommandError

MIGRATION_END = ('completed', 'failed', 'cancelled')
USERNET_HEADER_RE = re.compile(r'\((?P<netdev>[^)]+)\):\s*$')
USERNET_FWD_RE = re.compile(r'^\s*(?P<proto>TCP|UDP)\[HOST_FORWARD\]\s+\d+\s+(?P<haddr>\S+)\s+(?P<hport>\d+)\s+'
                            r'(?P<gaddr>\S+)\s+(?P<gport>\d+)')


def event_time(event):
    """The host time (seconds) at which QEMU emitted ``event``."""
    stamp = event['timestamp']
    return stamp['seconds'] + stamp['microseconds'] / 1e6


def qmp_version(qmp):
    data = qmp.execute('query-version')
    q = data['qemu']
    return dict(version='%d.%d.%d' % (q['major'], q['minor'], q['micro']), package=normalize_package(data.get('package')))


def query_capabilities(qmp):
    return dict((c['capability'], c['state']) for c in qmp.execute('query-migrate-capabilities'))


def set_capabilities(qmp, states):
    """Send migrate-set-capabilities for ``states`` (name -> bool)."""
    qmp.execute('migrate-set-capabilities',
                {'capabilities': [{'capability': n, 'state': v} for n, v in sorted(states.items())]})


def restore_capabilities(qmp, saved):
    """Set the capabilities in ``saved`` (name -> bool) that differ now; returns those."""
    current = query_capabilities(qmp)
    changed = dict((name, value) for name, value in saved.items() if name in current and current[name] != value)
    if changed:
        set_capabilities(qmp, changed)
    return changed


def memory_backends(qmp, pid):
    """The guest's memory backends with their QOM type, path, filesystem and how QEMU
    ``pid`` maps that path (see _proc.mapped_file_state)."""
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
                             path=path, filesystem=filesystem_of(path, pid) if path else None,
                             mapped=mapped_file_state(pid, path) if path else None))
    return backends


def machine_property(qmp, name):
    """A property of the machine, or None where this QEMU has no such property."""
    try:
        return qmp.execute('qom-get', {'path': '/machine', 'property': name})
    except QMPCommandError:
        return None


def migration_mode(qmp):
    """The migration mode parameter (QEMU >= 8.2), else None."""
    return qmp.execute('query-migrate-parameters').get('mode')


def query_vm(qmp, pid):
    """Version, run state, machine, migration, capabilities, accelerator and memory of QEMU ``pid``."""
    summary = qmp.execute('query-memory-size-summary')
    machine = qmp.execute('qom-get', {'path': '/machine', 'property': 'type'})
    return dict(running=qmp_version(qmp), status=qmp.execute('query-status')['status'],
                aux_ram_share=machine_property(qmp, 'aux-ram-share'), migration_mode=migration_mode(qmp),
                machine=machine[:-len('-machine')] if machine.endswith('-machine') else machine,
                migration=qmp.execute('query-migrate').get('status', 'none'),
                capabilities=query_capabilities(qmp),
                kvm=qmp.execute('query-kvm')['enabled'],
                memory_backends=memory_backends(qmp, pid),
                ram_size=summary['base-memory'] + summary.get('plugged-memory', 0))


def host_forwards(qmp):
    """[(netdev id, rule)] of the user-mode forwarding rules active now ('info usernet')."""
    rules, netdev = [], None
    for line in qmp.execute('human-monitor-command', {'command-line': 'info usernet'}).splitlines():
        header = USERNET_HEADER_RE.search(line)
        if header:
            netdev = header.group('netdev')
            continue
        fwd = USERNET_FWD_RE.match(line)
        if fwd and netdev:
            haddr = '' if fwd.group('haddr') in ('*', '0.0.0.0') else fwd.group('haddr')
            rules.append((netdev, '%s:%s:%s-%s:%s' % (fwd.group('proto').lower(), haddr, fwd.group('hport'),
                                                      fwd.group('gaddr'), fwd.group('gport'))))
    return rules
