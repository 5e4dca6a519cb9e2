# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of liveupdate.qemu.live_update against an ordinary full-copy local migration.

For each size S GiB it starts one test guest (tools/guest-init.sh) with S GiB of RAM on the
older QEMU build, fills about 75% of it inside the guest (lu.fill_mb) and waits for
LU-MEM-READY, then, on that guest:

0. control: a plain QMP stop held --stop-cont seconds, then cont (the guest's clock stops while
   the VM is stopped under TCG: this shows what its heartbeat steps mean);
1. live-updates it through the real module (``ansible localhost -m liveupdate.qemu.live_update``)
   older -> newer -> older ... for --runs runs, and records the module's guest_pause_ms,
   migration figures and per-step timings, the wall time of the ansible command, and the
   guest's own view: the largest heartbeat uptime step across the update; a refused update that
   rolled back is recorded and the runs go on;
2. measures once the size of the whole x-ignore-shared migration stream (device state included:
   the module's ``bytes`` is QEMU's ram.transferred counter only), by migrating the source into
   ``exec:wc -c`` and resuming it (no destination ever ran, so resuming the source is safe);
3. migrates the same guest with a plain full-copy local migration driven over QMP (no
   x-ignore-shared; the destination has the same command line with its own QMP socket,
   pidfile, serial socket and its own memory file, -incoming defer and no -S), with
   max-bandwidth 0 (no limit in QEMU 7.2) and with QEMU's default, --full-copy-runs times each.
   Under TCG, QEMU before 9.0 can lose guest stores during such a copy (the guest may panic on
   the destination): that is detected, reported, and ends the full copies of that size.

It prints figures, not verdicts on correctness; the summary compares them with the targets.

    bash scripts/setup.sh && source .build/env.sh
    python benchmarks/live_update.py --git-rev HEAD --sizes 1,4,8 --runs 20 --full-copy-runs 2 --json out.json

Everything it creates lives under --runtime-dir (VMs named bench-<S>g) and --memory-dir, and is
removed at the end, also after a failure, Ctrl-C or SIGTERM. docs/performance.md has the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback

import benchlib  # benchmarks/benchlib.py: first, it puts the collection on sys.path
from benchlib import NEWER, Ansible, BenchError, end_processes, load_snapshot, log, meminfo, stats, write_json

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess, process_alive
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import (
    MIGRATION_END, event_time, query_capabilities, query_vm, set_capabilities,
)
# The collection's QMP session: qemu.qmp's async client, not qemu.qmp.legacy, which is GPL-2.0-only.
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPSession, QMPTimeout
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_spec import memory_file_for
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for

sys.path.insert(0, os.path.join(benchlib.ROOT, 'tools'))
import guestlog  # noqa: E402  (tools/guestlog.py)

QEMU_DEFAULT_BANDWIDTH = 128 << 20  # QEMU 7.2's max-bandwidth default (bytes/s)
TARGETS = dict(pause_p99_ms=20.0, pause_ratio=1.2, bytes=1 << 20, engine_s=0.25, speedup=30.0)
HEARTBEATS_AFTER = 10  # heartbeats (100 ms apart) to wait for after an update
BASELINE_HEARTBEATS = 30  # heartbeats before an update whose largest step is the baseline
LOCK_NAME = '.bench.lock'  # in --runtime-dir: one benchmark at a time uses it


class GuestLost(BenchError):
    """The guest stopped printing heartbeats on the new process (a kernel panic, for one)."""


# --- QEMU ---

class Qmp(QMPSession):
    """A QMP session that keeps every event it has seen since the last ``drain_events``: a destination
    that resumes by itself sends RESUME before MIGRATION completed, and both are waited for."""

    def __init__(self, path, timeout=30.0):
        super().__init__(path, timeout)
        self.kept = []

    def drain_events(self):
        self.kept = []
        return super().drain_events()

    def wait_kept(self, name, timeout, match=lambda e: True):
        """The first event ``name`` that ``match`` accepts since the last drain, waiting up to ``timeout``."""
        def found():
            event = next((e for e in self.kept if e['event'] == name and match(e)), None)
            if event is None:
                try:
                    self.kept.append(self.wait_event(timeout=0.05))
                except QMPTimeout:
                    pass
            return event

        try:
            return wait_for(found, timeout, '%s event from %s' % (name, self.path), interval=0)
        except WaitTimeout:
            raise BenchError('no %s event within %gs (seen: %s)' % (name, timeout, [e['event'] for e in self.kept]))


def rss_shmem_mib(pid):
    """How much of the shared memory file the process has mapped in its page tables (RssShmem)."""
    try:
        with open('/proc/%d/status' % pid) as handle:
            for line in handle:
                if line.startswith('RssShmem:'):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def read_environ(pid):
    env = {}
    with open('/proc/%d/environ' % pid, 'rb') as handle:
        for item in handle.read().split(b'\0'):
            key, sep, value = item.decode('utf-8', 'surrogateescape').partition('=')
            if sep:
                env[key] = value
    return env


def destination_argv(argv, qmp, pidfile, serial, mem_path, machine):
    """The source's command line for a full-copy destination: own QMP socket, pidfile, serial
    socket (same log file, appended to) and memory file, the machine type pinned, -incoming."""
    source = QemuCommandLine.parse(argv)
    options = []
    for name, value in source.options:
        if name in ('S', 'daemonize', 'incoming'):
            continue
        if name == 'qmp':
            value = 'unix:%s,server=on,wait=off' % qmp
        elif name == 'pidfile':
            value = pidfile
        elif name in ('chardev', 'object', 'machine'):
            opts = QemuOpts.parse(value)
            if name == 'chardev' and opts.head() == 'socket' and opts.get('path'):
                opts.set('path', serial)
            elif name == 'object' and opts.get('mem-path'):
                opts.set('mem-path', mem_path)
            elif name == 'machine' and opts.head() is not None:
                opts.items[0] = (None, machine)
            value = opts.format()
        options.append((name, value))
    return QemuCommandLine(source.binary, options + [('incoming', 'defer'), ('daemonize', None)]).argv()


