# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fault injection at the step boundaries of a live update, for the fault-matrix
tests: real signals to the real processes at a moment a test cannot hit by timing.

``LIVEUPDATE_QEMU_FAULTS`` (environment of the module process) is a comma-separated
list of ``POINT:ACTION``. Points, in order: ``spawned`` (destination listening),
``migrating`` (migration started), ``migrated`` (completed, before the switch),
``committed`` (switch recorded, before ``cont``), ``switched`` (guest runs on the
destination), ``source-stopped`` (before the names move), ``finished``. Actions:
``kill-module``, ``kill-source``, ``stop-source``, ``kill-dest``, ``stop-dest``
(SIGSTOP: a freeze). A fault has happened when fault_point() returns: the process is dead or
frozen, as it would be had it crashed or hung at that boundary (a signal alone takes effect
whenever the process is next scheduled). Unset, it costs one dictionary lookup per point."""

from __future__ import annotations

import os
import signal

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import process_state
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for

ENV = 'LIVEUPDATE_QEMU_FAULTS'
ACTIONS = {
    'kill-module': ('module', signal.SIGKILL),
    'kill-source': ('source', signal.SIGKILL),
    'stop-source': ('source', signal.SIGSTOP),
    'kill-dest': ('dest', signal.SIGKILL),
    'stop-dest': ('dest', signal.SIGSTOP),
}


def fault_point(point, source_pid=None, dest_pid=None):
    spec = os.environ.get(ENV)
    if not spec:
        return
    pids = dict(module=os.getpid(), source=source_pid, dest=dest_pid)
    for item in spec.split(','):
        where, dummy, action = item.strip().partition(':')
        if where == point and action in ACTIONS:
            target, sig = ACTIONS[action]
            if pids[target] is not None:
                try:
                    os.kill(pids[target], sig)
                except ProcessLookupError:
                    continue  # already gone: the fault is moot
                done = ('T', 't', None) if sig == signal.SIGSTOP else (None, 'Z', 'X')
                try:
                    wait_for(lambda: process_state(pids[target]) in done, 5, 'the fault to take effect')
                except WaitTimeout:
                    pass
