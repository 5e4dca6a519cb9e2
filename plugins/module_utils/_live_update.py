# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The live update engine: move one running VM onto a new QEMU process started
from another binary while its RAM stays in place (x-ignore-shared).

Steps: locate -> preflight -> spawn -> migrate -> switch -> finish; any failure
before the switch rolls back. The switch is the one point of no return: the
destination starts paused (-S) and runs the guest only when ``Switch.commit``
has been recorded and ``cont`` sent to it. ``Switch.resume_source`` is the only
code that ever resumes the source, and it refuses once the switch is committed
or while the destination process still exists: once the destination has run
the guest, the source would run it a second time on the same RAM and crash it.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuOpts, canonical_path, is_on
from ansible_collections.liveupdate.qemu.plugins.module_utils._destination import plan_destination, tap_downscripts
from ansible_collections.liveupdate.qemu.plugins.module_utils._discovery import (
    full_copy_risks, managed_paths, memory_backends, memory_reasons, probe_binary, qmp_socket_of, qmp_version,
    query_vm, state_reasons,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._migration_settings import set_capabilities
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    QemuProcess, kill_and_wait, launch_daemonized, process_alive, qemu_processes, shutdown_ladder, take_fd,
    tap_fd_of,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import Vm, users_of
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_spec import resolve_binary, validate_name

USERNET_HEADER_RE = re.compile(r'\((?P<netdev>[^)]+)\):\s*$')
USERNET_FWD_RE = re.compile(r'^\s*(?P<proto>TCP|UDP)\[HOST_FORWARD\]\s+\d+\s+(?P<haddr>\S+)\s+(?P<hport>\d+)\s+'
                            r'(?P<gaddr>\S+)\s+(?P<gport>\d+)')
MIGRATION_END = ('completed', 'failed', 'cancelled')


class UpdateFailed(LiveUpdateError):
    """The update stopped at ``step``; ``rolled_back`` tells whether the source runs as before."""


def event_time(event):
    stamp = event['timestamp']
    return stamp['seconds'] + stamp['microseconds'] / 1e6


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


def maps_shared(proc, paths):
    """True when ``proc``'s command line maps one of ``paths`` as a share=on memory backend
    (a clone that maps a file share=off has RAM of its own)."""
    for backend in proc.cmdline.memory_backends():
        if backend.get('mem-path') in paths and is_on(backend.get('share', 'off')):
            return True
    return False


def temporaries(proc):
    """The PATH.lu-TOKEN files named on a destination's command line that still exist."""
    found = []
    for arg in proc.argv:
        for value in [arg] + [v for dummy, v in QemuOpts.parse(arg).items]:
            value = value[len('unix:'):] if value.startswith('unix:') else value
            if canonical_path(value) != value and os.path.exists(value) and value not in found:
                found.append(value)
    return found


class Switch:
    """The point of no return, and the only way to resume the source."""

    def __init__(self):
        self.committed = False

    def commit(self):
        """Recorded *before* the destination is told to run: from here on it may have run the guest."""
        self.committed = True

    def resume_source(self, qmp, dest_pid):
        if self.committed:
            raise LiveUpdateError('refusing to resume the source: the destination may have run the guest')
        if dest_pid is not None and process_alive(dest_pid):
            raise LiveUpdateError('refusing to resume the source while destination pid %d exists' % dest_pid)
        qmp.execute('cont')


class Source:
    """The running VM to update: its process, canonical QMP socket and, when
    liveupdate.qemu.vm launched it, its runtime paths."""

    def __init__(self, proc, qmp_socket, paths):
        self.proc = proc
        self.qmp_socket = qmp_socket
        self.paths = paths
        self.name = proc.cmdline.name()


def locate(params):
    """(QMP socket, QemuProcess or None) of the VM named by name, socket or pid."""
    if params.get('name'):
        vm = Vm(params['runtime_dir'], validate_name(params['name']))
        proc = vm.process()
        if proc is None:
            raise InvalidInput('VM %s is not running (no live QEMU for %s)' % (params['name'], vm.paths.root))
        return vm.paths.qmp_socket, proc
    if params.get('socket'):
        return params['socket'], None
    proc = QemuProcess.from_pid(params['pid'])
    if proc is None:
        raise InvalidInput('pid %d is not a running QEMU' % params['pid'])
    qmp_socket = qmp_socket_of(proc, params['runtime_dir'])
    if not qmp_socket:
        raise InvalidInput('QEMU pid %d has no unix QMP socket' % proc.pid)
    return qmp_socket, proc


def connect_source(qmp, proc, runtime_dir):
    """The Source behind the connected session ``qmp``; the process listening on
    the socket must be the one that was located."""
    if proc is None:
        proc = QemuProcess.from_pid(qmp.peer_pid)
        if proc is None:
            raise InvalidInput('the process listening on %s is not QEMU' % qmp.path)
    elif qmp.peer_pid != proc.pid:
        raise InvalidInput('QMP socket %s belongs to pid %d, not to QEMU pid %d' % (qmp.path, qmp.peer_pid, proc.pid))
    return Source(proc, qmp.path, managed_paths(proc, runtime_dir))


class UpdateLock:
    """One live update per VM at a time: flock on a file named after its QMP socket."""

    def __init__(self, runtime_dir, qmp_socket, wait):
        directory = os.path.join(runtime_dir, '.locks')
        key = os.path.normpath(canonical_path(os.path.abspath(qmp_socket)))
        self.path = os.path.join(directory, key.strip('/').replace('/', '%') + '.lock')
        self.wait = wait
        self.fd = None
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self._unusable(exc)

    def _unusable(self, exc):
        return UpdateFailed('cannot use the update lock %s: %s' % (self.path, exc), step='lock', rolled_back=True)

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._unusable(exc)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 64, 0).decode('ascii', 'replace').strip()
                    os.close(self.fd)
                    raise UpdateFailed('another live update of this VM is in progress (pid %s); lock %s'
                                       % (holder or '?', self.path), step='lock', rolled_back=True)
                time.sleep(0.05)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


