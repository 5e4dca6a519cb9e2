# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The verbs of the saved_vm module: a VM saved (state saved), running again from its save (state
running) or its save discarded (state absent). The files are _saved.SavedRecord's."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, canonical_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._locate import connect_source, find_running
from ansible_collections.liveupdate.qemu.plugins.module_utils._lock import UpdateLock
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    QemuProcess, kill_and_wait, launch_detached, qemu_processes, shutdown_ladder,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import (
    missing_types, probe_binary, resolve_binary,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import event_time, query_vm
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPSession, socket_accepts
from ansible_collections.liveupdate.qemu.plugins.module_utils._saved import (
    SavedRecord, directories_of, file_identity, fsync_path, give_back_settings, is_volatile, load_state,
    memory_files, move_file, record_of, restore_command, restore_refusals, save_state, saved_command, sha256_of,
    unchanged, uses_cpr_reboot,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._verify import verify_guest
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths, Vm


def _ms(seconds):
    return round(seconds * 1000, 1)


def host_boot_id():
    with open('/proc/sys/kernel/random/boot_id') as handle:
        return handle.read().strip()


def running_on(record):
    """The QEMUs that run the VM of ``record`` now: on its memory files, by its name, or on its socket."""
    return [p for p in qemu_processes()
            if record['name'] and p.cmdline.name() == record['name']
            or any(p.shares_file(path) for path in record['memory_files'])]


class SavedVmManager:

    def __init__(self, params, check_mode):
        self.params = params
        self.check_mode = check_mode
        self.name = params['name']
        self.record = SavedRecord.of(params['save_dir'], self.name)
        self.timings = {}
        self.warnings = []

    def run(self):
        state = self.params['state']
        result = dict(saved=self.ensure_saved, running=self.ensure_running, absent=self.ensure_absent)[state]()
        result.setdefault('timings', self.timings)
        result['warnings'] = self.warnings
        return result

    def _result(self, changed, before, after, **extra):
        return dict(changed=changed, diff=dict(before=before, after=after), **extra)

    def _saved_info(self, data):
        return dict(name=data['name'], dir=self.record.dir, state_file=self.record.state_file,
                    state_bytes=data['state_bytes'], memory_file=data['memory_files'][0],
                    stored_memory_file=data['stored'][0]['path'], binary=data['binary'], version=data['version'],
                    machine=data['machine'], transfer=data['transfer'], saved_at=data['saved_at'],
                    synced=data['synced'])

    # --- state: saved ---

    def ensure_saved(self):
        data = self.record.read()
        qmp_socket, proc = find_running(self.params)
        if proc is None and qmp_socket is None:
            if data:
                return self._result(False, dict(state='saved'), dict(state='saved'), saved=self._saved_info(data))
            raise InvalidInput('VM %s is not running and has no saved state in %s' % (self.name, self.params['save_dir']))
        with UpdateLock(self.params['runtime_dir'], qmp_socket, self.params['lock_timeout']):
            with QMPSession(qmp_socket, self.params['timeout']) as qmp:
                source = connect_source(qmp, proc, self.params['runtime_dir'])
                vm = query_vm(qmp, source.proc.pid)
                self._check_saveable(source, vm)
                if data:
                    self.warnings.append('an earlier save of VM %s in %s was replaced: the VM has run since'
                                         % (self.name, self.record.dir))
                if self.check_mode:
                    return self._result(True, dict(state='running'), dict(state='saved'),
                                        vm=dict(name=self.name, pid=source.proc.pid, qmp_socket=qmp.path))
                if data:
                    self.record.remove()
                return self._save(qmp, source, vm)

    def _check_saveable(self, source, vm):
        reasons = restore_refusals(saved_command(source.proc), vm)
        if reasons:
            raise InvalidInput('cannot save VM %s: %s' % (self.name, '; '.join(reasons)), reasons=reasons)
        memory_dir = self.params.get('memory_dir')
        if memory_dir and not os.path.isdir(memory_dir):
            raise InvalidInput('memory_dir %s does not exist or is not a directory' % memory_dir)
        for path in memory_files(vm):
            if memory_dir and os.path.lexists(os.path.join(memory_dir, os.path.basename(path))) \
                    and os.path.dirname(path) != os.path.abspath(memory_dir):
                raise InvalidInput('memory_dir %s already has a file %s' % (memory_dir, os.path.basename(path)))

    def _save(self, qmp, source, vm):
        proc = source.proc
        os.makedirs(self.record.dir, mode=0o700, exist_ok=True)
        saved = save_state(qmp, vm['running']['version'], self.record.state_file, self.params['migration_timeout'])
        self.timings['save_ms'] = _ms(saved['completed_at'] - saved['stopped_at'])
        try:
            data = record_of(source, vm, self.record.state_file, saved)
            files = data['memory_files']
            data.update(name=self.name, qmp_socket=canonical_path(qmp.path), directories=directories_of(data['argv']),
                        boot_id=host_boot_id(), saved_at=datetime.now(timezone.utc).isoformat(timespec='milliseconds'),
                        synced=False)
            data['stored'] = [dict(path=p, **file_identity(p)) for p in files]
            self.record.write(data)
        except BaseException:
            qmp.execute('cont')  # nothing else ran on its RAM: the VM goes on as before
            self.record.remove()
            raise
        # From here the record is whole: the VM can always be restored from it.
        start = time.monotonic()
        shutdown_ladder(proc.pid, lambda: qmp.execute('quit'), self.params['shutdown_timeout'])
        self.timings['quit_ms'] = _ms(time.monotonic() - start)
        if source.paths:
            source.paths.write_state(dict(data['vm_state'] or {}, saved=self.record.dir))
        data['stored'] = [self._store(path) for path in files]
        data['synced'] = self._sync([s['path'] for s in data['stored']])
        self.record.write(data)
        return self._result(True, dict(state='running'), dict(state='saved'), saved=self._saved_info(data),
                            vm=dict(name=self.name, pid=None, qmp_socket=data['qmp_socket'], status='saved'))

    def _store(self, path):
        """Move memory file ``path`` into memory_dir, if given; its identity where it now is."""
        memory_dir = self.params.get('memory_dir')
        where = path
        if memory_dir and os.path.dirname(path) != os.path.abspath(memory_dir):
            start = time.monotonic()
            where = os.path.join(os.path.abspath(memory_dir), os.path.basename(path))
            self.timings['move_how'] = move_file(path, where)
            self.timings['move_ms'] = _ms(time.monotonic() - start)
        return dict(path=where, **file_identity(where))

    def _sync(self, paths):
        """fsync the memory files (sync: always, or auto when on storage a reboot keeps): after a
        crash of the host, the state would otherwise be loaded onto RAM older than it."""
        policy = self.params['sync']
        todo = [p for p in paths if policy == 'always' or policy == 'auto' and not is_volatile(p)]
        if not todo:
            return False
        start = time.monotonic()
        for path in todo:
            fsync_path(path)
        self.timings['sync_ms'] = _ms(time.monotonic() - start)
        return True

    # --- state: running ---

    def ensure_running(self):
        data = self.record.read()
        if data is None:
            qmp_socket, proc = find_running(self.params)
            if qmp_socket is None:
                raise InvalidInput('VM %s is not running and has no saved state in %s'
                                   % (self.name, self.params['save_dir']))
            return self._result(False, dict(state='running'), dict(state='running'),
                                vm=dict(name=self.name, pid=proc.pid if proc else None, qmp_socket=qmp_socket))
        with UpdateLock(self.params['runtime_dir'], data['qmp_socket'], self.params['lock_timeout']) as lock:
            data = self.record.read()
            if data is None:  # restored meanwhile by another run
                return self.ensure_running()
            others = running_on(data)
            if others:
                raise InvalidInput('VM %s is already running (QEMU pid %s): its saved state in %s is older than '
                                   'its RAM and is not loaded; discard it with state: absent'
                                   % (self.name, ', '.join(str(p.pid) for p in others), self.record.dir),
                                   pids=[p.pid for p in others])
            binary, argv = self._check_restorable(data)
            if self.check_mode:
                return self._result(True, dict(state='saved'), dict(state='running'), saved=self._saved_info(data))
            return self._restore(data, binary, argv, lock.sibling('.log'))

    def _check_restorable(self, data):
        """Refuse, before anything changes, a state that cannot go back onto its RAM or this binary."""
        for stored in data['stored']:
            if not os.path.exists(stored['path']):
                raise InvalidInput('memory file %s of saved VM %s is missing: the guest RAM it was saved with is '
                                   'gone (a reboot empties tmpfs), so its state cannot be restored; discard it with '
                                   'state: absent' % (stored['path'], self.name), memory_file=stored['path'])
            if not unchanged(stored['path'], stored):
                now = file_identity(stored['path'])
                raise InvalidInput('memory file %s of saved VM %s changed after the save (size %d -> %d, mtime %d -> '
                                   '%d): loading the state onto RAM that is not the one it was saved with would '
                                   'corrupt the guest' % (stored['path'], self.name, stored['size'], now['size'],
                                                          stored['mtime_ns'], now['mtime_ns']),
                                   memory_file=stored['path'])
        unsynced = [s['path'] for s in data['stored'] if not data['synced'] and not is_volatile(s['path'])]
        if unsynced and data.get('boot_id') != host_boot_id():
            raise InvalidInput('saved VM %s was not flushed to its storage (sync) before the host restarted: the RAM in '
                               '%s may be older than its saved state (pages the kernel had not written back were '
                               'lost); discard it with state: absent' % (self.name, ', '.join(unsynced)),
                               memory_file=unsynced[0])
        for stored in data['stored']:
            original = data['memory_files'][data['stored'].index(stored)]
            if stored['path'] != original and os.path.lexists(original):
                raise InvalidInput('cannot move memory file %s back to %s: a file is there'
                                   % (stored['path'], original))
        if not os.path.exists(self.record.state_file) or sha256_of(self.record.state_file) != data['state_sha256']:
            raise InvalidInput('state file %s of saved VM %s is missing or does not match its record'
                               % (self.record.state_file, self.name))
        if data.get('vm_state'):
            paths = RuntimePaths(self.params['runtime_dir'], self.name)
            current = paths.read_state()
            if current and current.get('argv') != data['vm_state'].get('argv'):
                raise InvalidInput('VM %s was reconfigured after its save (%s records another command line): its '
                                   'saved state belongs to the VM as it was' % (self.name, paths.state_file))
        binary = resolve_binary(self.params.get('binary') or data['binary'])
        probe = probe_binary(binary)
        problems = []
        if 'x-ignore-shared' not in probe['capabilities']:
            problems.append('it has no x-ignore-shared migration capability')
        if data['transfer'] == 'cpr-reboot' and not uses_cpr_reboot(probe['version']):
            problems.append('the state was saved in migration mode cpr-reboot, which QEMU %s does not have'
                            % probe['version'])
        if data['machine'] not in probe['machines']:
            problems.append('it has no machine type %s' % data['machine'])
        argv = restore_command(data['argv'], binary, data['machine'])
        missing = missing_types(probe, QemuCommandLine.parse(argv).qom_types())
        if missing:
            problems.append('it cannot create %s' % ', '.join(missing))
        if problems:
            raise InvalidInput('cannot restore VM %s onto %s (QEMU %s): %s'
                               % (self.name, binary, probe['version'], '; '.join(problems)))
        return binary, argv

    def _restore(self, data, binary, argv, log):
        timings = self.timings
        for index, stored in enumerate(data['stored']):
            original = data['memory_files'][index]
            if stored['path'] != original:
                start = time.monotonic()
                timings['move_how'] = move_file(stored['path'], original)
                timings['move_ms'] = _ms(time.monotonic() - start)
                data['stored'][index] = dict(path=original, **file_identity(original))
                self.record.write(data)
        paths = RuntimePaths(self.params['runtime_dir'], self.name) if data.get('vm_state') else None
        for directory, mode in sorted(data['directories'].items()):
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=mode)
        if paths:
            paths.write_state(data['vm_state'])
        qmp_socket = data['qmp_socket']
        if os.path.lexists(qmp_socket) and not socket_accepts(qmp_socket):
            os.unlink(qmp_socket)  # left by a QEMU that was killed (a reboot): the new one binds it
        log = paths.qemu_log if paths else log
        start = time.monotonic()
        child = launch_detached(argv, log, lambda: os.path.exists(qmp_socket), cwd=data['cwd'])
        qmp = QMPSession(qmp_socket, self.params['timeout'])
        try:
            qmp.connect(starting=True)
            timings['spawn_ms'] = _ms(time.monotonic() - start)
            load_state(qmp, data, self.record.state_file, self.params['migration_timeout'])
            timings['load_ms'] = _ms(time.monotonic() - start)
            timings['incoming_ms'] = round(timings['load_ms'] - timings['spawn_ms'], 1)
            resumed_at = None
            if data['run_status'] == 'running':
                qmp.drain_events()
                qmp.execute('cont')
                resumed_at = event_time(qmp.wait_event('RESUME', self.params['timeout']))
            timings['restore_ms'] = _ms(time.monotonic() - start)
            # The guest runs on its RAM now: the state is older than it, for good.
            self.record.remove()
            give_back_settings(qmp, data)
            verify_start = time.monotonic()
            verified = verify_guest(qmp, child.pid, data['run_status'], self.params['verify_timeout'],
                                    self.params.get('health_command'),
                                    dict(LIVEUPDATE_VM=self.name, LIVEUPDATE_QMP_SOCKET=qmp_socket,
                                         LIVEUPDATE_PID=str(child.pid)))
            timings['verify_ms'] = _ms(time.monotonic() - verify_start)
        except BaseException:
            if self.record.exists():  # not resumed: the saved VM stays as it was
                kill_and_wait(child.pid)
            raise
        finally:
            qmp.close()
        if paths and binary != data['binary']:
            paths.record_argv(QemuProcess.from_pid(child.pid).argv)
        result = self._result(True, dict(state='saved'), dict(state='running'),
                              vm=dict(name=self.name, pid=child.pid, qmp_socket=qmp_socket, status=data['run_status']),
                              guest_pause_ms=_ms(resumed_at - data['stopped_at']) if resumed_at else None,
                              stopped_at=data['stopped_at'], resumed_at=resumed_at,
                              verified=verified, binary=binary)
        if not verified['ok']:
            raise UpdateFailed('VM %s was restored (pid %d) but did not pass its checks: %s'
                               % (self.name, child.pid, verified['checks']), step='verify', rolled_back=False, **result)
        return result

    # --- state: absent ---

    def ensure_absent(self):
        data = self.record.read()
        if data is None:
            return self._result(False, dict(state='absent'), dict(state='absent'))
        others = running_on(data)
        if not self.check_mode:
            if others:
                self.warnings.append('VM %s runs (pid %s): only its outdated saved state was removed'
                                     % (self.name, ', '.join(str(p.pid) for p in others)))
            else:
                for stored in data['stored']:
                    if os.path.exists(stored['path']):
                        os.unlink(stored['path'])
                if data.get('vm_state'):
                    Vm(self.params['runtime_dir'], self.name).remove_files()
            self.record.remove()
        return self._result(True, dict(state='saved'), dict(state='absent'), memory_removed=not others)