# --- the guest ---

class GuestWatch:
    """The guest's serial log: heartbeats around one event."""

    def __init__(self, path):
        self.follower = guestlog.LogFollower(path)
        self.floor = 0  # heartbeats before this index belong to an earlier event

    def summary(self):
        return self.follower.poll()

    def mark(self, settle=0.0):
        """The index of the next heartbeat, after ``settle`` seconds of quiet guest: the baseline window."""
        time.sleep(settle)
        return len(self.summary().heartbeats)

    def around(self, mark, timeout=60, pid=None, resumed=None):
        """Wait for HEARTBEATS_AFTER heartbeats after ``resumed`` (the heartbeat index when the guest
        was resumed on the new process; default ``mark``); the largest uptime step since ``mark``, the
        largest one in the BASELINE_HEARTBEATS before it, and continuity."""
        need = (mark if resumed is None else resumed) + HEARTBEATS_AFTER
        start = time.monotonic()

        def lost():
            gone = '' if pid is None or process_alive(pid) else '; its QEMU pid %d is gone' % pid
            return GuestLost('guest printed %d heartbeats in %.0fs after it was resumed on the new process (need %d)%s'
                             % (len(self.summary().heartbeats) - need + HEARTBEATS_AFTER, time.monotonic() - start,
                                HEARTBEATS_AFTER, gone))

        def enough():
            s = self.summary()
            if len(s.heartbeats) >= need:
                return s
            if pid is not None and not process_alive(pid):
                raise lost()
            return None

        try:
            s = wait_for(enough, timeout, '%d heartbeats' % HEARTBEATS_AFTER, interval=0.05)
        except WaitTimeout:
            raise lost()
        hb = s.heartbeats
        after = hb[max(mark - 1, 0):]
        before = hb[max(mark - BASELINE_HEARTBEATS, self.floor):mark]
        self.floor = len(hb)

        def max_step(seq):
            steps = [b[2] - a[2] for a, b in zip(seq, seq[1:]) if a[1] == b[1]]
            return round(max(steps) * 1000) if steps else None

        jumps = [(a[0], b[0]) for a, b in zip(after, after[1:]) if b[0] != a[0] + 1 or b[1] != a[1]]
        return dict(gap_ms=max_step(after), baseline_gap_ms=max_step(before),
                    continuous=not jumps and s.mem_bad == 0 and not s.mem_md5_changed and len(s.boot_ids) == 1,
                    counter_jumps=jumps, first_hb=after[0][0] if after else None, boot_ids=len(s.boot_ids),
                    mem_ok=s.mem_ok, mem_bad=s.mem_bad, mem_md5_changed=s.mem_md5_changed)


# --- one size ---

