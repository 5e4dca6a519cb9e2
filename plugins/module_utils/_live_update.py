# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The live update engine: move one running VM onto a new QEMU process started
from another binary while its RAM stays in place.

Steps: locate -> lock -> recover -> preflight -> spawn -> migrate -> switch ->
finish. Each step returns a small value that the next takes (``Preflight``,
``Spawned``, ``Switched``); any failure before the switch rolls back. The
switch is the one point of no return: the destination starts paused (-S) and
runs the guest only when ``Switch.commit`` has been recorded and ``cont`` sent
to it. ``Switch.resume_source`` is the only code that ever resumes the source,
and it refuses once the switch is committed or while the destination process
still exists: once the destination has run the guest, the source would run it
a second time on the same RAM and crash it.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass

from ansible_collections.liveupdate.qemu.plugins.module_utils._destination import plan_destination
from ansible_collections.liveupdate.qemu.plugins.module_utils._drain import ChardevDrain
from ansible_collections.liveupdate.qemu.plugins.module_utils._eligibility import runs_target, update_refusals
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError, UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path, temp_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._faults import fault_point
from ansible_collections.liveupdate.qemu.plugins.module_utils._journal import Journal
from ansible_collections.liveupdate.qemu.plugins.module_utils._locate import connect_source, locate, relocate
from ansible_collections.liveupdate.qemu.plugins.module_utils._lock import UpdateLock
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    TapHeaderGuard, kill_and_wait, launch_detached, process_alive, process_state, remove_files, take_fd, tap_fd_of,
    users_of,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import (
    missing_types, probe_binary, resolve_binary,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import (
    MIGRATION_END, event_time, host_forwards, query_vm, set_capabilities,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._recovery import recover
from ansible_collections.liveupdate.qemu.plugins.module_utils._sockets import (
    freeze, stream_fd_of, stream_peers, tcp_connections, thaw, unix_stream_links, unread_bytes,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._takeover import TakeOver
from ansible_collections.liveupdate.qemu.plugins.module_utils._transfer import cancel_migration, transfer_for
from ansible_collections.liveupdate.qemu.plugins.module_utils._verify import verify_guest
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import wait_for


# How long the source may take to read what a stopped stream peer had already sent.
STREAM_DRAIN_TIMEOUT = 2.0


class Switch:
    """The point of no return, and the only way to resume the source."""

    def __init__(self, journal=None):
        self.committed = False
        self.journal = journal

    def commit(self, dest_pid=None):
        """Recorded *before* the destination is told to run, in memory and in the journal (for
        a successor, should this process die): from here on it may have run the guest."""
        if self.journal is not None:
            self.journal.update(phase='switching', dest_pid=dest_pid)
        self.committed = True

    def resume_source(self, qmp, dest_pid):
        if self.committed:
            raise LiveUpdateError('refusing to resume the source: the destination may have run the guest')
        if dest_pid is not None and process_alive(dest_pid):
            raise LiveUpdateError('refusing to resume the source while destination pid %d exists' % dest_pid)
        qmp.execute('cont')


@dataclass
class Preflight:
    """What preflight learnt: the VM as QEMU reports it (``vm``), the target binary's
    probe, the destination's plan, the host forwards to re-add, the transfer mode and the
    processes at the other end of its stream netdevs (held still while the sockets change hands)."""

    vm: dict
    target: dict
    plan: object
    forwards: list
    transfer: object
    frozen: list = None

    @property
    def source_caps(self):
        """The operator's capabilities: the source's values of those the transfer changes, and
        those the operator turned on (the destination gets them all after the switch)."""
        caps = dict((name, True) for name, on in self.vm['capabilities'].items() if on)
        caps.update(self.transfer.source_capabilities(self.vm['capabilities']))
        return caps

    @property
    def stray(self):
        """The destination's pidfile when the source had none (removed, not renamed)."""
        return None if self.plan.canonical_pidfile else self.plan.pidfile

    def dest_files(self):
        """Every file the destination and the transfer create under a temporary name."""
        return ([t for t, dummy in self.plan.renames] + [self.plan.pidfile]
                + self.transfer.temporaries(self.plan.qmp_socket))


@dataclass
class Spawned:
    """The destination QEMU, started paused and waiting for the migration."""

    pid: int
    argv: list
    qmp: object
    log_path: str
    log_start: int
    drain: ChardevDrain
    child: object

    def connect(self, timeout):
        """Connect to the destination's monitor and attach to its consoles (before the
        migration loads the devices: see _drain)."""
        try:
            # With cpr-transfer the monitor's socket appears only once the new QEMU has read
            # the source's state; connect(starting=True) covers a socket not yet listening.
            wait_for(lambda: os.path.exists(self.qmp.path) or self.child.poll() is not None, timeout,
                     'the new QEMU to create its QMP socket %s' % self.qmp.path, interval=0.002)
            self.qmp.connect(starting=True)
            self.drain.start().wait_accepted(self.qmp, timeout)
        except LiveUpdateError as exc:
            self.drain.stop()
            self.qmp.close()
            if self.child.poll() is not None:  # it listened, then failed to build the machine
                raise UpdateFailed('QEMU exited with code %d at start: %s' % (self.child.returncode, self.output()
                                                                              or '(no output)'), step='spawn')
            exc.details['dest_pid'] = self.pid  # for the rollback: the process runs, whatever its QMP does
            raise

    def output(self):
        """What the destination wrote to its log since it was launched."""
        try:
            with open(self.log_path, 'rb') as handle:
                handle.seek(self.log_start)
                return handle.read().decode('utf-8', 'replace').strip()[-1000:]
        except OSError:
            return ''


@dataclass
class Switched:
    """The destination runs the guest (or holds it paused, as the source did)."""

    dest_status: str
    migration: dict
    guest_pause_ms: float = None


# --- the steps ---

def preflight(src, source, target, probe, params):
    """Everything that could refuse the update. Returns (Preflight or None when the VM
    already runs the target, the result fields it learnt)."""
    vm = query_vm(src, source.proc.pid)
    learnt = dict(old=dict(pid=source.proc.pid, binary=source.proc.exe, **vm['running']),
                  target=dict(binary=target, version=probe['version'], package=probe['package']))
    if runs_target(vm, source.proc.binary_state(), probe) and not params['force']:
        learnt['msg'] = 'VM %s already runs QEMU %s (%s)' % (source.name, probe['version'], probe['package'])
        return None, learnt
    reasons, mode = update_refusals(vm, probe, missing_types(probe, source.proc.cmdline.qom_types()),
                                    params['transfer_mode'], params['allow_full_copy'], params['force'])
    if reasons:
        raise UpdateFailed('cannot live-update VM %s: %s' % (source.name, '; '.join(reasons)),
                           step='preflight', rolled_back=True, reasons=reasons, **learnt)
    transfer = transfer_for(mode)
    token = secrets.token_hex(4)
    plan = plan_destination(source.proc.argv, source.qmp_socket, vm['machine'], token,
                            transfer.incoming_options(temp_path(source.qmp_socket, token)))
    forwards = host_forwards(src) if source.proc.cmdline.has('netdev') else []
    frozen = stream_handovers(source, plan)
    connections = connections_reset(source.proc.pid, forwards)
    learnt['transfer_mode'] = mode
    learnt['connections'] = connections
    learnt['plan'] = dict(plan.as_dict(target), host_forwards=[list(f) for f in forwards], transfer_mode=mode,
                          full_copy=transfer.full_copy, was=vm['status'], held_still=frozen)
    if connections and params.get('open_connections', 'refuse') == 'refuse':
        reason = ('%d open connection(s) through QEMU\'s own user-mode networking would be reset (%s); '
                  'set open_connections=reset to go on, or use passt (-netdev stream) or a tap'
                  % (len(connections), ', '.join('%s-%s' % (c['local'], c['remote']) for c in connections[:5])))
        raise UpdateFailed('cannot live-update VM %s: %s' % (source.name, reason), step='preflight',
                           rolled_back=True, reasons=[reason], **learnt)
    return Preflight(vm, probe, plan, forwards, transfer, frozen), learnt


def stream_handovers(source, plan):
    """Find the source's socket of each stream netdev found by path; returns the pids of the
    processes at their other ends, which the update holds still (see spawn)."""
    if not plan.streams:
        return []
    links = unix_stream_links(source.proc.pid)
    peers = []
    for stream in plan.streams:
        if stream.source_fd is None:
            stream.source_fd = stream_fd_of(source.proc.pid, stream.path, links)
        if stream.source_fd is None:
            raise UpdateFailed('cannot live-update VM %s: stream netdev %s is not connected to %s in QEMU pid %d'
                               % (source.name, stream.netdev_id, stream.path, source.proc.pid),
                               step='preflight', rolled_back=True)
        peers += stream_peers(source.proc.pid, stream.source_fd, links)
    return sorted(set(peers))


def connections_reset(pid, forwards):
    """The established TCP connections QEMU ``pid`` holds itself: user-mode networking's
    (slirp's) host-side sockets, which die with the process. Each says what it is."""
    forwarded = set(rule.split(':')[2].split('-')[0] for dummy, rule in forwards if rule.startswith('tcp:'))
    return [dict(conn, kind='forwarded to the guest' if conn['local'].rsplit(':', 1)[1] in forwarded
                 else 'opened by the guest or by QEMU')
            for conn in tcp_connections(pid)]


def spawn(source, pre, target, log_path, timeout):
    """Start the destination (-S -incoming defer) with the source's tap and stream fds; connect to it.

    A tap's vnet header size is the device's, not the fd's: the destination sets it to 10 bytes
    while it starts, under the source that still runs the guest with 12, and every frame in
    between is misframed. A TapHeaderGuard puts it back until the destination answers QMP
    (its devices are set up by then; the migration loads the source's value).

    Two processes reading one stream socket would split its frames between them (QEMU 7.2's
    destination then dies on an assertion): its other end is stopped first, and the source
    reads what was already sent, so the destination finds nothing to read before the switch.
    The caller continues it once the source is gone (see LiveUpdate._update)."""
    fds, stream_fds, guard = [], [], None
    try:
        try:
            for tap in pre.plan.taps:
                fd = tap.source_fd if tap.source_fd is not None else tap_fd_of(source.proc.pid, tap.ifname)
                if fd is None:
                    raise UpdateFailed('tap %s is not open in QEMU pid %d' % (tap.ifname, source.proc.pid),
                                       step='spawn', rolled_back=True)
                fds.append(take_fd(source.proc.pid, fd))
            stream_fds = [take_fd(source.proc.pid, stream.source_fd) for stream in pre.plan.streams]
            if pre.frozen:
                freeze(pre.frozen)
                for stream, fd in zip(pre.plan.streams, stream_fds):
                    _wait_read(stream, fd)
            guard = TapHeaderGuard(fds).start()
            argv = pre.plan.argv(target, fds, stream_fds)
            log_start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            ready = pre.transfer.ready_path(pre.plan.qmp_socket)
            child = launch_detached(argv, log_path, lambda: os.path.exists(ready), pass_fds=fds + stream_fds,
                                    cwd=source.proc.cwd())
        finally:
            for fd in fds + stream_fds:
                os.close(fd)
        spawned = Spawned(child.pid, argv, QMPSession(pre.plan.qmp_socket, timeout), log_path, log_start,
                          ChardevDrain(pre.plan.console_sockets), child)
        if pre.transfer.monitor_before_migrate:
            spawned.connect(timeout)
    finally:
        if guard is not None:
            guard.stop()
    fault_point('spawned', source.proc.pid, child.pid)
    return spawned


def _wait_read(stream, fd):
    """Until the source has read all that the stopped peer of ``stream`` had sent."""
    try:
        wait_for(lambda: unread_bytes(fd) == 0, STREAM_DRAIN_TIMEOUT, 'the old QEMU to read')
    except LiveUpdateError:
        raise UpdateFailed('stream netdev %s: the old QEMU leaves %d bytes unread (a paused guest does not take '
                           'its network frames)' % (stream.netdev_id, unread_bytes(fd)), step='spawn',
                           rolled_back=True)


def migrate(src, source, spawned, pre, timeout):
    pre.transfer.run(src, spawned, pre.plan.qmp_socket, timeout,
                     started=lambda: fault_point('migrating', source.proc.pid, spawned.pid))
    fault_point('migrated', source.proc.pid, spawned.pid)


def switch_over(src, source, spawned, pre, switch, timeout):
    """Commit the switch and run the guest on the destination. Returns Switched."""
    dest = spawned.qmp
    was_running = pre.vm['status'] == 'running'
    # The destination can report the migration complete while the source is still finishing
    # its side: the source must have completed it too, or a failure there would resume the guest
    # on the source. Told by the source's own events, already received: the guest is paused, and
    # a QMP round trip costs a millisecond of it.
    stop = src.wait_event('STOP', timeout) if was_running else None
    ended = src.wait_event('MIGRATION', timeout, lambda e: e['data']['status'] in MIGRATION_END)['data']['status']
    if ended != 'completed':
        raise UpdateFailed('the source reports the migration %s' % ended, step='switch')
    # A destination that is gone or frozen never ran the guest: the source may go on. Asked
    # now, not assumed, because past the commit it may not. It holds the guest, paused (-S):
    # it said so with its MIGRATION completed event (see migrate). Both through /proc: no round trip.
    for pid, what in ((source.proc.pid, 'source'), (spawned.pid, 'destination')):
        state = process_state(pid)
        if state in (None, 'Z', 'X', 'T', 't'):
            raise UpdateFailed('the %s (pid %d) %s after the migration%s'
                               % (what, pid, 'is stopped' if state in ('T', 't') else 'exited',
                                  ': ' + (spawned.output() or 'no message') if what == 'destination' else ''),
                               step='switch')
    switch.commit(spawned.pid)
    fault_point('committed', source.proc.pid, spawned.pid)
    if was_running:
        dest.execute('cont')
        resume = dest.wait_event('RESUME', timeout)
    stats = src.execute('query-migrate')
    migration = dict(total_time_ms=stats.get('total-time'), downtime_ms=stats.get('downtime'),
                     setup_time_ms=stats.get('setup-time'), bytes=stats.get('ram', {}).get('transferred'),
                     full_copy=pre.transfer.full_copy, mode=pre.transfer.mode)
    pause = None
    if was_running:
        pause = round((event_time(resume) - event_time(stop)) * 1000, 3)
    # The destination keeps the source's capabilities: x-ignore-shared left on
    # would drop guest RAM from a later migration to another host.
    set_capabilities(dest, pre.source_caps)
    fault_point('switched', source.proc.pid, spawned.pid)
    return Switched(dest.execute('query-status')['status'], migration, pause)


def rollback(src, pre, dest_pid, switch, timeout):
    """Before the switch: destination killed and cleaned, source back in its run state.
    Returns True when the source runs as before."""
    if dest_pid is not None:
        kill_and_wait(dest_pid)
    for proc in users_of(pre.plan.pidfile):  # a destination that hung before writing its pidfile
        kill_and_wait(proc.pid)
    remove_files(pre.dest_files())
    try:
        cancel_migration(src, timeout)
        pre.transfer.restore_source(src, pre.vm)
        if pre.vm['status'] == 'running' and src.execute('query-status')['status'] != 'running':
            switch.resume_source(src, dest_pid)
        set_capabilities(src, pre.source_caps)
        return src.execute('query-status')['status'] == pre.vm['status']
    except LiveUpdateError:
        return False


# --- one update, step by step ---

class LiveUpdate:
    """One live update; ``run()`` returns the module result or raises UpdateFailed."""

    def __init__(self, params, check_mode, probes=None):
        self.params = params
        self.check_mode = check_mode
        self.probes = {} if probes is None else probes  # target binary -> probe_binary(), shared by a batch
        self.switch = Switch()  # given the VM's journal once the VM is locked
        self.timings = {}
        self.step = 'locate'
        self.result = dict(changed=False)

    def _timed(self, step, func, *args):
        self.step = step
        start = time.monotonic()
        try:
            return func(*args)
        finally:
            self.timings[step] = round(time.monotonic() - start, 4)

    def run(self):
        try:
            try:
                self._run()
            except OSError as exc:  # a file of the VM that cannot be read, renamed or removed
                raise UpdateFailed('live update of VM %s failed at %s: %s'
                                   % (self.result.get('vm', {}).get('name', '?'), self.step, exc),
                                   step=self.step, rolled_back=not self.switch.committed)
        except LiveUpdateError as exc:
            # A failure reports what was learnt up to it (vm, old, target, plan, timings) too.
            partial = dict((k, v) for k, v in self.result.items() if k not in ('changed', 'msg'))
            partial.update(timings=self.timings, step=self.step, rolled_back=not self.switch.committed,
                           changed=self.switch.committed)
            partial.update(exc.details)
            exc.details = partial
            raise
        self.result['timings'] = self.timings
        return self.result

    def _run(self):
        params = self.params
        target = resolve_binary(params['target_binary'])
        qmp_socket, proc = self._timed('locate', locate, params)
        self.step = 'lock'
        with UpdateLock(params['runtime_dir'], qmp_socket, params['lock_timeout']) as lock:
            qmp_socket, proc = relocate(params, qmp_socket, proc)
            journal = Journal(lock.sibling('.journal'))
            self.switch.journal = journal
            with QMPSession(qmp_socket, params['timeout']) as src:
                source = self._timed('connect', connect_source, src, proc, params['runtime_dir'])
                self.result['vm'] = dict(name=source.name, qmp_socket=canonical_path(qmp_socket),
                                         managed=source.paths is not None)
                if self._recover(src, source, journal):
                    return
                if target not in self.probes:
                    self.probes[target] = probe_binary(target)
                pre, learnt = self._timed('preflight', preflight, src, source, target, self.probes[target], params)
                self.result.update(learnt)
                if pre is None:
                    return
                self.result['changed'] = True
                if not self.check_mode:
                    log_path = source.paths.qemu_log if source.paths else lock.sibling('.log')
                    self._update(src, source, pre, target, log_path, journal)

    def _recover(self, src, source, journal):
        """The recover step; True when it completed an interrupted update (nothing more to do)."""
        outcome = self._timed('recover', recover, src, source, self.switch, journal.read(), self.params,
                              self.check_mode)
        if not self.check_mode:
            journal.clear()
        recovered = outcome.pop('recovered')
        if recovered:
            self.result['recovered'] = recovered
        self.result.update(outcome)
        return 'msg' in outcome

    def _update(self, src, source, pre, target, log_path, journal):
        params = self.params
        started = time.monotonic()
        # Before anything changes: what a successor needs to undo it (see _journal).
        journal.write(phase='spawning', source_pid=source.proc.pid, was=pre.vm['status'],
                      capabilities=pre.source_caps, migration_mode=pre.vm['migration_mode'], temporaries=pre.dest_files(), renames=pre.plan.renames,
                      stray=pre.stray, forwards=pre.forwards, dest_pid=None, frozen=pre.frozen)
        try:
            spawned = self._timed('spawn', spawn, source, pre, target, log_path, params['timeout'])
        except (LiveUpdateError, OSError) as exc:
            try:
                self._fail(src, source, pre, None, exc, journal)
            finally:
                thaw(pre.frozen)
        try:
            try:
                self._move(src, source, pre, spawned, journal)
            finally:
                # One QEMU holds the stream sockets now (the source has quit, or the destination
                # was ended): their other ends may go on. Never left stopped, whatever failed.
                thaw(pre.frozen)
            self.timings['engine'] = round(time.monotonic() - started, 4)
            if self.result.get('connections'):
                self.result['connections_reset'] = self.result['connections']
            self._timed('verify', self._verify, source, pre, spawned)
        finally:
            self.result['console_bytes'] = dict((canonical_path(path), count)
                                                for path, count in spawned.drain.stop().items())

    def _move(self, src, source, pre, spawned, journal):
        """Migrate, switch and finish: the guest runs on ``spawned`` under the VM's names."""
        params = self.params
        try:
            journal.prepare(phase='switching', dest_pid=spawned.pid)  # the commit is then a rename
            self._timed('migrate', migrate, src, source, spawned, pre, params['migration_timeout'])
            switched = self._timed('switch', switch_over, src, source, spawned, pre, self.switch, params['timeout'])
        except (LiveUpdateError, OSError) as exc:
            self._fail(src, source, pre, spawned, exc, journal)
        finally:
            spawned.qmp.close()
        self.result['migration'] = switched.migration
        if switched.guest_pause_ms is not None:
            self.result['guest_pause_ms'] = switched.guest_pause_ms
        takeover = TakeOver.after_update(source, pre, spawned, switched)
        try:
            self.result.update(self._timed('finish', takeover.run, src, params['timeout'], params['shutdown_timeout']))
        except (LiveUpdateError, OSError) as exc:
            raise UpdateFailed('live update of VM %s: %s, but finishing failed: %s'
                               % (source.name, _where_the_guest_is(spawned.pid), exc),
                               step='finish', rolled_back=False, changed=True, dest_pid=spawned.pid)
        journal.clear()
        fault_point('finished', source.proc.pid, spawned.pid)

    def _verify(self, source, pre, spawned):
        """Fail (past the switch: nothing to roll back) unless the guest goes on on the destination."""
        params = self.params
        env = dict(LIVEUPDATE_VM=source.name or '', LIVEUPDATE_QMP_SOCKET=source.qmp_socket,
                   LIVEUPDATE_PID=str(spawned.pid))
        try:
            with QMPSession(source.qmp_socket, params['timeout']) as dest:
                verified = verify_guest(dest, spawned.pid, pre.vm['status'], params['verify_timeout'],
                                        params.get('health_command'), env)
        except LiveUpdateError as exc:
            raise UpdateFailed('live update of VM %s: %s, but it cannot be verified: %s'
                               % (source.name, _where_the_guest_is(spawned.pid), exc),
                               step='verify', rolled_back=False, changed=True, dest_pid=spawned.pid)
        self.result['verified'] = verified['checks']
        if not verified['ok']:
            failed = sorted(name for name, check in verified['checks'].items() if not check['ok'])
            raise UpdateFailed('live update of VM %s: the guest runs on the new QEMU (pid %d) but did not pass %s'
                               % (source.name, spawned.pid, ', '.join(failed)),
                               step='verify', rolled_back=False, changed=True, dest_pid=spawned.pid)

    def _fail(self, src, source, pre, spawned, exc, journal):
        """A failure from spawn to switch: roll back, or past the switch stop the source for good."""
        details = dict(exc.details) if isinstance(exc, LiveUpdateError) else {}
        details.pop('step', None)
        details.pop('rolled_back', None)
        dest_pid = spawned.pid if spawned is not None else details.pop('dest_pid', None)
        if self.switch.committed:
            raise UpdateFailed('live update of VM %s failed after the switch (%s): %s'
                               % (source.name, exc, self._abandon_source(src, source, pre, dest_pid, journal)),
                               step=self.step, rolled_back=False, changed=True, dest_pid=dest_pid, **details)
        if not process_alive(source.proc.pid):
            raise UpdateFailed('live update of VM %s failed at %s (%s): %s'
                               % (source.name, self.step, exc, self._source_died(pre, spawned, dest_pid, journal)),
                               step=self.step, rolled_back=False, dest_pid=dest_pid, **details)
        rolled_back = rollback(src, pre, dest_pid, self.switch, self.params['timeout'])
        if rolled_back:
            journal.clear()
        raise UpdateFailed('live update of VM %s failed at %s: %s%s'
                           % (source.name, self.step, exc, '' if rolled_back else
                              '; ROLLBACK INCOMPLETE, check the VM'),
                           step=self.step, rolled_back=rolled_back, **details)

    @staticmethod
    def _source_died(pre, spawned, dest_pid, journal):
        """Before the switch, the source died: the guest lives on only in a destination that
        received all of it (and never ran it). That one is kept for the next update; any
        other is ended."""
        try:
            whole = spawned is not None and spawned.qmp.execute('query-migrate').get('status') == 'completed'
        except LiveUpdateError:
            whole = False
        if whole and process_alive(dest_pid):
            return ('the source QEMU died after the migration; destination pid %d holds the whole guest: the next '
                    'live_update of this VM resumes it there' % dest_pid)
        if dest_pid is not None:
            kill_and_wait(dest_pid)
        remove_files(pre.dest_files())
        journal.clear()
        return 'the source QEMU died before the guest had moved: the guest is lost, start the VM again'

    def _abandon_source(self, src, source, pre, dest_pid, journal):
        """Past the point of no return: the source must never run again. The destination, if
        it lives, gets the VM's names; the journal stays, so that the next update of the VM
        resumes it. Returns what is true of the guest now."""
        takeover = TakeOver(source, dest_pid, [], None, pre.plan.renames, pre.stray, pre.vm['memory_backends'],
                            pre.plan.downscripts, [])
        try:
            takeover.end_source(src, self.params['shutdown_timeout'])
        except (LiveUpdateError, OSError):
            pass
        if dest_pid is not None and process_alive(dest_pid):
            return ('the source was stopped; the guest is on destination pid %d, which has the VM\'s names now '
                    'but did not confirm it runs the guest: run live_update on this VM again to resume it' % dest_pid)
        journal.clear()
        return 'the source was stopped and the destination is gone: the guest is lost, start the VM again'


def _where_the_guest_is(dest_pid):
    if process_alive(dest_pid):
        return 'the guest runs on the destination (pid %d)' % dest_pid
    return 'the destination (pid %d) took the guest over and then died: the guest is lost, start the VM again' % dest_pid
