# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback of the benchmarks (benchmarks/benchlib.py enables it for every ansible-playbook run; not
part of the collection): how long each task took, where it comes from (role, task file, action,
check mode, the file an include_tasks includes), and the results of vm_info and live_update tasks
(live_update's per-step ``timings`` are not in the rollout report). Written as JSON to
$FLEETBENCH_TIMER_OUT when the playbook ends."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'fleetbench_timer'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.t0 = time.time()
        self.current = None
        self.tasks = []
        self.updates = []
        self.infos = []

    def _close(self):
        if self.current is not None:
            self.current['duration'] = round(time.time() - self.t0 - self.current['start'], 4)
            self.tasks.append(self.current)
            self.current = None

    @staticmethod
    def _origin(task):
        """Where a task comes from: its role, FILE:LINE, check mode, and for include_tasks and
        import_tasks the file it names (untemplated). What the benchmark classifies tasks by."""
        if task is None:
            return dict(role=None, path=None, check_mode=False, includes=None)
        args = task.args or {}
        return dict(role=task._role.get_name() if task._role else None, path=task.get_path(),
                    check_mode=bool(task.check_mode),
                    includes=(args.get('_raw_params') or args.get('file')) if task.action.endswith('_tasks') else None)

    def _start(self, name, action, task=None):
        self._close()
        self.current = dict(name=name, action=action, start=round(time.time() - self.t0, 4), **self._origin(task))

    def v2_playbook_on_play_start(self, play):
        self._start('PLAY ' + play.get_name(), 'play')

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task.get_name(), task.action, task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task.get_name(), task.action, task)

    def _result(self, result):
        task = result._task
        r = result._result
        if task.action.endswith('vm_info') and isinstance(r.get('vms'), list):
            self.infos.append(dict(host=result._host.get_name(), task=task.get_name(), vms=[
                dict(name=v.get('name'), status=v.get('status'), outdated=v.get('outdated'),
                     binary=(v.get('binary') or {}).get('path')) for v in r['vms']]))
        if not task.action.endswith('live_update'):
            return
        entries = r.get('results') if isinstance(r.get('results'), list) else [r]
        for e in entries:
            if not isinstance(e, dict):
                continue
            self.updates.append(dict(
                host=result._host.get_name(), task=task.get_name(), check_mode=bool(task.check_mode),
                vm=(e.get('vm') or {}).get('name'), changed=e.get('changed'), failed=e.get('failed', False),
                msg=e.get('msg') if e.get('failed') else None, guest_pause_ms=e.get('guest_pause_ms'),
                timings=e.get('timings') or {}, migration=e.get('migration'),
                old=(e.get('old') or {}).get('package'), new=(e.get('new') or {}).get('package')))

    def v2_runner_on_ok(self, result):
        self._result(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result)

    def v2_playbook_on_stats(self, stats):
        self._close()
        path = os.environ.get('FLEETBENCH_TIMER_OUT')
        if path:
            with open(path, 'w') as handle:
                json.dump(dict(started=self.t0, tasks=self.tasks, updates=self.updates, infos=self.infos), handle)