class SizeBench:
    def __init__(self, args, ansible, size_gib, old, new, cleanup):
        self.args = args
        self.ansible = ansible
        self.size = size_gib
        self.old, self.new = old, new
        self.name = 'bench-%sg' % str(size_gib).replace('.', '_')
        self.fill_mb = int(size_gib * 1024 * args.fill_ratio)
        self.cleanup = cleanup
        self.vm = None
        self.result = dict(size_gib=size_gib, fill_mb=self.fill_mb, live_update=[], full_copy=[], errors=[])
        self.current = None  # dict(pid, qmp, mem_path, mine) of the process that runs the guest now

    # start and fill

    def start(self):
        guest = os.environ['LIVEUPDATE_GUEST_DIR']
        self.cleanup.vms.append(self.name)
        self.ansible.module('vm', dict(name=self.name, state='stopped'))  # leftovers of an earlier run of ours
        args = dict(name=self.name, memory='%dM' % int(self.size * 1024), accel=['tcg'],
                    kernel=os.path.join(guest, 'vmlinux'), initrd=os.path.join(guest, 'initramfs.gz'),
                    append='console=ttyS0 quiet lu.fill_mb=%d' % self.fill_mb, binary=self.old,
                    memory_dir=self.args.memory_dir)
        start = time.monotonic()
        res = self.ansible.module('vm', args)
        if res.get('failed') or not res.get('vm', {}).get('pid'):
            raise BenchError('cannot start VM %s: %s' % (self.name, res.get('msg')))
        self.vm = res['vm']
        self.cleanup.files.add(self.vm['memory_file'])
        self.current = dict(pid=self.vm['pid'], qmp=self.vm['qmp_socket'], mem_path=self.vm['memory_file'], mine=False)
        self.watch = GuestWatch(self.vm['serial_log'])
        log('%s: started (pid %d, %s RAM); filling %d MiB inside the guest' % (self.name, self.vm['pid'], args['memory'], self.fill_mb))
        reported = [time.monotonic()]

        def filled():
            s = self.watch.summary()
            if s.mem_ready_md5 is not None:
                return True
            if not process_alive(self.current['pid']):
                raise BenchError('%s: QEMU exited during the fill' % self.name)
            if time.monotonic() - reported[0] > 60:
                log('%s: still filling (%.0fs, guest uptime %ss)' % (self.name, time.monotonic() - start, s.last_uptime))
                reported[0] = time.monotonic()
            return False

        try:
            wait_for(filled, 180 + self.fill_mb * 0.2, 'LU-MEM-READY', interval=0.5)
        except WaitTimeout:
            raise BenchError('%s: no LU-MEM-READY after %.0fs' % (self.name, time.monotonic() - start))
        self.result['fill_s'] = round(time.monotonic() - start, 1)
        self.watch.around(self.watch.mark(), timeout=60)  # a few heartbeats after the fill
        rss = self.shm_used(self.vm['memory_file'])
        self.result['memory_file_resident_mib'] = rss
        log('%s: LU-MEM-READY after %.0fs; memory file holds %d MiB' % (self.name, self.result['fill_s'], rss))

    @staticmethod
    def shm_used(path):
        return round(os.stat(path).st_blocks * 512 / 2 ** 20)

    # 1. live updates through the module

    def live_updates(self):
        on_old = True
        failures = self.result.setdefault('live_update_failures', [])
        for run in range(self.args.runs):
            target = self.new if on_old else self.old
            mark = self.watch.mark(self.args.pause_between)
            load = load_snapshot(self.args.runtime_dir)
            rss_before = rss_shmem_mib(self.current['pid'])
            res = self.ansible.module('live_update', dict(name=self.name, target_binary=target))
            if res.get('failed') or not res.get('changed'):
                failures.append(dict(run=run, msg=res.get('msg'), step=res.get('step'), rolled_back=res.get('rolled_back'),
                                     timings=res.get('timings'), load=load, result=res))
                log('%s: live update %d/%d FAILED at %s (rolled back: %s): %s'
                    % (self.name, run + 1, self.args.runs, res.get('step'), res.get('rolled_back'), res.get('msg')))
                # A failure that rolled back leaves the guest running on its source: go on with the next run.
                if res.get('rolled_back') is not True or not process_alive(self.current['pid']) or len(failures) >= 3:
                    raise BenchError('%s: live update %d failed: %s' % (self.name, run, json.dumps(res, indent=1)[:3000]))
                self.watch.around(mark, pid=self.current['pid'])
                continue
            on_old = not on_old
            self.current.update(pid=res['new']['pid'])
            rss_after = rss_shmem_mib(self.current['pid'])
            # The module has returned: the switch is over. Heartbeats since ``mark`` may all predate it.
            guest = self.watch.around(mark, pid=self.current['pid'], resumed=self.watch.mark())
            rss_later = rss_shmem_mib(self.current['pid'])
            t = res.get('timings', {})
            rec = dict(run=run, direction='%s -> %s' % (res['old']['version'], res['new']['version']),
                       guest_pause_ms=res.get('guest_pause_ms'), total_time_ms=res['migration'].get('total_time_ms'),
                       downtime_ms=res['migration'].get('downtime_ms'), setup_time_ms=res['migration'].get('setup_time_ms'),
                       bytes=res['migration'].get('bytes'), full_copy=res['migration'].get('full_copy'),
                       engine_s=t.get('engine'), timings=t, stop_method=res.get('stop_method'),
                       module_s=round(sum(t.get(k, 0) for k in ('locate', 'preflight', 'engine')), 4),
                       ansible_wall_s=round(res['_wall_s'], 3), guest=guest, load=load,
                       rss_shmem_mib=dict(source_before=rss_before, new_after_update=rss_after, new_1s_later=rss_later))
            self.result['live_update'].append(rec)
            log('%s: live update %d/%d %s: pause %.1f ms, total %s ms, downtime %s ms, %s bytes, engine %.3f s, '
                'ansible %.2f s, guest step %s ms (baseline %s)%s'
                % (self.name, run + 1, self.args.runs, rec['direction'], rec['guest_pause_ms'], rec['total_time_ms'],
                   rec['downtime_ms'], rec['bytes'], rec['engine_s'], rec['ansible_wall_s'], guest['gap_ms'],
                   guest['baseline_gap_ms'], '' if guest['continuous'] else ' NOT CONTINUOUS'))

    # control: a plain stop / cont of the same guest (no migration), for the guest's view

    def stop_cont(self, hold_s):
        mark = self.watch.mark(self.args.pause_between)
        with Qmp(self.current['qmp']) as qmp:
            qmp.drain_events()
            qmp.execute('stop')
            time.sleep(hold_s)
            qmp.execute('cont')
            stop = qmp.wait_kept('STOP', 10)
            resume = qmp.wait_kept('RESUME', 10)
        guest = self.watch.around(mark, pid=self.current['pid'], resumed=self.watch.mark())
        rec = dict(hold_s=hold_s, pause_ms=round((event_time(resume) - event_time(stop)) * 1000, 3), guest=guest)
        self.result.setdefault('stop_cont', []).append(rec)
        log('%s: control stop/cont (hold %g s): pause %.1f ms, guest step %s ms (baseline %s)'
            % (self.name, hold_s, rec['pause_ms'], guest['gap_ms'], guest['baseline_gap_ms']))

    # 2. the whole stream of an x-ignore-shared migration

    def stream_size(self):
        out = os.path.join(self.args.runtime_dir, '%s.stream-bytes' % self.name)
        mark = self.watch.mark(self.args.pause_between)
        with Qmp(self.current['qmp']) as qmp:
            before = query_capabilities(qmp)
            if qmp.execute('query-status')['status'] != 'running':
                raise BenchError('%s is not running' % self.name)
            set_capabilities(qmp, {'x-ignore-shared': True, 'events': True})
            try:
                qmp.drain_events()
                qmp.execute('migrate', {'uri': 'exec:wc -c > %s' % out})
                ev = qmp.wait_kept('MIGRATION', 60, lambda e: e['data']['status'] in MIGRATION_END)
                stats_ = qmp.execute('query-migrate')
                # No destination ever ran this guest: resuming the source is safe.
                if qmp.execute('query-status')['status'] != 'running':
                    qmp.execute('cont')
            finally:
                set_capabilities(qmp, dict((c, before[c]) for c in ('x-ignore-shared', 'events')))
        wait_for(lambda: os.path.exists(out) and os.path.getsize(out), 10, 'the stream size in %s' % out, interval=0.05)
        with open(out) as handle:
            total = int(handle.read().split()[0])
        os.unlink(out)
        guest = self.watch.around(mark, pid=self.current['pid'], resumed=self.watch.mark())
        self.result['stream'] = dict(status=ev['data']['status'], stream_bytes=total,
                                     ram_transferred=stats_.get('ram', {}).get('transferred'),
                                     total_time_ms=stats_.get('total-time'), downtime_ms=stats_.get('downtime'), guest=guest)
        log('%s: whole x-ignore-shared stream: %d bytes (ram.transferred %s)' % (self.name, total, self.result['stream']['ram_transferred']))

    # 3. full-copy migrations

    def full_copies(self):
        plans = []
        for mode in self.args.full_copy_modes:
            plans += [mode] * self.args.full_copy_runs
        need = int(self.size * 2 ** 30)
        avail = min(meminfo()['MemAvailable'], shutil.disk_usage(self.args.memory_dir).free)
        if avail < need + (2 << 30):
            msg = 'skipped: %d MiB available, a second copy of the guest RAM needs %d MiB + 2 GiB margin' % (avail >> 20, need >> 20)
            self.result['full_copy_skipped'] = msg
            log('%s: full copy %s' % (self.name, msg))
            return
        spare = memory_file_for(self.args.memory_dir, self.name + '.fullcopy')  # liveupdate-qemu-NAME.fullcopy.ram
        self.cleanup.files.add(spare)
        for index, mode in enumerate(plans):
            # The destination takes the memory file the source does not use (two files in turn).
            dest_mem = spare if self.current['mem_path'] != spare else self.vm['memory_file']
            rec = self.full_copy(index, mode, dest_mem)
            self.result['full_copy'].append(rec)
            if 'lost' in rec['guest']:
                raise GuestLost('%s: the guest did not survive full copy %d (%s); no more full copies of it'
                                % (self.name, index, rec['guest']['lost']))

    def full_copy(self, index, mode, dest_mem):
        src = self.current
        tag = '%s.fc%d' % (self.name, index)
        base = os.path.join(self.args.runtime_dir, tag)
        qmp_path, pidfile, serial, mig = base + '.qmp', base + '.pid', base + '.serial', base + '.migrate'
        argv, env = QemuProcess.from_pid(src['pid']).argv, read_environ(src['pid'])
        mark = self.watch.mark(self.args.pause_between)
        load = load_snapshot(self.args.runtime_dir)
        with Qmp(src['qmp']) as sq:
            machine = query_vm(sq, src['pid'])['machine']
            dargv = destination_argv(argv, qmp_path, pidfile, serial, dest_mem, machine)
            denv = dict(os.environ)
            if 'QEMU_MODULE_DIR' in env:
                denv['QEMU_MODULE_DIR'] = env['QEMU_MODULE_DIR']
            if os.path.exists(dest_mem):
                os.truncate(dest_mem, 0)  # a fresh file: no pages left from an earlier copy
            t_spawn = time.monotonic()
            proc = subprocess.run(dargv, env=denv, capture_output=True, text=True, check=False, timeout=120)
            if proc.returncode != 0:
                raise BenchError('full-copy destination failed to start: %s' % (proc.stderr or proc.stdout))
            with open(pidfile) as handle:
                dpid = int(handle.read().strip())
            self.cleanup.files.update([qmp_path, pidfile, serial, mig])
            with Qmp(qmp_path) as dq:
                caps = {'events': True, 'x-ignore-shared': False}
                set_capabilities(dq, caps)
                dq.execute('migrate-incoming', {'uri': 'unix:%s' % mig})
                set_capabilities(sq, caps)
                if mode == 'unlimited':
                    sq.execute('migrate-set-parameters', {'max-bandwidth': self.args.unlimited_bandwidth})
                params = sq.execute('query-migrate-parameters')
                sq.drain_events()
                dq.drain_events()
                t_migrate = time.monotonic()
                sq.execute('migrate', {'uri': 'unix:%s' % mig})
                timeout = 120 + self.size * 2 ** 30 / QEMU_DEFAULT_BANDWIDTH * 3
                ev = dq.wait_kept('MIGRATION', timeout, lambda e: e['data']['status'] in MIGRATION_END)
                if ev['data']['status'] != 'completed':
                    sq.wait_kept('MIGRATION', 10, lambda e: e['data']['status'] in MIGRATION_END)
                    raise BenchError('full copy %s: destination reports %s; source: %s'
                                     % (tag, ev['data']['status'], sq.execute('query-migrate')))
                resume = dq.wait_kept('RESUME', 60)
                t_resumed = time.monotonic()
                resumed = self.watch.mark()  # the guest ran on the source during the copy: count from here
                stop = sq.wait_kept('STOP', 10)
                sq.wait_kept('MIGRATION', 30, lambda e: e['data']['status'] == 'completed')

                # QEMU 7.2 emits 'completed' before it computes total-time and downtime: wait for them.
                def timed():
                    state = sq.execute('query-migrate')
                    return state if state.get('total-time') else None

                try:
                    st = wait_for(timed, 5, 'total-time in query-migrate', interval=0.01)
                except WaitTimeout:
                    st = sq.execute('query-migrate')
                # The destination runs the guest now: the source must never run again.
                try:
                    sq.execute('quit')
                # The reply may be lost as QEMU exits.
                except Exception:  # pylint: disable=broad-except
                    pass
        try:
            wait_for(lambda: not process_alive(src['pid']), 10, 'the source to exit', interval=0.005)
        except WaitTimeout:
            end_processes([src['pid']])
        t_gone = time.monotonic()
        self.current = dict(pid=dpid, qmp=qmp_path, mem_path=dest_mem, mine=True)
        if src['mem_path'] != self.vm['memory_file'] and os.path.exists(src['mem_path']):
            os.truncate(src['mem_path'], 0)  # give the old copy's memory back
        ram = st.get('ram', {})
        try:
            guest = self.watch.around(mark, pid=self.current['pid'], resumed=resumed)
        except GuestLost as exc:
            guest = dict(lost=str(exc), console_tail=self.console_tail())
        dest_resident = self.shm_used(dest_mem)
        rec = dict(index=index, mode=mode, max_bandwidth=params.get('max-bandwidth'), downtime_limit_ms=params.get('downtime-limit'),
                   guest_pause_ms=round((event_time(resume) - event_time(stop)) * 1000, 3),
                   total_time_ms=st.get('total-time'), downtime_ms=st.get('downtime'), setup_time_ms=st.get('setup-time'),
                   bytes=ram.get('transferred'), ram_total=ram.get('total'), dirty_sync_count=ram.get('dirty-sync-count'),
                   mbps=ram.get('mbps'), migrate_wall_s=round(t_resumed - t_migrate, 3), engine_s=round(t_gone - t_spawn, 3),
                   spawn_s=round(t_migrate - t_spawn, 3), dest_file_resident_mib=dest_resident, guest=guest, load=load)
        if 'lost' in guest:
            log('%s: full copy %d (%s): pause %.1f ms, total %s ms, %s bytes; GUEST LOST on the destination: %s; console: %s'
                % (self.name, index, mode, rec['guest_pause_ms'], rec['total_time_ms'], rec['bytes'], guest['lost'],
                   ' | '.join(guest['console_tail'][-3:])))
            return rec
        log('%s: full copy %d (%s, max-bandwidth %s): pause %.1f ms, total %s ms, downtime %s ms, %s bytes, '
            'new process -> old gone %.2f s, guest step %s ms (baseline %s)%s'
            % (self.name, index, mode, rec['max_bandwidth'], rec['guest_pause_ms'], rec['total_time_ms'], rec['downtime_ms'],
               rec['bytes'], rec['engine_s'], guest['gap_ms'], guest['baseline_gap_ms'], '' if guest['continuous'] else ' NOT CONTINUOUS'))
        return rec

    def console_tail(self, lines=12):
        """The last lines of the guest console that are not heartbeats (a kernel panic shows there)."""
        with open(self.vm['serial_log'], 'rb') as handle:
            handle.seek(max(0, os.path.getsize(self.vm['serial_log']) - 65536))
            text = handle.read().decode('utf-8', 'replace')
        return [line.strip() for line in text.splitlines() if line.strip() and 'LU-HB' not in line][-lines:]

    def diagnose(self):
        """What the process that should run the guest looks like now (for an error report)."""
        cur = dict(self.current or {})
        if not cur:
            return cur
        cur['alive'] = process_alive(cur['pid'])
        try:
            cur['argv'] = QemuProcess.from_pid(cur['pid']).argv
            with Qmp(cur['qmp'], timeout=5) as qmp:
                cur['status'] = qmp.execute('query-status')
                cur['migrate'] = qmp.execute('query-migrate')
        except Exception as exc:  # pylint: disable=broad-except
            cur['diagnose_error'] = '%s: %s' % (type(exc).__name__, exc)
        return cur

    def stop(self):
        """Stop the guest whatever runs it; remove its files."""
        if self.args.keep_logs and self.vm is not None and os.path.exists(self.vm['serial_log']):
            os.makedirs(self.args.keep_logs, exist_ok=True)
            shutil.copy(self.vm['serial_log'], os.path.join(self.args.keep_logs, '%s.serial.log' % self.name))
        cur = self.current
        if cur and cur.get('mine'):
            end_processes([cur['pid']])
        if self.vm is not None:
            self.ansible.module('vm', dict(name=self.name, state='stopped'))


