# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Soak benchmark: N consecutive live updates of one VM, with the guest's continuity checked throughout.

It starts one test guest (tools/guest-init.sh: a heartbeat line every 100 ms with a counter and the
boot id, an md5 of a filled tmpfs file re-verified every second) with the collection's own vm
machinery (``_vm_manager.VmManager``, in-process) on the older QEMU build, RAM in a ``share=on``
file, and then live-updates it --updates times, alternating older -> newer -> older ..., by calling
the engine in-process as the module does (``LiveUpdate(params, check_mode=False).run()``, the
module's defaults plus ``verify_timeout``).

After every update it checks, and records with the engine's figures (guest_pause_ms, bytes, engine
time, the engine's verify result):

- the old process is gone, and exactly one process on the host maps the memory file
  (/proc/*/maps): the new QEMU, which the pidfile names;
- the canonical QMP socket answers, the guest is ``running`` and on the target build (query-version);
- the guest's heartbeat counter went on (two new heartbeats after the engine returned), without a
  gap or a reset, under one boot id, and no memory check was ever BAD (tools/guestlog.py);
- every --full-check-every updates, and always at the end: a new ``LU-MEM OK`` since the last such
  check (the guest's checksum loop still runs and still matches).

It stops at the first failure (--max-failures) and keeps the evidence: the engine's result or
error details, the serial log and QEMU's log (--keep-logs DIR, or a directory next to --json).

    bash scripts/setup.sh && source .build/env.sh
    python benchmarks/soak.py --git-rev HEAD --updates 1000 --json /tmp/soak/soak.json --keep-logs /tmp/soak/logs

Everything it creates (the VM ``soak`` under --runtime-dir, its memory file in --memory-dir) is
removed at the end, also after a failure, Ctrl-C or SIGTERM. A signal during an update lets that
update finish first (a second one does not wait). docs/performance.md has the results.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import socket
import statistics
import sys
import time
import traceback
from types import SimpleNamespace

# benchmarks/benchlib.py: it imports nothing of the collection yet, import_collection() chooses the copy.
import benchlib

VM_NAME = 'soak'
LOCK_NAME = '.soak.lock'  # in --runtime-dir: one soak at a time uses it
NEW_HEARTBEATS = 2  # heartbeats to see after each update (100 ms apart)
FAULTS_ENV = 'LIVEUPDATE_QEMU_FAULTS'  # plugins/module_utils/_faults.py, for --inject-fault

# Filled in by import_collection(), once the collection to measure is on ANSIBLE_COLLECTIONS_PATH.
lib = SimpleNamespace()


# --- the collection measured ---

def import_collection(collections):
    """Import the collection's module_utils from ``collections`` into ``lib`` (benchlib's helpers use
    them too: it imports them when first used)."""
    lib.__dict__.update(vars(benchlib.import_collection(collections, 'soak')))


def module_defaults(collections, module):
    """The defaults of ``module``'s options, read from its argument_spec (plugins/modules/MODULE.py)
    plus the common options: the params the module would hand the engine when given nothing else."""
    path = os.path.join(collections, 'ansible_collections', 'liveupdate', 'qemu', 'plugins', 'modules', module + '.py')
    with open(path) as handle:
        tree = ast.parse(handle.read())
    spec = next(kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                for kw in node.keywords if kw.arg == 'argument_spec')
    params = {}
    for option in spec.keywords:
        default = next((kw.value for kw in option.value.keywords if kw.arg == 'default'), None)
        params[option.arg] = ast.literal_eval(default) if default is not None else None
    for name, option in lib.COMMON_ARGS.items():
        params[name] = option.get('default')
    return params


# --- the machine ---

def mappers_of(path):
    """Pids of every process on the host whose memory maps ``path`` (/proc/PID/maps)."""
    st = os.stat(path)
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/maps' % entry) as handle:
                for line in handle:
                    fields = line.split(None, 5)
                    # address perms offset dev inode path: compare the inode and the path
                    if len(fields) == 6 and fields[4] == str(st.st_ino) and fields[5].rstrip('\n') == path:
                        found.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return sorted(found)


def tail(path, lines):
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 200 * lines))
            return handle.read().decode('utf-8', 'replace').splitlines()[-lines:]
    except OSError as exc:
        return ['(%s)' % exc]


# --- signals: an update in progress is let finish ---

class Signals:
    def __init__(self):
        self.in_update = False
        self.requested = None

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handler)

    def handler(self, signum, frame):
        if self.in_update and self.requested is None:
            self.requested = signum
            benchlib.log('signal %d: stopping after the update in progress (again to stop at once)' % signum)
            return
        raise KeyboardInterrupt('signal %d' % signum)

    def check(self):
        if self.requested is not None:
            raise KeyboardInterrupt('signal %d' % self.requested)


class Failure(Exception):
    """An update that failed, or a guest whose continuity broke: ends the run (by default)."""

    def __init__(self, kind, msg, **details):
        super().__init__(msg)
        self.kind = kind
        self.details = details


# --- the soak ---

class Soak:
    def __init__(self, args, collections):
        self.args = args
        self.paths = lib.RuntimePaths(args.runtime_dir, VM_NAME)
        self.binaries = [args.old_binary, args.new_binary]
        self.expected = {b: lib.binary_version(b) for b in self.binaries}
        self.engine_params = dict(module_defaults(collections, 'live_update'), name=VM_NAME,
                                  runtime_dir=args.runtime_dir, verify_timeout=args.verify_timeout)
        self.vm_params = dict(module_defaults(collections, 'vm'), name=VM_NAME, state='running',
                              runtime_dir=args.runtime_dir, memory=args.memory, memory_dir=args.memory_dir,
                              accel=['tcg'], binary=args.old_binary,
                              kernel=os.path.join(args.guest_dir, 'vmlinux'),
                              initrd=os.path.join(args.guest_dir, 'initramfs.gz'),
                              append='console=ttyS0 quiet lu.fill_mb=%d' % args.fill_mb)
        self.vm = None  # the vm module's result after start
        self.pid = None  # the QEMU that runs the guest now
        self.on = 0  # index in self.binaries of the build it runs: it starts on the older one
        self.follower = None
        self.mem_ok_at_check = 0
        self.updates = []
        self.failures = []
        self.full_checks = []
        self.load = []  # load timeline: every --load-every seconds
        self.signals = Signals()
        self.in_progress = None  # the record of an update while the engine runs it
        self.t_updates = None

    # start / stop

    def start(self):
        log = benchlib.log
        if lib.users_of(os.path.join(self.args.memory_dir, 'liveupdate-qemu-%s.ram' % VM_NAME)):
            raise SystemExit('soak: a QEMU already uses the memory file of VM %s' % VM_NAME)
        lib.VmManager(dict(self.vm_params, state='stopped'), False).run()  # leftovers of an interrupted run of ours
        t0 = time.monotonic()
        res = lib.VmManager(self.vm_params, False).run()
        self.vm = res['vm']
        self.pid = self.vm['pid']
        self.follower = lib.guestlog.LogFollower(self.paths.serial_log)
        log('VM %s started on %s (pid %d, %s RAM); waiting for LU-MEM-READY'
            % (VM_NAME, self.vm['binary'], self.pid, self.args.memory))

        def ready():
            s = self.follower.poll()
            if not lib.process_alive(self.pid):
                raise Failure('start', 'QEMU pid %d exited during the boot' % self.pid)
            return s if s.mem_ready_md5 is not None and s.mem_ok >= 1 and s.hb_count >= 10 else None

        try:
            s = lib.wait_for(ready, 180, 'LU-MEM-READY, a first LU-MEM OK and 10 heartbeats', interval=0.2)
        except lib.WaitTimeout:
            raise Failure('start', 'the guest did not boot within 180 s: %s' % tail(self.paths.serial_log, 5))
        self.mem_ok_at_check = s.mem_ok
        log('guest ready after %.1f s: boot id %s, %d heartbeats, memory md5 %s (%d MiB)'
            % (time.monotonic() - t0, s.last_boot_id, s.hb_count, s.mem_ready_md5, s.mem_ready_mb))
        return dict(boot_s=round(time.monotonic() - t0, 1), boot_id=s.last_boot_id, md5=s.mem_ready_md5,
                    fill_mb=s.mem_ready_mb, pid=self.pid, memory_file=self.vm['memory_file'])

    def stop(self):
        """Stop the VM (the vm module's ladder) and remove its files; then anything of ours left."""
        memory_file = os.path.join(self.args.memory_dir, 'liveupdate-qemu-%s.ram' % VM_NAME)
        try:
            lib.VmManager(dict(self.vm_params, state='stopped'), False).run()
        except Exception as exc:  # pylint: disable=broad-except
            benchlib.log('cleanup: vm %s state=stopped: %s' % (VM_NAME, exc))
        benchlib.remove_leftovers(self.args.runtime_dir, [memory_file])
        shutil.rmtree(self.paths.root, ignore_errors=True)

    # one update

    def update(self, index, target):
        s = self.follower.poll()
        hb_before, gaps_before = s.hb_count, len(s.hb_gaps)
        old_pid = self.pid
        rec = dict(i=index, target=target, old_pid=old_pid, load=benchlib.loadavg()[0], t=round(time.time(), 3))
        engine = lib.LiveUpdate(dict(self.engine_params, target_binary=target), False)
        faults = ','.join(f for i, f in self.args.inject_fault if i == index)
        if faults:
            os.environ[FAULTS_ENV] = faults
            rec['injected_fault'] = faults
        t0 = time.monotonic()
        self.signals.in_update = True
        self.in_progress = rec
        try:
            res = engine.run()
        except lib.LiveUpdateError as exc:
            rec['call_s'] = round(time.monotonic() - t0, 4)
            raise Failure('engine', str(exc), record=rec, error_details=exc.details)
        except Exception as exc:  # pylint: disable=broad-except
            raise Failure('engine-crash', '%s: %s' % (type(exc).__name__, exc), record=rec,
                          traceback=traceback.format_exc(), timings=engine.timings, step=engine.step)
        finally:
            self.signals.in_update = False
            self.in_progress = None
            os.environ.pop(FAULTS_ENV, None)
        rec['call_s'] = round(time.monotonic() - t0, 4)
        timings = res.get('timings', {})
        migration = res.get('migration', {})
        new = res.get('new') or {}
        rec.update(new_pid=new.get('pid'), version=new.get('version'), package=new.get('package'),
                   guest_pause_ms=res.get('guest_pause_ms'), bytes=migration.get('bytes'),
                   total_time_ms=migration.get('total_time_ms'), downtime_ms=migration.get('downtime_ms'),
                   engine_s=timings.get('engine'), verify_s=timings.get('verify'), timings=timings,
                   verified=res.get('verified'), stop_method=res.get('stop_method'))
        if not res.get('changed') or not new.get('pid'):
            raise Failure('engine', 'the engine returned without updating: %s' % res.get('msg'), record=rec, result=res)
        if res.get('verified') is not None and not all(c.get('ok') for c in res['verified'].values()):
            raise Failure('verify', 'the engine returned with a failed verification', record=rec, result=res)
        self.pid = new['pid']
        self.on = self.binaries.index(target)
        rec['checks'] = self.check(index, target, old_pid, hb_before, gaps_before, rec)
        return rec

    # continuity

    def check(self, index, target, old_pid, hb_before, gaps_before, rec):
        """The checks after one update; raises Failure. Returns what was seen."""
        t0 = time.monotonic()
        problems = []
        if lib.process_alive(old_pid):
            problems.append('the old QEMU pid %d is still alive' % old_pid)
        memory_file = self.vm['memory_file']
        mappers = mappers_of(memory_file)
        if mappers != [self.pid]:
            problems.append('processes mapping %s: %s, expected only the new QEMU %d' % (memory_file, mappers, self.pid))
        named = sorted(p.pid for p in lib.users_of(memory_file))
        if named != [self.pid]:
            problems.append('QEMUs naming %s: %s, expected only %d' % (memory_file, named, self.pid))
        if self.paths.read_pid() != self.pid:
            problems.append('pidfile names %s, not %d' % (self.paths.read_pid(), self.pid))
        try:
            with lib.QMPSession(self.paths.qmp_socket, 10) as qmp:
                status = qmp.execute('query-status')['status']
                running = lib.qmp_version(qmp)
            if status != 'running':
                problems.append('the canonical QMP socket says %s, not running' % status)
            want = self.expected[target]
            if want and (running['version'], running['package']) != (want['version'], want['package']):
                problems.append('runs %s (%s), expected %s (%s)' % (running['version'], running['package'],
                                                                    want['version'], want['package']))
        except lib.LiveUpdateError as exc:
            status, running = None, None
            problems.append('the canonical QMP socket %s does not answer: %s' % (self.paths.qmp_socket, exc))
        # The guest: new heartbeats, then the log's verdicts.
        s = self.follower.poll()
        at_return = s.hb_count

        def heartbeats():
            s = self.follower.poll()
            if s.hb_count >= at_return + NEW_HEARTBEATS:
                return s
            if not lib.process_alive(self.pid):
                raise Failure('guest', 'the new QEMU pid %d is gone' % self.pid, record=rec)
            return None

        try:
            s = lib.wait_for(heartbeats, self.args.heartbeat_timeout, 'heartbeats after update %d' % index, interval=0.02)
        except lib.WaitTimeout:
            problems.append('the guest printed %d heartbeats within %gs after the update (need %d)'
                            % (self.follower.poll().hb_count - at_return, self.args.heartbeat_timeout, NEW_HEARTBEATS))
            s = self.follower.summary
        window = s.heartbeats[max(hb_before - 1, 0):]
        steps = [b[2] - a[2] for a, b in zip(window, window[1:]) if a[1] == b[1]]
        seen = dict(hb_counter=s.last_counter, hb_new=s.hb_count - hb_before,
                    hb_step_ms=round(max(steps) * 1000) if steps else None,
                    mem_ok=s.mem_ok, mem_bad=s.mem_bad, boot_ids=len(s.boot_ids), mappers=mappers,
                    status=status, running=running)
        if len(s.hb_gaps) > gaps_before:
            problems.append('heartbeat counter gap(s): %s' % [g.as_dict() for g in s.hb_gaps[gaps_before:]])
        if len(s.boot_ids) != 1 or s.boots > 1:
            problems.append('boot ids %s, LU-BOOT lines %d: the guest rebooted' % (s.boot_ids, s.boots))
        if window and window[-1][0] <= window[0][0]:
            problems.append('heartbeat counter did not increase: %d -> %d' % (window[0][0], window[-1][0]))
        if s.mem_bad or s.mem_md5_changed:
            problems.append('memory checksum: %d BAD, md5 changed %s (last %s, ready %s)'
                            % (s.mem_bad, s.mem_md5_changed, s.mem_last_md5, s.mem_ready_md5))
        last = index + 1 == self.args.updates
        if not problems and ((index + 1) % self.args.full_check_every == 0 or last):
            problems += self.full_check(index)
        seen['check_s'] = round(time.monotonic() - t0, 4)
        if problems:
            raise Failure('continuity', '; '.join(problems), record=dict(rec, checks=seen))
        return seen

    def full_check(self, index):
        """A new LU-MEM OK since the previous full check (the checksum loop runs, once a second)."""
        since = self.mem_ok_at_check
        t0 = time.monotonic()
        try:
            def checked():
                summary = self.follower.poll()
                return summary if summary.mem_ok > since or summary.mem_bad else None
            s = lib.wait_for(checked, self.args.mem_timeout, 'a new LU-MEM OK', interval=0.05)
        except lib.WaitTimeout:
            return ['no new LU-MEM OK within %gs of update %d (%d OK so far)'
                    % (self.args.mem_timeout, index, self.follower.summary.mem_ok)]
        if s.mem_bad:
            return ['LU-MEM BAD after update %d' % index]
        self.mem_ok_at_check = s.mem_ok
        self.full_checks.append(dict(after=index, mem_ok=s.mem_ok, waited_s=round(time.monotonic() - t0, 3)))
        return []

    # the run

    def run(self, report):
        args = self.args
        log = benchlib.log
        report['guest'] = self.start()
        report['load_before_updates'] = benchlib.load_snapshot(self.args.runtime_dir)
        next_load = time.monotonic()
        self.t_updates = t_start = time.monotonic()
        for index in range(args.updates):
            self.signals.check()
            if time.monotonic() >= next_load:
                self.load.append(benchlib.load_snapshot(self.args.runtime_dir))
                next_load = time.monotonic() + args.load_every
            target = self.binaries[1 - self.on]
            try:
                rec = self.update(index, target)
            except Failure as exc:
                rec = dict(exc.details.get('record') or {}, failure=dict(kind=exc.kind, msg=str(exc)))
                self.failures.append(self.evidence(index, exc))
                self.updates.append(rec)
                log('update %d/%d FAILED (%s): %s' % (index + 1, args.updates, exc.kind, exc))
                if len(self.failures) >= args.max_failures or exc.kind != 'engine' \
                        or (exc.details.get('error_details') or {}).get('rolled_back') is not True:
                    log('stopping the run; evidence in %s' % self.failures[-1]['evidence_dir'])
                    break
                continue
            self.updates.append(rec)
            if (index + 1) % args.report_every == 0 or index + 1 == args.updates or index < 3:
                done = [r for r in self.updates if 'failure' not in r]
                pauses = [r['guest_pause_ms'] for r in done if r.get('guest_pause_ms') is not None]
                log('%d/%d: last pause %.1f ms, engine %.3f s, call %.3f s, step %s ms, load %.2f; so far median '
                    'pause %.1f ms, max %.1f ms; %.2f updates/s'
                    % (index + 1, args.updates, rec['guest_pause_ms'], rec['engine_s'], rec['call_s'],
                       rec['checks']['hb_step_ms'], rec['load'], statistics.median(pauses),
                       max(pauses), (index + 1) / (time.monotonic() - t_start)))
            if args.json and (index + 1) % 100 == 0:
                benchlib.write_json(args.json + '.partial', dict(report, updates=self.updates))
            if args.interval:
                time.sleep(args.interval)

    def evidence(self, index, exc):
        """Keep what shows the failure: its details, the serial log and QEMU's log."""
        where = self.args.evidence_dir
        os.makedirs(where, exist_ok=True)
        found = dict(update=index, kind=exc.kind, msg=str(exc), evidence_dir=where,
                     details={k: v for k, v in exc.details.items() if k != 'record'},
                     serial_tail=tail(self.paths.serial_log, 80), qemu_log_tail=tail(self.paths.qemu_log, 40),
                     qemus=[dict(pid=p.pid, argv=p.argv) for p in lib.qemu_processes()
                            if p.uses_file(self.vm['memory_file']) or self.paths.root in ' '.join(p.argv)],
                     guest=self.follower.poll().as_dict() if self.follower else None)
        for name in ('serial.log', 'qemu.log', 'vm.json'):
            path = os.path.join(self.paths.root, name)
            if os.path.exists(path):
                shutil.copy(path, os.path.join(where, 'update%04d-%s' % (index, name)))
        benchlib.write_json(os.path.join(where, 'update%04d-failure.json' % index), found)
        return found

    def keep_logs(self):
        if not self.args.keep_logs:
            return
        os.makedirs(self.args.keep_logs, exist_ok=True)
        for name in ('serial.log', 'qemu.log', 'vm.json'):
            path = os.path.join(self.paths.root, name)
            if os.path.exists(path):
                shutil.copy(path, os.path.join(self.args.keep_logs, name))


# --- report ---

def summarize(soak):
    done = [r for r in soak.updates if 'failure' not in r and not r.get('interrupted')]

    def dist(key, values=None):
        values = [v for v in (values if values is not None else [r.get(key) for r in done]) if v is not None]
        if not values:
            return None
        return dict(n=len(values), median=statistics.median(values), p90=benchlib.percentile(values, 0.9),
                    p99=benchlib.percentile(values, 0.99), min=min(values), max=max(values))

    by_dir = {}
    for r in done:
        by_dir.setdefault('to ' + r.get('version', '?') + ' ' + (r.get('package') or ''), []).append(r['guest_pause_ms'])
    loads = [r['load'] for r in soak.updates if r.get('load') is not None] + [x['loadavg'][0] for x in soak.load]
    s = soak.follower.poll() if soak.follower else None
    return dict(
        attempted=len(soak.updates), completed=len(done), failures=len(soak.failures),
        guest_pause_ms=dist('guest_pause_ms'), bytes=dist('bytes'), engine_s=dist('engine_s'),
        call_s=dist('call_s'), verify_s=dist('verify_s'), total_time_ms=dist('total_time_ms'),
        downtime_ms=dist('downtime_ms'), check_s=dist(None, [r['checks'].get('check_s') for r in done]),
        hb_step_ms=dist(None, [r['checks'].get('hb_step_ms') for r in done]),
        pause_by_direction={k: dist(None, v) for k, v in by_dir.items()},
        steps={k: dist(None, [r['timings'].get(k) for r in done]) for k in (done[0]['timings'] if done else {})},
        stop_methods=sorted({r.get('stop_method') for r in done}, key=str),
        load_1min=dict(min=min(loads), median=statistics.median(loads), max=max(loads)) if loads else None,
        other_qemu=dict(min=min(x['other_qemu'] for x in soak.load), max=max(x['other_qemu'] for x in soak.load))
        if soak.load else None,
        guest=dict(heartbeats=s.hb_count, first=s.heartbeats[0][0] if s.heartbeats else None, last=s.last_counter,
                   counter_gaps=[g.as_dict() for g in s.hb_gaps], max_uptime_step_ms=round(s.max_uptime_gap * 1000)
                   if s.max_uptime_gap is not None else None, boot_ids=s.boot_ids, boots=s.boots, mem_ok=s.mem_ok,
                   mem_bad=s.mem_bad, md5_changed=s.mem_md5_changed, garbage_lines=s.garbage,
                   continuous=s.continuous) if s else None,
        full_checks=len(soak.full_checks))


def print_summary(report, summ):
    def d(x, fmt='%.1f'):
        if not x:
            return '-'
        return 'median %s, p90 %s, p99 %s, max %s (min %s, n=%d)' % (
            tuple(fmt % x[k] for k in ('median', 'p90', 'p99', 'max', 'min')) + (x['n'],))
    print('liveupdate.qemu soak, %s to %s; %d cores, TCG; older %s, newer %s' % (
        report['started'], report.get('finished'), report['machine']['cores'],
        report['machine']['old_qemu']['version'], report['machine']['new_qemu']['version']))
    print('collection: %s' % (report['collection']['commit'] or report['collection']['path']))
    print('command: %s' % report['command'])
    print('updates: %d attempted, %d completed, %d failed; %s s for the updates'
          % (summ['attempted'], summ['completed'], summ['failures'], report.get('updates_wall_s')))
    print('guest pause (ms):      %s' % d(summ['guest_pause_ms']))
    for k, v in sorted(summ['pause_by_direction'].items()):
        print('  %-36s %s' % (k, d(v)))
    print('bytes (ram.transferred): %s' % d(summ['bytes'], '%d'))
    print('engine (s):            %s' % d(summ['engine_s'], '%.3f'))
    print('engine call incl. verify (s): %s' % d(summ['call_s'], '%.3f'))
    print('checks after each update (s): %s' % d(summ['check_s'], '%.3f'))
    print('guest heartbeat step around an update (ms): %s' % d(summ['hb_step_ms'], '%d'))
    g = summ['guest']
    if g:
        print('guest: heartbeats %s..%s (%d lines), counter gaps %d, largest uptime step %s ms, boot ids %d, '
              'LU-MEM OK %d / BAD %d, md5 changed %s, continuous %s'
              % (g['first'], g['last'], g['heartbeats'], len(g['counter_gaps']), g['max_uptime_step_ms'],
                 len(g['boot_ids']), g['mem_ok'], g['mem_bad'], g['md5_changed'], g['continuous']))
    if summ['load_1min']:
        print('load (1 min) during the updates: min %.2f, median %.2f, max %.2f; other QEMU processes %s'
              % (summ['load_1min']['min'], summ['load_1min']['median'], summ['load_1min']['max'], summ['other_qemu']))
    if summ['steps']:
        print('engine steps, median s: ' + ', '.join('%s %.4f' % (k, v['median']) for k, v in summ['steps'].items() if v))
    if report.get('interrupted'):
        print('INTERRUPTED (%s)%s' % (report['interrupted'], ' in the middle of an update'
                                      if any(r.get('interrupted') for r in report['updates']) else ''))
    if report.get('error'):
        print('ERROR: %s' % report['error']['msg'])
    for f in report['failures']:
        print('FAILED update %d (%s): %s\n  evidence: %s' % (f['update'], f['kind'], f['msg'], f['evidence_dir']))
    print('p99 is nearest-rank.')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    ap.add_argument('--updates', type=int, default=1000, help='consecutive live updates (default 1000)')
    ap.add_argument('--memory', default='1G', help='guest RAM (default 1G)')
    ap.add_argument('--fill-mb', type=int, default=8, help='MiB the guest fills and re-verifies by md5 (default 8)')
    ap.add_argument('--verify-timeout', type=float, default=5.0, help="the engine's verify_timeout (default 5)")
    ap.add_argument('--full-check-every', type=int, default=10,
                    help='wait for a new LU-MEM OK every N updates and after the last (default 10)')
    ap.add_argument('--max-failures', type=int, default=1,
                    help='stop after this many failed updates (default 1); a failure that did not roll back, '
                         'or a broken guest, always stops the run')
    ap.add_argument('--interval', type=float, default=0.0, help='seconds to wait between updates (default 0)')
    ap.add_argument('--heartbeat-timeout', type=float, default=10.0)
    ap.add_argument('--mem-timeout', type=float, default=10.0)
    ap.add_argument('--report-every', type=int, default=50, help='a progress line every N updates')
    ap.add_argument('--load-every', type=float, default=15.0, help='seconds between load samples (default 15)')
    ap.add_argument('--inject-fault', action='append', default=[], metavar='I:POINT:ACTION',
                    help='test the failure path: set LIVEUPDATE_QEMU_FAULTS=POINT:ACTION for update I (0-based) only')
    ap.add_argument('--runtime-dir', default='/run/liveupdate-qemu-soak')
    ap.add_argument('--memory-dir', default='/dev/shm')
    ap.add_argument('--old-binary', default=os.environ.get('LIVEUPDATE_OLD_QEMU'))
    ap.add_argument('--new-binary', default='/usr/bin/qemu-system-x86_64')
    ap.add_argument('--guest-dir', default=os.environ.get('LIVEUPDATE_GUEST_DIR'))
    ap.add_argument('--git-rev', metavar='REV', help='measure the collection as committed at REV (built into the '
                    'runtime directory); default: the installed one in ANSIBLE_COLLECTIONS_PATH')
    ap.add_argument('--keep-logs', metavar='DIR', help="copy the guest's serial log and QEMU's log into DIR at the end")
    ap.add_argument('--json', metavar='OUT', help='write every update, the load and the summary as JSON')
    args = ap.parse_args(argv)
    if not args.guest_dir or not os.path.isfile(os.path.join(args.guest_dir, 'vmlinux')):
        ap.error('no test guest: set LIVEUPDATE_GUEST_DIR (source .build/env.sh) or --guest-dir')
    if not args.old_binary or not os.access(args.old_binary, os.X_OK):
        ap.error('no older QEMU build: set LIVEUPDATE_OLD_QEMU (source .build/env.sh) or --old-binary')
    if args.updates < 1 or args.full_check_every < 1 or args.max_failures < 1:
        ap.error('--updates, --full-check-every and --max-failures must be at least 1')
    try:
        args.inject_fault = [(int(f.split(':', 1)[0]), f.split(':', 1)[1]) for f in args.inject_fault]
    except (ValueError, IndexError):
        ap.error('--inject-fault takes I:POINT:ACTION, e.g. 5:migrated:kill-dest')
    if os.environ.get(FAULTS_ENV):
        ap.error('%s is set in the environment: it would inject faults into every update' % FAULTS_ENV)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    args.evidence_dir = args.keep_logs or os.path.join(os.path.dirname(os.path.abspath(args.json)) if args.json
                                                       else '/tmp', 'soak-evidence-' + stamp)
    lock, commit, collections = benchlib.start_run(ap, args.runtime_dir, LOCK_NAME, args.git_rev, 'another soak')
    collections = collections.split(':')[0]
    if not collections:
        ap.error('ANSIBLE_COLLECTIONS_PATH is not set: source .build/env.sh first')
    import_collection(collections)
    log = benchlib.log
    benchlib.setup('soak', signals=())
    soak = Soak(args, collections)
    soak.signals.install()
    report = dict(command=' '.join(['python', os.path.relpath(os.path.abspath(sys.argv[0]), benchlib.ROOT)] + sys.argv[1:])
                  if argv is None else argv,
                  collection=dict(path=collections, commit=commit, engine=lib.engine_file,
                                  sha256=benchlib.collection_identity(collections)),
                  host=socket.gethostname(), machine=benchlib.machine_info(args.old_binary, args.new_binary),
                  config=dict(updates=args.updates, memory=args.memory, fill_mb=args.fill_mb,
                              full_check_every=args.full_check_every, interval=args.interval,
                              engine_params=soak.engine_params, vm_params=soak.vm_params),
                  started=time.strftime('%Y-%m-%d %H:%M:%S %Z'), load_start=benchlib.load_snapshot(args.runtime_dir))
    log('%d updates of VM %s (%s RAM) between %s and %s; load %s, %d other QEMU processes; engine %s'
        % (args.updates, VM_NAME, args.memory, report['machine']['old_qemu']['version'],
           report['machine']['new_qemu']['version'], report['load_start']['loadavg'],
           report['load_start']['other_qemu'], commit[:12] if commit else collections))
    rc = 0
    try:
        soak.run(report)
    except KeyboardInterrupt as exc:
        log('interrupted (%s): cleaning up' % (exc or 'Ctrl-C'))
        report['interrupted'] = str(exc) or 'Ctrl-C'
        if soak.in_progress is not None:  # the engine was stopped in the middle of an update
            soak.updates.append(dict(soak.in_progress, interrupted=True))
        rc = 130
    except Failure as exc:  # the start failed
        log('ERROR: %s' % exc)
        report['error'] = dict(kind=exc.kind, msg=str(exc))
        rc = 1
    except Exception as exc:  # pylint: disable=broad-except
        log('ERROR: %s: %s' % (type(exc).__name__, exc))
        report['error'] = dict(kind=type(exc).__name__, msg=str(exc), traceback=traceback.format_exc())
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if soak.t_updates is not None:
            report['updates_wall_s'] = round(time.monotonic() - soak.t_updates, 1)
            soak.load.append(benchlib.load_snapshot(args.runtime_dir))
        try:
            report['summary'] = summarize(soak)
            soak.keep_logs()
        finally:
            soak.stop()
            benchlib.release_runtime_dir(args.runtime_dir, LOCK_NAME, lock)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report.update(finished=time.strftime('%Y-%m-%d %H:%M:%S %Z'), load_end=benchlib.load_snapshot(args.runtime_dir), load=soak.load,
                  full_checks=soak.full_checks, failures=soak.failures, updates=soak.updates)
    if soak.failures and rc == 0:
        rc = 1
    if args.json:
        benchlib.write_json(args.json, report)
        if os.path.exists(args.json + '.partial'):
            os.unlink(args.json + '.partial')
        log('wrote %s' % args.json)
    print_summary(report, report['summary'])
    return rc


if __name__ == '__main__':
    sys.exit(main())