class LiveUpdate:
    """One live update; ``run()`` returns the module result or raises UpdateFailed."""

    def __init__(self, params, check_mode, probes=None):
        self.params = params
        self.check_mode = check_mode
        self.probes = {} if probes is None else probes  # target binary -> probe_binary(), shared by a batch
        self.timeout = params['timeout']
        self.switch = Switch()
        self.timings = {}
        self.dest_pid = None
        self.dest = None
        self.plan = None
        self.source_caps = {}
        self.result = dict(changed=False)

    def _timed(self, step, func, *args):
        start = time.monotonic()
        try:
            return func(*args)
        finally:
            self.timings[step] = round(time.monotonic() - start, 4)

    def run(self):
        try:
            try:
                return self._run()
            except OSError as exc:  # a file of the VM that cannot be read, renamed or removed
                # the step that raised: _timed records it on the way out
                step = list(self.timings)[-1] if self.timings else 'locate'
                raise UpdateFailed('live update of VM %s failed at %s: %s'
                                   % (self.result.get('vm', {}).get('name', '?'), step, exc),
                                   step=step, rolled_back=not self.switch.committed)
        except LiveUpdateError as exc:
            # A failure reports what was learnt up to it (vm, old, target, plan, timings) too.
            partial = dict((k, v) for k, v in self.result.items() if k not in ('changed', 'msg'))
            partial['timings'] = self.timings
            partial.update(exc.details)
            exc.details = partial
            raise

    def _run(self):
        target = resolve_binary(self.params['target_binary'])
        qmp_socket, proc = self._timed('locate', locate, self.params)
        self.lock = UpdateLock(self.params['runtime_dir'], qmp_socket, self.params['lock_timeout'])
        with self.lock:
            with QMPSession(qmp_socket, self.timeout) as src:
                self.source = source = connect_source(src, proc, self.params['runtime_dir'])
                self.result.update(vm=dict(name=source.name, qmp_socket=qmp_socket, managed=source.paths is not None))
                if self._timed('recover', self.recover, src):
                    return self._finish()
                if not self._timed('preflight', self.preflight, src, target):
                    return self._finish()
                if self.check_mode:
                    self.result['changed'] = True
                    return self._finish()
                self.result['changed'] = True
                started = time.monotonic()
                try:
                    self._timed('spawn', self.spawn, target)
                    self._timed('migrate', self.migrate, src)
                    self._timed('switch', self.switch_over, src)
                except (LiveUpdateError, OSError) as exc:
                    self._fail(src, exc)
                finally:
                    if self.dest is not None:
                        self.dest.close()
                try:
                    self._timed('finish', self.finish, src)
                except (LiveUpdateError, OSError) as exc:
                    raise UpdateFailed('live update of VM %s: the guest runs on the destination (pid %s), but '
                                       'finishing failed: %s' % (source.name, self.dest_pid, exc),
                                       step='finish', rolled_back=False, changed=True, dest_pid=self.dest_pid)
                self.timings['engine'] = round(time.monotonic() - started, 4)
        return self._finish()

    def _finish(self):
        self.result['timings'] = self.timings
        return self.result

    # --- an earlier update that was interrupted (its module process killed) ---

    def recover(self, src):
        """Settle other QEMUs left on this VM's memory file by an interrupted update, so
        that exactly one runs it. Returns True when that settled the VM (nothing more to do)."""
        backends = memory_backends(src, self.source.proc.pid)
        memory = set(b['path'] for b in backends if b['share'] and b['path'])
        others = [p for p in qemu_processes() if p.pid != self.source.proc.pid and maps_shared(p, memory)]
        if not others:
            return False
        mine = src.execute('query-status')['status']
        for other in others:
            status = self._status_of(other)
            self.result.setdefault('recovered', []).append(dict(pid=other.pid, status=status))
            if self.check_mode:
                continue
            if mine != 'postmigrate' and status in ('inmigrate', 'paused', 'prelaunch', 'postmigrate', None):
                # A destination that never ran the guest (the source still has it), or a
                # source the switch left behind: neither may run again.
                kill_and_wait(other.pid)
                self._remove_temporaries(other)
            elif mine == 'postmigrate' and status in ('inmigrate', 'paused', 'prelaunch'):
                # Migrated, never resumed on the destination: the guest goes back to the source.
                kill_and_wait(other.pid)
                self._remove_temporaries(other)
                self.switch.resume_source(src, other.pid)
            elif mine == 'postmigrate' and status == 'running':
                # The switch happened: complete it, the destination keeps the guest.
                self.switch.commit()
                # A destination pidfile the source had no twin of is not renamed, but removed.
                source_cmdline = self.source.proc.cmdline
                stray = None if source_cmdline.has('pidfile') else (other.cmdline.values('pidfile') or [None])[0]
                renames = [(t, canonical_path(t)) for t in temporaries(other) if t != stray]
                forwards = host_forwards(src) if source_cmdline.has('netdev') else []
                self._take_over(src, other.pid, other.argv, 'running', renames, stray, backends,
                                tap_downscripts(self.source.proc.argv), forwards)
                self.result.update(changed=True, msg='completed an interrupted live update: VM %s runs on pid %d'
                                   % (self.source.name, other.pid))
                return True
            else:
                raise UpdateFailed('VM %s: QEMU pid %d (%s) and pid %d (%s) both map its memory; settle them first'
                                   % (self.source.name, self.source.proc.pid, mine, other.pid, status),
                                   step='recover', rolled_back=True)
        return False

    @staticmethod
    def _remove_temporaries(proc):
        for path in temporaries(proc):
            os.unlink(path)

    def _status_of(self, proc):
        """Run state of another QEMU over any QMP socket its command line names, or None."""
        for path in proc.cmdline.qmp_sockets():
            for candidate in (path, canonical_path(path)):
                if candidate == self.source.qmp_socket or not os.path.exists(candidate):
                    continue
                try:
                    with QMPSession(candidate, self.timeout) as qmp:
                        if qmp.peer_pid == proc.pid:
                            return qmp.execute('query-status')['status']
                except QMPError:
                    continue
        return None

    # --- preflight ---

    def preflight(self, src, target):
        """Everything that could refuse the update; returns False when there is nothing to do."""
        source = self.source
        vm = query_vm(src, source.proc.pid)
        self.before = vm
        if target not in self.probes:
            self.probes[target] = probe_binary(target)
        self.target = self.probes[target]
        self.result['old'] = dict(pid=source.proc.pid, binary=source.proc.exe, **vm['running'])
        self.result['target'] = dict(binary=target, version=self.target['version'], package=self.target['package'])
        up_to_date = (source.proc.binary_state() == 'current'
                      and (vm['running']['version'], vm['running']['package'])
                      == (self.target['version'], self.target['package']))
        if up_to_date and not self.params['force']:
            self.result['msg'] = 'VM %s already runs QEMU %s (%s)' % (source.name, self.target['version'],
                                                                      self.target['package'])
            return False
        reasons = state_reasons(vm)
        copy_reasons = memory_reasons(vm)
        self.full_copy = bool(copy_reasons)
        if copy_reasons and not self.params['allow_full_copy']:
            reasons += copy_reasons
        elif copy_reasons and not self.params['force']:
            reasons += ['%s; force: true copies anyway' % risk for risk in full_copy_risks(vm)]
        if 'x-ignore-shared' not in self.target['capabilities'] and not self.full_copy:
            reasons.append('target binary %s has no x-ignore-shared migration capability' % target)
        if vm['machine'] not in self.target['machines']:
            reasons.append('target binary %s does not know machine type %s' % (target, vm['machine']))
        if vm['capabilities'].get('postcopy-ram'):
            reasons.append('postcopy-ram is on; turn it off before a live update')
        if reasons:
            raise UpdateFailed('cannot live-update VM %s: %s' % (source.name, '; '.join(reasons)),
                               step='preflight', rolled_back=True, reasons=reasons)
        self.plan = plan_destination(source.proc.argv, source.qmp_socket, vm['machine'], secrets.token_hex(4))
        self.forwards = host_forwards(src) if source.proc.cmdline.has('netdev') else []
        self.result['plan'] = dict(self.plan.as_dict(target), host_forwards=[list(f) for f in self.forwards],
                                   full_copy=self.full_copy, was=vm['status'])
        return True

    # --- spawn ---

    def spawn(self, target):
        fds = []
        try:
            for tap in self.plan.taps:
                fd = tap.source_fd if tap.source_fd is not None else tap_fd_of(self.source.proc.pid, tap.ifname)
                if fd is None:
                    raise UpdateFailed('tap %s is not open in QEMU pid %d' % (tap.ifname, self.source.proc.pid),
                                       step='spawn', rolled_back=True)
                fds.append(take_fd(self.source.proc.pid, fd))
            self.dest_argv = self.plan.argv(target, fds)
            self.dest_log = self.source.paths.qemu_log if self.source.paths else self.lock.path[:-len('.lock')] + '.log'
            self.dest_log_start = os.path.getsize(self.dest_log) if os.path.exists(self.dest_log) else 0
            launch_daemonized(self.dest_argv, self.dest_log, pass_fds=fds)
        finally:
            for fd in fds:
                os.close(fd)
        with open(self.plan.pidfile) as handle:
            self.dest_pid = int(handle.read().strip())
        self.dest = QMPSession(self.plan.qmp_socket, self.timeout)
        self.dest.connect()

    # --- migrate ---

    def migrate(self, src):
        caps = dict(events=True)
        if not self.full_copy:
            caps['x-ignore-shared'] = True
        self.source_caps = dict((c, self.before['capabilities'][c]) for c in caps)
        set_capabilities(self.dest, caps)
        uri = 'unix:%s.migrate' % self.plan.qmp_socket
        self.dest.execute('migrate-incoming', {'uri': uri})
        set_capabilities(src, caps)
        src.drain_events()
        self.dest.drain_events()
        src.execute('migrate', {'uri': uri})
        deadline = self.params['migration_timeout']
        try:
            event = self.dest.wait_event('MIGRATION', deadline, lambda e: e['data']['status'] in MIGRATION_END)
        except QMPError:
            src.execute('migrate_cancel')
            raise
        if event['data']['status'] != 'completed':
            time.sleep(0.1)  # let the destination write why
            raise UpdateFailed('the destination reports the migration %s: %s'
                               % (event['data']['status'], self._dest_output() or 'no message'),
                               step='migrate', rolled_back=True)

    def _dest_output(self):
        """What the destination wrote to its log since it was launched."""
        try:
            with open(self.dest_log, 'rb') as handle:
                handle.seek(self.dest_log_start)
                return handle.read().decode('utf-8', 'replace').strip()[-1000:]
        except OSError:
            return ''

    # --- switch ---

    def switch_over(self, src):
        # The destination can report the migration complete while the source is still
        # finishing its side (finish-migrate): wait for the source to settle.
        deadline = time.monotonic() + self.timeout
        status = src.execute('query-status')['status']
        while status == 'finish-migrate' and time.monotonic() < deadline:
            time.sleep(0.001)
            status = src.execute('query-status')['status']
        if status != 'postmigrate':
            raise UpdateFailed('source is %s after the migration, not postmigrate' % status, step='switch')
        self.switch.commit()
        if self.before['status'] == 'running':
            self.dest.execute('cont')
            self.resume = self.dest.wait_event('RESUME', self.timeout)
        stats = src.execute('query-migrate')
        self.result['migration'] = dict(total_time_ms=stats.get('total-time'), downtime_ms=stats.get('downtime'),
                                        setup_time_ms=stats.get('setup-time'),
                                        bytes=stats.get('ram', {}).get('transferred'), full_copy=self.full_copy)
        if self.before['status'] == 'running':
            stop = src.wait_event('STOP', self.timeout)
            self.result['guest_pause_ms'] = round((event_time(self.resume) - event_time(stop)) * 1000, 3)
        # The destination keeps the source's capabilities: x-ignore-shared left on
        # would drop guest RAM from a later migration to another host.
        set_capabilities(self.dest, self.source_caps)
        self.dest_status = self.dest.execute('query-status')['status']

    # --- finish (after the switch: never roll back) ---

    def finish(self, src):
        self._take_over(src, self.dest_pid, self.dest_argv, self.dest_status, self.plan.renames,
                        None if self.plan.canonical_pidfile else self.plan.pidfile,
                        self.before['memory_backends'], self.plan.downscripts, self.forwards)

    def _take_over(self, src, dest_pid, dest_argv, dest_status, renames, stray, backends, downscripts, forwards):
        """After the switch, by an update or by the recovery of an interrupted one: end the
        source, give its names to the destination (``renames``; ``stray``, a temporary file
        without a canonical twin, is removed), add its host forwards there, record the VM."""
        # Owner and mode of the source's files, given to the destination's (a
        # daemonized QEMU creates its sockets with umask 027).
        modes = {}
        for dummy, canonical in renames:
            try:
                modes[canonical] = os.stat(canonical)
            except OSError:
                pass
        self.result['stop_method'] = self._stop_source(src, backends, downscripts)
        for temporary, canonical in renames:
            if os.path.exists(temporary):
                if canonical in modes:
                    os.chown(temporary, modes[canonical].st_uid, modes[canonical].st_gid)
                    os.chmod(temporary, modes[canonical].st_mode & 0o7777)
                os.rename(temporary, canonical)
        if stray and os.path.exists(stray):
            os.unlink(stray)
        with QMPSession(self.source.qmp_socket, self.timeout) as dest:
            for netdev, rule in forwards:
                dest.execute('human-monitor-command', {'command-line': 'hostfwd_add %s %s' % (netdev, rule)})
            self.result['new'] = dict(pid=dest_pid, binary=dest_argv[0], status=dest_status, **qmp_version(dest))
        if self.source.paths:
            state = self.source.paths.read_state() or {}
            state['argv'] = dest_argv
            state['binary'] = dest_argv[0]
            state.setdefault('spec', {})['binary'] = dest_argv[0]
            self.source.paths.write_state(state)

    # --- failure ---

    def _fail(self, src, exc):
        step = next((s for s in ('switch', 'migrate', 'spawn') if s in self.timings), 'spawn')
        details = dict(exc.details) if isinstance(exc, LiveUpdateError) else {}
        details.pop('step', None)
        details.pop('rolled_back', None)
        if self.switch.committed:
            # Past the point of no return: the source must never run again.
            self._quit_source_after_commit(src)
            raise UpdateFailed('live update of VM %s failed after the switch (%s): the guest runs only on the '
                               'destination, if at all; the source was stopped and will not be resumed'
                               % (self.source.name, exc), step=step, rolled_back=False, changed=True,
                               dest_pid=self.dest_pid, **details)
        rolled_back = self.rollback(src)
        raise UpdateFailed('live update of VM %s failed at %s: %s%s'
                           % (self.source.name, step, exc, '' if rolled_back else
                              '; ROLLBACK INCOMPLETE, check the VM'),
                           step=step, rolled_back=rolled_back, **details)

    def _quit_source_after_commit(self, src):
        try:
            self._stop_source(src, self.before['memory_backends'], self.plan.downscripts)
        except LiveUpdateError:
            pass

    def _stop_source(self, src, backends, downscripts):
        """End the source after the switch. A backend with discard-data=on would punch
        the guest's pages out of the shared memory file when the source exits: the
        destination runs on that file now. A source with tap ``downscripts`` is killed,
        so that they leave the destination's taps alone; others get the shutdown ladder."""
        for backend in backends:
            if backend['type'] == 'memory-backend-file':
                try:
                    src.execute('qom-set', {'path': '/objects/%s' % backend['id'], 'property': 'discard-data',
                                            'value': False})
                except QMPError:
                    pass  # past the switch, the source is ended whatever it answers
        if downscripts:
            # The guest state is on the destination already: nothing is lost by not quitting.
            kill_and_wait(self.source.proc.pid)
            return 'SIGKILL'
        return shutdown_ladder(self.source.proc.pid, lambda: src.execute('quit'), self.params['shutdown_timeout'])

    def rollback(self, src):
        """Before the switch: destination killed and cleaned, source back in its run state."""
        if self.dest_pid is not None:
            kill_and_wait(self.dest_pid)
        for proc in users_of(self.plan.pidfile):  # a destination that hung before writing its pidfile
            kill_and_wait(proc.pid)
        for temporary, dummy in self.plan.renames:
            if os.path.exists(temporary):
                os.unlink(temporary)
        for path in (self.plan.pidfile, self.plan.qmp_socket + '.migrate'):
            if os.path.exists(path):
                os.unlink(path)
        try:
            migration = src.execute('query-migrate').get('status', 'none')
            if migration not in MIGRATION_END + ('none',):
                src.execute('migrate_cancel')
                deadline = time.monotonic() + self.timeout
                while src.execute('query-migrate').get('status') not in MIGRATION_END:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.01)
            status = src.execute('query-status')['status']
            if self.before['status'] == 'running' and status != 'running':
                self.switch.resume_source(src, self.dest_pid)
            set_capabilities(src, self.source_caps)
            return src.execute('query-status')['status'] == self.before['status']
        except LiveUpdateError:
            return False


def update_many(params, vms, check_mode, concurrency=1, stop_on_failure=True):
    """Live-update several VMs (each a dict with name, socket or pid), ``concurrency``
    at a time. Returns one result per VM that was started, in order; a failed one
    has ``failed: True`` and its message. With ``stop_on_failure`` no VM is started
    after the first failure."""
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