class Cleanup:
    """What this run created: removed at the end whatever happened."""

    def __init__(self, args, ansible, lock):
        self.args = args
        self.ansible = ansible
        self.lock = lock  # the runtime directory's lock (benchlib.lock_runtime_dir)
        self.vms = []
        self.files = set()

    def run(self):
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        try:
            for name in self.vms:
                try:
                    self.ansible.module('vm', dict(name=name, state='stopped'), timeout=120)
                except Exception as exc:  # pylint: disable=broad-except
                    log('cleanup: vm %s state=stopped: %s' % (name, exc))
            # Every QEMU whose command line names our runtime directory or one of our files was started by
            # this run (we hold the directory's lock): the full-copy destinations, and a destination that an
            # interrupted module run had started.
            benchlib.remove_leftovers(self.args.runtime_dir, sorted(self.files))
            for name in self.vms:
                shutil.rmtree(os.path.join(self.args.runtime_dir, name), ignore_errors=True)
            # The runtime directory is ours (we hold its .bench.lock): remove it when only lock files are left.
            benchlib.release_runtime_dir(self.args.runtime_dir, LOCK_NAME, self.lock)
        finally:
            signal.signal(signal.SIGINT, old)


# --- report ---

def fmt(v, unit='', key=None):
    if v is None:
        return '-'
    if key == 'bytes':
        for div, name in ((1e9, 'GB'), (1e6, 'MB'), (1e3, 'kB')):
            if v >= div:
                return '%.3g %s' % (v / div, name)
        return '%d B' % v
    if isinstance(v, float):
        v = ('%.3f' % v) if abs(v) < 1 else ('%.1f' % v) if abs(v) < 100 else ('%.0f' % v)
    return '%s%s' % (v, unit)


