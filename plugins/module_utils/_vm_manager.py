# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The verbs of the vm module: bring a VM to state running or stopped."""

from __future__ import annotations

import os

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._journal import Journal
from ansible_collections.liveupdate.qemu.plugins.module_utils._lock import UpdateLock, lock_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import qemu_processes, users_of
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import resolve_binary
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import Vm
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_spec import VmSpec


class VmManager:

    def __init__(self, params, check_mode):
        self.params = params
        self.check_mode = check_mode
        self.vm = Vm(params['runtime_dir'], params['name'])
        self.warnings = []

    def _result(self, changed, before, after, proc=None, status=None, **extra):
        result = dict(changed=changed, diff=dict(before=before, after=after),
                      vm=self.vm.info(proc, status), warnings=self.warnings)
        result.update(extra)
        return result

    def _current(self):
        """(process, snapshot for the diff) of the VM as it is now."""
        proc = self.vm.process()
        stored = (self.vm.state or {}).get('spec')
        if proc is None:
            return None, dict(state='stopped')
        return proc, dict(state='running', spec=stored)

    def _refuse_saved(self, proc):
        """A saved VM (liveupdate.qemu.saved_vm) is neither started afresh nor removed here: its RAM
        and state are the guest's."""
        saved = (self.vm.state or {}).get('saved')
        if proc is None and saved:
            raise InvalidInput('VM %s is saved (%s): restore it with liveupdate.qemu.saved_vm state: running, or '
                               'discard it with state: absent' % (self.vm.name, saved), saved=saved)

    def ensure_running(self):
        spec = VmSpec(self.params)
        proc, before = self._current()
        self._refuse_saved(proc)
        if proc is not None:
            conflicts = spec.conflicts_with(before['spec'] or {})
            if conflicts:
                raise InvalidInput('VM %s is running (pid %d) with another spec: %s differ; stop it first '
                                   '(state: stopped) or keep its spec' % (spec.name, proc.pid, ', '.join(conflicts)),
                                   conflicts=conflicts, pid=proc.pid)
            self._warn_other_binary(proc, before['spec'].get('binary'))
            return self._result(False, before, before, proc, self.vm.run_status(self.params['timeout']))
        spec.check_files()
        self._refuse_duplicates(spec)
        after = dict(state='running', spec=spec.as_dict())
        stale = self.vm.leftovers()
        spec.check_memory_dir(reuse_bytes=self._stale_memory_bytes(spec) if stale else 0)
        if self.check_mode:
            return self._result(True, before, after, stale_files_removed=stale)
        if stale:
            self.vm.remove_files()
        # A journal of an update of an earlier VM of this name is not this VM's.
        Journal(lock_path(self.params['runtime_dir'], self.vm.paths.qmp_socket, '.journal')).clear()
        proc = self.vm.start(spec, self.params['timeout'])
        return self._result(True, before, after, proc, self.vm.run_status(self.params['timeout']),
                            stale_files_removed=stale)

    def _warn_other_binary(self, proc, running_binary):
        try:
            requested = resolve_binary(self.params['binary'])
        except InvalidInput:
            requested = None
        state = proc.binary_state()
        if requested != running_binary or state != 'current':
            self.warnings.append('VM %s runs %s%s, not %s; use liveupdate.qemu.live_update to move it'
                                 % (self.vm.name, running_binary, '' if state == 'current' else ' (%s)' % state,
                                    self.params['binary']))

    def _refuse_duplicates(self, spec):
        """No second QEMU for this name, and never two on one memory file."""
        for proc in users_of(spec.memory_file) if spec.memory_file else []:
            raise InvalidInput('memory file %s is already used by QEMU pid %d' % (spec.memory_file, proc.pid),
                               pid=proc.pid)
        for proc in qemu_processes():
            if proc.cmdline.name() == spec.name:
                raise InvalidInput('a QEMU named %s already runs as pid %d (%s); VM names must be unique on a host'
                                   % (spec.name, proc.pid, proc.exe), pid=proc.pid)

    @staticmethod
    def _stale_memory_bytes(spec):
        if not spec.memory_file:
            return 0
        try:
            return os.stat(spec.memory_file).st_blocks * 512
        except OSError:
            return 0

    def ensure_stopped(self):
        proc, before = self._current()
        self._refuse_saved(proc)
        after = dict(state='stopped')
        stale = self.vm.leftovers()
        if proc is None and not stale:
            return self._result(False, before, after)
        if self.check_mode:
            return self._result(True, before, after, proc)
        # Never under a live update of the same VM: wait for it to end.
        with UpdateLock(self.params['runtime_dir'], self.vm.paths.qmp_socket, self.params['shutdown_timeout']) as lock:
            proc = self.vm.process()
            method = self.vm.stop(proc, self.params['timeout'], self.params['shutdown_timeout']) if proc else None
            info = self.vm.info(proc, 'stopped')
            self.vm.remove_files()
            Journal(lock.sibling('.journal')).clear()  # an interrupted update of the VM is over with it
        result = self._result(True, before, after, stop_method=method)
        result['vm'] = info
        return result

    def run(self):
        return self.ensure_running() if self.params['state'] == 'running' else self.ensure_stopped()
