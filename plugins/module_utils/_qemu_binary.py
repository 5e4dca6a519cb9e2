# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A QEMU binary on disk: where it is, which version and package it is, and
what it supports (migration capabilities, machine types), asked without a VM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput

# -device names that are aliases of another type name (besides virtio-X for virtio-X-pci).
DEVICE_ALIASES = {'lsi': 'lsi53c895a', 'ahci': 'ich9-ahci'}
VERSION_RE = re.compile(r'version\s+(\d+\.\d+\.\d+)\s*(?:\((.*)\))?')


def normalize_package(package):
    """' (Debian 1:7.2+dfsg-7)' and 'Debian 1:7.2+dfsg-7' are the same package string."""
    return (package or '').strip().strip('()').strip() or None


def resolve_binary(binary):
    """An absolute path to an executable QEMU binary, or InvalidInput."""
    path = binary if os.sep in binary else shutil.which(binary)
    if not path or not os.path.exists(path):
        raise InvalidInput('QEMU binary %s does not exist' % binary)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise InvalidInput('QEMU binary %s is not an executable file' % path)
    return os.path.abspath(path)


def binary_version(path, cache=None):
    """{'path', 'version', 'package'} of a QEMU binary from ``--version`` (None if it cannot run)."""
    if cache is not None and path in cache:
        return cache[path]
    info = None
    try:
        out = subprocess.run([path, '--version'], capture_output=True, text=True, errors='replace', timeout=30,
                             check=False).stdout
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
    {'path', 'version', 'package', 'capabilities': [...], 'machines': [...], 'types': {}}
    (``types``: the cache of missing_types)."""
    commands = [('qmp_capabilities', None), ('query-version', None), ('query-migrate-capabilities', None),
                ('query-machines', None)]
    proc, replies = _ask(path, commands, timeout)
    if not all(i in replies for i in (1, 2, 3)):
        raise InvalidInput('target binary %s did not answer QMP queries (exit %s): %s'
                           % (path, proc.returncode, (proc.stderr or proc.stdout).strip()[-500:]))
    try:
        return _probe_result(path, replies)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidInput('target binary %s gave QMP replies of an unexpected shape (%s: %s)'
                           % (path, type(exc).__name__, exc))


def _probe_result(path, replies):
    version = replies[1]['qemu']
    machines = set()
    for machine in replies[3]:
        machines.add(machine['name'])
        if machine.get('alias'):
            machines.add(machine['alias'])
    return dict(path=path, version='%d.%d.%d' % (version['major'], version['minor'], version['micro']),
                package=normalize_package(replies[1].get('package')),
                capabilities=sorted(c['capability'] for c in replies[2]), machines=sorted(machines), types={})


def _ask(path, commands, timeout):
    """Run ``path`` with no machine and send it ``commands`` [(command, arguments)] over QMP on
    stdio; returns (the finished process, {index of a command: its return value})."""
    script = ''.join(json.dumps(dict({'execute': c, 'id': i}, **({'arguments': a} if a else {}))) + '\n'
                     for i, (c, a) in enumerate(commands + [('quit', None)]))
    argv = [path, '-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio']
    try:
        proc = subprocess.run(argv, input=script, capture_output=True, text=True, errors='replace', timeout=timeout,
                              check=False)
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
    return proc, replies


def missing_types(probe, types, timeout=30):
    """The device and object ``types`` that the probed binary cannot create. Asked type by type
    (``qom-list-properties``): listing every type would load every module of the build, and a
    build staged without some of its modules would then load another build's and abort. A
    -device name may be one of QEMU's aliases (virtio-serial for virtio-serial-pci): a type is
    missing when neither it nor what the alias stands for exists."""
    unknown = [t for t in types if t not in probe['types']]
    if unknown:
        asked = [(t, c) for t in unknown for c in _type_candidates(t)]
        dummy, replies = _ask(probe['path'], [('qmp_capabilities', None)]
                              + [('qom-list-properties', {'typename': c}) for dummy, c in asked], timeout)
        for name in unknown:
            probe['types'][name] = False
        for index, (name, dummy) in enumerate(asked, 1):
            probe['types'][name] = probe['types'][name] or index in replies
    return sorted(t for t in types if not probe['types'][t])


def _type_candidates(name):
    """``name`` and the types it may be an alias of (QEMU's qdev_alias_table, on x86)."""
    return [name] + [c for c in (name + '-pci', DEVICE_ALIASES.get(name)) if c]