def summarize(size):
    lu, fc = size['live_update'], size['full_copy']
    keys = ['guest_pause_ms', 'total_time_ms', 'downtime_ms', 'bytes', 'engine_s', 'ansible_wall_s']
    out = dict(live_update={k: stats([r[k] for r in lu]) for k in keys})
    out['live_update']['guest_gap_ms'] = stats([r['guest']['gap_ms'] for r in lu])
    out['live_update']['baseline_gap_ms'] = stats([r['guest']['baseline_gap_ms'] for r in lu])
    out['live_update']['continuous'] = all(r['guest']['continuous'] for r in lu) if lu else None
    for mode in ('unlimited', 'default'):
        rows = [r for r in fc if r['mode'] == mode]
        if rows:
            out['full_copy_' + mode] = {k: stats([r[k] for r in rows])
                                        for k in ('guest_pause_ms', 'total_time_ms', 'downtime_ms', 'bytes', 'engine_s', 'migrate_wall_s')}
            out['full_copy_' + mode]['guest_gap_ms'] = stats([r['guest'].get('gap_ms') for r in rows])
            out['full_copy_' + mode]['baseline_gap_ms'] = stats([r['guest'].get('baseline_gap_ms') for r in rows])
            out['full_copy_' + mode]['continuous'] = all(r['guest'].get('continuous') for r in rows)
    steps = {}
    for r in lu:
        for k, v in r['timings'].items():
            steps.setdefault(k, []).append(v)
    out['engine_steps'] = {k: stats(v) for k, v in steps.items()}
    return out


