# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Several live updates in one module call, ``concurrency`` at a time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._live_update import LiveUpdate


def update_many(params, vms, check_mode, concurrency=1, stop_on_failure=True):
    """Live-update several VMs (each a dict with name, socket or pid). Returns one result
    per VM that was started, in order; a failed one has ``failed: True`` and its message.
    With ``stop_on_failure`` no VM is started after the first failure."""
    probes = {}
    failed = threading.Event()

    def one(vm):
        if stop_on_failure and failed.is_set():
            return None
        vm_params = dict(params, name=None, socket=None, pid=None)
        vm_params.update((k, v) for k, v in vm.items() if v is not None)
        try:
            return LiveUpdate(vm_params, check_mode, probes).run()
        except LiveUpdateError as exc:
            failed.set()
            result = dict(dict(changed=False), **exc.details)
            result.update(failed=True, msg=str(exc))
            result.setdefault('vm', dict((k, v) for k, v in vm.items() if v is not None))
            return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(one, vms))
    return [r for r in results if r is not None]


def run_batch(params, check_mode):
    """The module result of a batch (``vms``); raises LiveUpdateError, with every
    result attached, when an update failed."""
    vms = params['vms']
    results = update_many(params, vms, check_mode, params['concurrency'], params['stop_on_failure'])
    failed = [r for r in results if r.get('failed')]
    result = dict(changed=any(r.get('changed') for r in results), results=results)
    if failed:
        raise LiveUpdateError('%d of %d live updates failed: %s'
                              % (len(failed), len(vms), '; '.join(r['msg'] for r in failed)), **result)
    return result
