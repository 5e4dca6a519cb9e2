# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What every module of the collection shares: the common options, the
qemu.qmp requirement, the QMP target, and the one failure path."""

from __future__ import annotations

import math

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError, shorten
from ansible_collections.liveupdate.qemu.plugins.module_utils._locate import refuse_libvirt_socket
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import (
    DEFAULT_TIMEOUT, HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR, QEMU_QMP_REQUIREMENT, QMPSession,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import DEFAULT_RUNTIME_DIR, RuntimePaths

# Mirrors plugins/doc_fragments/common.py (DOCUMENTATION).
COMMON_ARGS = dict(
    runtime_dir=dict(type='path', default=DEFAULT_RUNTIME_DIR),
    timeout=dict(type='float', default=DEFAULT_TIMEOUT),
)

# Mirrors plugins/doc_fragments/common.py (QMP_TARGET): which QEMU to talk to.
QMP_TARGET_ARGS = dict(
    socket=dict(type='path'),
    name=dict(type='str'),
)
QMP_TARGET_RULES = dict(mutually_exclusive=[('socket', 'name')], required_one_of=[('socket', 'name')])


def _has_nul(value):
    """True when a string in ``value`` (an option's value, lists and dicts included) has a NUL."""
    if isinstance(value, str):
        return '\0' in value
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(_has_nul(item) for item in value)


class LiveUpdateModule(AnsibleModule):
    """AnsibleModule with the collection's common options and failure path."""

    def __init__(self, argument_spec, requires=('qemu.qmp',), **kwargs):
        spec = dict(COMMON_ARGS)
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        if 'qemu.qmp' in requires and not HAS_QEMU_QMP:
            self.fail_json(msg=missing_required_lib(QEMU_QMP_REQUIREMENT), exception=QEMU_QMP_IMPORT_ERROR)
        for name, value in self.params.items():
            if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
                self.fail_json(msg='%s must be a finite number of seconds, zero or more; got %s' % (name, value))
            if _has_nul(value):
                self.fail_json(msg='%s contains a NUL byte' % name)
        if self.params['timeout'] <= 0:
            self.fail_json(msg='timeout must be positive, got %s' % self.params['timeout'])

    def fail_from(self, exc, **result):
        """Turn a LiveUpdateError into fail_json, keeping the partial result."""
        result.update(exc.details)
        result.pop('msg', None)
        self.fail_json(msg=str(exc), **result)

    def qmp_socket(self):
        """The QMP socket named by ``socket`` or by the VM ``name`` under ``runtime_dir``; never the
        monitor of a libvirt domain (InvalidInput: libvirt must stay its only client)."""
        if self.params.get('socket'):
            refuse_libvirt_socket(self.params['socket'])
            return self.params['socket']
        return RuntimePaths(self.params['runtime_dir'], self.params['name']).qmp_socket

    def qmp_session(self, socket=None):
        """A session on ``socket``, by default on qmp_socket()."""
        return QMPSession(socket or self.qmp_socket(), self.params['timeout'])

    def run(self, work):
        """Call ``work()`` and exit with its result: the one failure path of every module.
        LiveUpdateErrors fail with their details; an OSError (a file that cannot be read,
        written or removed) fails with its message, not a traceback."""
        try:
            result = work()
        except LiveUpdateError as exc:
            self.fail_from(exc)
        except OSError as exc:
            self.fail_json(msg=shorten('%s: %s' % (exc.filename, exc.strerror) if exc.filename else exc),
                           errno=exc.errno)
        for warning in result.pop('warnings', []):
            self.warn(warning)
        self.exit_json(**result)