def print_size(size, summ):
    lu = summ['live_update']
    n = lu['guest_pause_ms']['n'] if lu['guest_pause_ms'] else 0
    print()
    print('=== %s GiB guest, %d MiB filled (memory file %s MiB resident), fill took %ss ===' % (
        size['size_gib'], size['fill_mb'], size.get('memory_file_resident_mib'), size.get('fill_s')))
    cols = [('live update (module)', lu)]
    for mode in ('unlimited', 'default'):
        if 'full_copy_' + mode in summ:
            cols.append(('full copy, bw %s' % mode, summ['full_copy_' + mode]))
    rows = [('guest pause, STOP->RESUME (ms)', 'guest_pause_ms'), ('migration total time (ms)', 'total_time_ms'),
            ('downtime, QEMU (ms)', 'downtime_ms'), ('bytes moved (ram.transferred)', 'bytes'),
            ('new process -> old gone (s)', 'engine_s'), ('ansible command wall (s)', 'ansible_wall_s'),
            ('migrate -> guest resumed (s)', 'migrate_wall_s'),
            ('guest: largest heartbeat step (ms)', 'guest_gap_ms'), ('  same, 3 s before (baseline)', 'baseline_gap_ms')]
    head = '%-36s' % 'median / p99 / min (n)'
    for title, dummy in cols:
        head += ' | %-30s' % title
    print(head)
    print('-' * len(head))
    for label, key in rows:
        line = '%-36s' % label
        present = False
        for dummy, col in cols:
            s = col.get(key)
            if s:
                present = True
                line += ' | %-30s' % ('%s / %s / %s (%d)' % (fmt(s['median'], key=key), fmt(s['p99'], key=key), fmt(s['min'], key=key), s['n']))
            else:
                line += ' | %-30s' % '-'
        if present:
            print(line)
    print('p99 is nearest-rank: with %d live-update runs it is the maximum.' % n if n < 100 else '')
    if 'stream' in size:
        print('whole x-ignore-shared migration stream (device state included): %d bytes' % size['stream']['stream_bytes'])
    for r in size['full_copy']:
        if 'lost' in r['guest']:
            panic = [line for line in r['guest']['console_tail'] if 'panic' in line.lower()]
            print('full copy %d (%s): the guest did not survive it on the destination: %s' % (
                r['index'], r['mode'], (panic or r['guest']['console_tail'] or ['no console output'])[-1]))
    if size.get('full_copy_skipped'):
        print('full copy %s' % size['full_copy_skipped'])
    steps = summ['engine_steps']
    if steps:
        print('module steps, median s: ' + ', '.join('%s %.4f' % (k, v['median']) for k, v in steps.items()))
    if size.get('live_update_failures'):
        print('live updates that FAILED: %d of %d attempted:' % (
            len(size['live_update_failures']), len(size['live_update']) + len(size['live_update_failures'])))
        for f in size['live_update_failures']:
            print('  run %d: step %s, rolled back %s: %s' % (f['run'], f['step'], f['rolled_back'], f['msg']))
    rss = [r.get('rss_shmem_mib') for r in size['live_update'] if r.get('rss_shmem_mib')]
    if rss:
        print('guest RAM mapped by the QEMU process (RssShmem, MiB, median): source before %s, new process right after %s, 1 s later %s' % tuple(
            fmt(statistics.median([x[k] for x in rss if x[k] is not None])) for k in ('source_before', 'new_after_update', 'new_1s_later')))
    if lu.get('continuous') is False:
        print('WARNING: the guest log was not continuous across some live update (see JSON)')


def verdicts(results, summaries):
    """[(target, measured, MET/NOT MET/n/a)]."""
    out = []
    by_size = {s['size_gib']: summ for s, summ in zip(results, summaries)}

    def every_size(key, target, title, shown):
        """A target on the p99 of the live updates' ``key`` at every size; ``shown(size, stats)`` per size."""
        values = {sz: summ['live_update'][key] for sz, summ in by_size.items() if summ['live_update'][key]}
        if values:
            worst = max(v['p99'] for v in values.values())
            out.append((title, ', '.join(shown(sz, v) for sz, v in sorted(values.items())),
                        'MET' if worst <= target else 'NOT MET'))
        return values

    pauses = every_size('guest_pause_ms', TARGETS['pause_p99_ms'], 'guest pause p99 <= %g ms at every size' % TARGETS['pause_p99_ms'],
                        lambda sz, p: '%s GiB %.1f ms (n=%d, =max)' % (sz, p['p99'], p['n']))
    small, big = min(pauses) if pauses else None, max(pauses) if pauses else None
    if small is not None and big is not None and big != small:
        r_med = pauses[big]['median'] / pauses[small]['median']
        r_p99 = pauses[big]['p99'] / pauses[small]['p99']
        out.append(('pause(%s GiB)/pause(%s GiB) <= %g' % (big, small, TARGETS['pause_ratio']),
                    'medians %.1f/%.1f ms = %.2f; p99 %.1f/%.1f ms = %.2f' % (
                        pauses[big]['median'], pauses[small]['median'], r_med, pauses[big]['p99'], pauses[small]['p99'], r_p99),
                    'MET' if r_med <= TARGETS['pause_ratio'] else 'NOT MET'))
    moved = [r['bytes'] for s in results for r in s['live_update'] if r['bytes'] is not None]
    streams = [s['stream']['stream_bytes'] for s in results if 'stream' in s]
    if moved:
        worst = max(moved + streams)
        out.append(('<= 1 MiB moved', 'ram.transferred max %d bytes%s' % (
            max(moved), '; whole stream max %d bytes' % max(streams) if streams else ''), 'MET' if worst <= TARGETS['bytes'] else 'NOT MET'))
    attempted = sum(len(s['live_update']) + len(s.get('live_update_failures', [])) for s in results)
    failed = sum(len(s.get('live_update_failures', [])) for s in results)
    out.append(('live updates completed (not a target)', '%d of %d; failed: %s' % (
        attempted - failed, attempted, '; '.join(sorted({'%s' % f['msg'] for s in results for f in s.get('live_update_failures', [])})) or 'none'),
        'MET' if failed == 0 else 'NOT MET'))
    every_size('engine_s', TARGETS['engine_s'], 'engine time <= %g s' % TARGETS['engine_s'],
               lambda sz, e: '%s GiB median %.3f s, max %.3f s' % (sz, e['median'], e['max']))
    ref = 4 if 4 in by_size else None
    if ref is not None:
        summ = by_size[ref]
        lu = summ['live_update']
        for mode in ('unlimited', 'default'):
            fc = summ.get('full_copy_' + mode)
            if not fc or not lu['total_time_ms']:
                continue
            total_x = fc['total_time_ms']['median'] / max(lu['total_time_ms']['median'], 1)
            pause_x = fc['guest_pause_ms']['median'] / lu['guest_pause_ms']['median']
            engine_x = fc['engine_s']['median'] / lu['engine_s']['median']
            out.append(('>= %gx faster than full copy (bw %s) at 4 GiB: migration total time' % (TARGETS['speedup'], mode),
                        '%.0f ms vs %.0f ms = %.0fx' % (fc['total_time_ms']['median'], lu['total_time_ms']['median'], total_x),
                        'MET' if total_x >= TARGETS['speedup'] else 'NOT MET'))
            out.append(('>= %gx faster than full copy (bw %s) at 4 GiB: guest pause' % (TARGETS['speedup'], mode),
                        '%.1f ms vs %.1f ms = %.0fx' % (fc['guest_pause_ms']['median'], lu['guest_pause_ms']['median'], pause_x),
                        'MET' if pause_x >= TARGETS['speedup'] else 'NOT MET'))
            out.append(('(%gx, bw %s, 4 GiB: new process started -> old process gone)' % (TARGETS['speedup'], mode),
                        '%.2f s vs %.3f s = %.0fx' % (fc['engine_s']['median'], lu['engine_s']['median'], engine_x),
                        'MET' if engine_x >= TARGETS['speedup'] else 'NOT MET'))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    ap.add_argument('--sizes', default='1,4,8', help='guest RAM sizes in GiB, comma-separated (default 1,4,8)')
    ap.add_argument('--runs', type=int, default=10, help='live updates per size, alternating older/newer build (default 10)')
    ap.add_argument('--full-copy-runs', type=int, default=1, help='full-copy migrations per size and bandwidth mode (default 1; 0: none)')
    ap.add_argument('--full-copy-modes', default='unlimited,default', help='max-bandwidth modes of the full copy: unlimited, default')
    ap.add_argument('--unlimited-bandwidth', type=int, default=0,
                    help='max-bandwidth meaning unlimited (default 0: QEMU 7.2 applies no rate limit when it is 0)')
    ap.add_argument('--fill-ratio', type=float, default=0.75, help='share of the guest RAM filled inside the guest (default 0.75)')
    ap.add_argument('--stop-cont', default='0.02,1', help='control: plain stop/cont held this long (s, comma-separated; empty: none)')
    ap.add_argument('--no-stream-size', action='store_true', help='skip the measurement of the whole x-ignore-shared stream')
    ap.add_argument('--pause-between', type=float, default=3.0,
                    help='seconds between two live updates (default 3: the next baseline window starts after the last one)')
    ap.add_argument('--runtime-dir', default='/run/liveupdate-qemu-bench')
    ap.add_argument('--memory-dir', default='/dev/shm')
    ap.add_argument('--old-binary', default=os.environ.get('LIVEUPDATE_OLD_QEMU'))
    ap.add_argument('--new-binary', default=NEWER)
    ap.add_argument('--keep-logs', metavar='DIR', help='copy each guest serial log into DIR before it is removed')
    ap.add_argument('--git-rev', metavar='REV',
                    help='measure the collection as committed at REV (built into a temporary directory); '
                         'default: the installed one in ANSIBLE_COLLECTIONS_PATH')
    ap.add_argument('--json', metavar='OUT', help='write every measurement and the summary as JSON')
    args = ap.parse_args(argv)
    args.sizes = [float(s) if '.' in s else int(s) for s in args.sizes.split(',') if s.strip()]
    args.stop_cont = [float(x) for x in args.stop_cont.split(',') if x.strip()]
    args.full_copy_modes = [m for m in args.full_copy_modes.split(',') if m]
    if not set(args.full_copy_modes) <= {'unlimited', 'default'}:
        ap.error('--full-copy-modes takes unlimited and/or default')
    if args.full_copy_runs == 0:
        args.full_copy_modes = []
    for var in ('LIVEUPDATE_GUEST_DIR', 'ANSIBLE_COLLECTIONS_PATH'):
        if not os.environ.get(var):
            ap.error('%s is not set: source .build/env.sh first' % var)
    if not args.old_binary or not os.access(args.old_binary, os.X_OK):
        ap.error('no older QEMU build: set LIVEUPDATE_OLD_QEMU (source .build/env.sh) or --old-binary')

    benchlib.setup('bench')
    lock, commit, collections = benchlib.start_run(ap, args.runtime_dir, LOCK_NAME, args.git_rev, 'another benchmark')
    if commit:
        log('measuring the collection at commit %s (%s)' % (commit[:12], collections))
    ansible = Ansible(collections, module_args=dict(runtime_dir=args.runtime_dir))
    cleanup = Cleanup(args, ansible, lock)
    report = dict(collection=dict(path=collections, commit=commit, sha256=benchlib.collection_identity(collections)),
                  command=' '.join([os.path.relpath(sys.argv[0], benchlib.ROOT)] + sys.argv[1:]) if argv is None else argv,
                  host=socket.gethostname(), machine=benchlib.machine_info(args.old_binary, args.new_binary),
                  load_start=load_snapshot(args.runtime_dir), sizes=[], started=time.strftime('%Y-%m-%d %H:%M:%S'))
    log('machine: %d cores, %s GiB RAM, load %s, %d other QEMU processes; old %s, new %s' % (
        report['machine']['cores'], report['machine']['mem_total_gib'], report['load_start']['loadavg'],
        report['load_start']['other_qemu'], report['machine']['old_qemu']['version'], report['machine']['new_qemu']['version']))
    rc = 0
    try:
        for size in args.sizes:
            bench = SizeBench(args, ansible, size, args.old_binary, args.new_binary, cleanup)
            report['sizes'].append(bench.result)
            bench.result['load_start'] = load_snapshot(args.runtime_dir)
            t0 = time.monotonic()
            try:
                bench.start()
                for hold in args.stop_cont:
                    bench.stop_cont(hold)
                bench.live_updates()
                if not args.no_stream_size:
                    bench.stream_size()
                if args.full_copy_modes:
                    bench.full_copies()
            except (BenchError, OSError, subprocess.SubprocessError, LiveUpdateError) as exc:
                log('ERROR: %s: %s' % (type(exc).__name__, exc))
                bench.result['errors'].append(dict(error='%s: %s' % (type(exc).__name__, exc), traceback=traceback.format_exc(),
                                                   state=bench.diagnose()))
                rc = 1
            finally:
                bench.result['load_end'] = load_snapshot(args.runtime_dir)
                bench.result['wall_s'] = round(time.monotonic() - t0, 1)
                try:
                    bench.stop()
                except Exception as exc:  # pylint: disable=broad-except
                    log('stopping %s: %s' % (bench.name, exc))
    except KeyboardInterrupt:
        log('interrupted: cleaning up')
        rc = 130
    finally:
        cleanup.run()
        report['load_end'] = load_snapshot(args.runtime_dir)
        report['finished'] = time.strftime('%Y-%m-%d %H:%M:%S')

    if args.json:  # the raw measurements first, whatever happens to the summary
        write_json(args.json, report)
    summaries = [summarize(s) for s in report['sizes']]
    ver = verdicts(report['sizes'], summaries)
    report['summary'] = summaries
    report['verdicts'] = [dict(target=t, measured=m, verdict=v) for t, m, v in ver]
    if args.json:
        write_json(args.json, report)
        log('wrote %s' % args.json)
    print('liveupdate.qemu live-update benchmark, %s; %d cores, TCG; older %s, newer %s' % (
        report['started'], report['machine']['cores'], report['machine']['old_qemu']['version'], report['machine']['new_qemu']['version']))
    print('collection measured: %s' % (report['collection']['commit'] or report['collection']['path']))
    print('load at start %s (%d other QEMU processes), at end %s (%d)' % (
        report['load_start']['loadavg'], report['load_start']['other_qemu'], report['load_end']['loadavg'], report['load_end']['other_qemu']))
    for size, summ in zip(report['sizes'], summaries):
        if size['live_update'] or size['full_copy']:
            print_size(size, summ)
        for err in size['errors']:
            print('ERROR at %s GiB: %s' % (size['size_gib'], err.get('error')))
    print()
    print('=== targets ===')
    for target, measured, verdict in ver:
        print('%-8s %s: %s' % (verdict, target, measured))
    return rc


if __name__ == '__main__':
    sys.exit(main())
