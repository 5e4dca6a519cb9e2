# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Cross-version benchmark: guest pause, bytes moved and engine time of the transfer modes side by side.

In one run, for each guest size (default 1, 4 and 16 GiB) it starts the test guest
(tools/guest-init.sh, ``lu.fill_mb`` MiB filled and re-verified by md5: the guest touches a bounded
amount of its RAM, so a 16 GiB guest allocates a few hundred MiB of tmpfs / memfd pages) twice, one
VM after the other, with the collection's own ``VmManager`` (in-process, as soak.py does):

* a VM with ``memory_backend: file`` (share=on on --memory-dir) on QEMU 7.2 (/usr/bin, Debian 12), and
  on it, by calling the engine in-process as the module does (``LiveUpdate(params, False).run()``,
  the module's defaults plus the options below):

  - **7.2 -> 7.2**, x-ignore-shared: between the older 7.2 build ($LIVEUPDATE_OLD_QEMU) and
    /usr/bin, both ways; without an older build, /usr/bin onto itself with ``force: true``;
  - **7.2 -> 10.0** and **10.0 -> 7.2**, x-ignore-shared, alternating (each update back counts as a
    10.0 -> 7.2 row);
  - (control, --no-control skips it) **10.0 -> 10.0 x-ignore-shared** with ``force: true``, while the
    VM is on 10.0 between the two directions above: the same binary as the cpr-transfer row, the
    other mode;

* a VM with ``memory_backend: memfd`` (memfd RAM, aux-ram-share=on) on QEMU 10.0, and on it
  **10.0 -> 10.0 cpr-transfer** with ``force: true``.

``transfer_mode`` is always given explicitly and the result's ``transfer_mode`` checked. --runs
updates per row (default 10). After every update: the old process is gone, exactly one QEMU runs
the VM (its runtime directory in the command line), on the expected version; the engine's own
verification passed; the guest printed new heartbeats without a counter gap, under one boot id, and
no memory check was BAD. Per row it reports the median / p99 / max of ``guest_pause_ms``, the median
of ``migration.bytes`` (QEMU's ram.transferred) and of ``timings.engine`` (new QEMU started -> old
one gone), and whether the row meets the targets (guest pause p99 <= 10 ms, <= 1 MiB moved, engine
median <= 0.25 s). It also splits the pause into QEMU's part (source STOP -> destination MIGRATION
completed, by the events' timestamps) and the engine's (-> destination RESUME), and the engine's part
into its steps (by host times it notes when the engine gets those events and commits: trace_events).
It prints figures and verdicts, and asserts nothing. --wait-load waits for a quiet machine first.

    bash scripts/setup.sh && source .build/env.sh
    python benchmarks/cross_version.py --wait-load 1.0 --wait-max 3600 --json /tmp/xbench/r.json

QEMU 10.0 is $LIVEUPDATE_NEW_QEMU, else the build staged in .cache/qemu (--qemu10). The collection
measured is a private copy of the installed one (ANSIBLE_COLLECTIONS_PATH), taken at the start, so
that a reinstall during the run does not change it. Everything the run creates (VMs xb-<S>g-file and
xb-<S>g-memfd under --runtime-dir, their memory files in --memory-dir) is removed at the end, also
after a failure, Ctrl-C or SIGTERM. docs/performance.md has the results.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from types import SimpleNamespace

import benchlib  # benchmarks/benchlib.py: imports nothing of the collection yet
from benchlib import BenchError, load_snapshot, log, percentile, write_json

QEMU72 = benchlib.NEWER  # /usr/bin/qemu-system-x86_64: Debian 12's 7.2
QEMU10_STAGED = os.path.join(benchlib.ROOT, '.cache', 'qemu', '1_10.0.2+ds-2+deb13u1~bpo12+1', 'bin', 'qemu-system-x86_64')
TARGETS = dict(pause_p99_ms=10.0, bytes=1 << 20, engine_s=0.25)
LOCK_NAME = '.xbench.lock'
NEW_HEARTBEATS = 2  # guest heartbeats (100 ms apart) to see after each update

# The rows, in the order printed.
ROWS = [
    ('72-72', '7.2 -> 7.2', 'x-ignore-shared'),
    ('72-10', '7.2 -> 10.0', 'x-ignore-shared'),
    ('10-72', '10.0 -> 7.2', 'x-ignore-shared'),
    ('10-10-cpr', '10.0 -> 10.0', 'cpr-transfer'),
    ('10-10-xis', '10.0 -> 10.0 (control)', 'x-ignore-shared'),
]

lib = SimpleNamespace()  # the collection's module_utils, filled in by import_collection()
EVENTS = []  # the QMP events the engine waited for during the current update (trace_events)


def import_collection(collections):
    """Import the collection's module_utils from ``collections`` (first on sys.path) into ``lib``."""
    lib.__dict__.update(vars(benchlib.import_collection(collections, 'cross_version')))
    trace_events()


def trace_events():
    """Note in EVENTS, as (the peer's pid, event, migration status, QEMU's timestamp, host time), every QMP
    event the engine waits for (host time: when wait_event returned it), and the host time before and
    after ``Switch.commit`` (the journal's rename; events 'commit' and 'committed', no peer, no timestamp).
    For the parts of the guest pause (pause_split); it adds microseconds to the engine's."""
    wait_event, commit = lib.QMPSession.wait_event, lib.Switch.commit

    def traced_wait_event(self, names=None, timeout=None, match=None):
        event = wait_event(self, names, timeout, match)
        EVENTS.append((self.peer_pid, event.get('event'), (event.get('data') or {}).get('status'),
                       lib.event_time(event), time.time()))
        return event

    def traced_commit(self, dest_pid=None):
        EVENTS.append((None, 'commit', None, None, time.time()))
        commit(self, dest_pid)
        EVENTS.append((None, 'committed', None, None, time.time()))

    lib.QMPSession.wait_event, lib.Switch.commit = traced_wait_event, traced_commit


SPLIT = ('qemu_ms', 'engine_ms', 'deliver_ms', 'source_events_ms', 'check_ms', 'rename_ms', 'cont_ms')


def pause_split(old_pid, new_pid):
    """The guest pause (source STOP -> destination RESUME, QEMU's timestamps) in parts, in ms, from
    EVENTS; None when one is missing. ``qemu_ms``: -> the destination's MIGRATION completed event;
    ``engine_ms``: that -> RESUME, in turn ``deliver_ms`` until the engine has that event,
    ``source_events_ms`` until it has read the source's STOP and MIGRATION completed events,
    ``check_ms`` the destination's /proc state (until the commit), ``rename_ms`` the commit (the
    journal's rename), ``cont_ms`` from there to RESUME (``cont`` sent, the destination resumes)."""
    def first(pid, name, status=None):
        return next(((stamp, got) for p, e, st, stamp, got in EVENTS if p == pid and e == name and (status is None or st == status)),
                    (None, None))
    stop = first(old_pid, 'STOP')[0]
    done, seen = first(new_pid, 'MIGRATION', 'completed')
    source_seen = first(old_pid, 'MIGRATION', 'completed')[1]
    commit = first(None, 'commit')[1]
    committed = first(None, 'committed')[1]
    resume = first(new_pid, 'RESUME')[0]
    marks = (stop, done, seen, source_seen, commit, committed, resume)
    if None in marks:
        return None
    parts = [b - a for a, b in zip(marks, marks[1:])]
    return dict(zip(SPLIT, [round(x * 1000, 3) for x in [parts[0], resume - done] + parts[1:]]))


def other_qemus(runtime_dir):
    """QEMU processes on the host that are not this run's (by /proc, without the collection)."""
    count = 0
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                argv = handle.read().decode('utf-8', 'replace').split('\0')
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith('qemu-system') and not any(runtime_dir + '/' in a for a in argv):
            count += 1
    return count


def module_defaults(collections, module):
    """The defaults of ``module``'s options (its argument_spec) plus the common options: the params the
    module hands the engine when given nothing else."""
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


class HopFailed(BenchError):
    """An update that did not complete, or whose checks failed; ``rolled_back``: the guest went on on its source."""

    def __init__(self, msg, rolled_back=False, **details):
        super().__init__(msg)
        self.rolled_back = rolled_back
        self.details = details


# --- one VM ---

class BenchVm:
    """One test guest of the run, started with the collection's VmManager, and its updates."""

    def __init__(self, run, size_gib, backend, binary):
        self.run = run
        self.args = run.args
        self.size = size_gib
        self.backend = backend
        self.name = 'xb-%sg-%s' % (str(size_gib).replace('.', '_'), backend)
        self.paths = lib.RuntimePaths(self.args.runtime_dir, self.name)
        self.vm_params = dict(run.vm_defaults, name=self.name, state='running', runtime_dir=self.args.runtime_dir,
                              memory='%dM' % int(size_gib * 1024), memory_backend=backend,
                              memory_dir=self.args.memory_dir, accel=['tcg'], binary=binary,
                              kernel=os.path.join(self.args.guest_dir, 'vmlinux'),
                              initrd=os.path.join(self.args.guest_dir, 'initramfs.gz'),
                              append='console=ttyS0 quiet lu.fill_mb=%d' % self.args.fill_mb)
        self.pid = None
        self.binary = binary
        self.follower = None
        self.info = dict(name=self.name, size_gib=size_gib, memory_backend=backend, start_binary=binary)

    def start(self):
        self.run.vms.append(self)
        if self.backend == 'file':
            self.run.files.add(lib.memory_file_for(self.args.memory_dir, self.name))
        lib.VmManager(dict(self.vm_params, state='stopped'), False).run()  # leftovers of an interrupted run of ours
        t0 = time.monotonic()
        res = lib.VmManager(self.vm_params, False).run()
        self.pid = res['vm']['pid']
        self.follower = lib.guestlog.LogFollower(self.paths.serial_log)
        log('%s: started on %s (pid %d, %s RAM, %s); waiting for LU-MEM-READY'
            % (self.name, self.run.version_of(self.binary), self.pid, self.vm_params['memory'], self.backend))

        def ready():
            s = self.follower.poll()
            if not lib.process_alive(self.pid):
                raise BenchError('%s: QEMU pid %d exited during the boot' % (self.name, self.pid))
            return s if s.mem_ready_md5 is not None and s.hb_count >= 10 else None

        try:
            s = lib.wait_for(ready, self.args.boot_timeout, 'LU-MEM-READY and 10 heartbeats', interval=0.2)
        except lib.WaitTimeout:
            raise BenchError('%s: the guest did not get ready within %gs' % (self.name, self.args.boot_timeout))
        self.info.update(boot_s=round(time.monotonic() - t0, 1), boot_id=s.last_boot_id, fill_mb=s.mem_ready_mb)
        log('%s: ready after %.1f s (%d MiB filled)' % (self.name, self.info['boot_s'], s.mem_ready_mb))

    def rss_mib(self):
        """Guest RAM pages the host holds for this VM: the blocks of its memory file, or of its QEMU's largest memfd."""
        if self.backend == 'file':
            path = lib.memory_file_for(self.args.memory_dir, self.name)
            return round(os.stat(path).st_blocks * 512 / 2 ** 20)
        fds = '/proc/%d/fd' % self.pid
        best = None
        try:
            for fd in os.listdir(fds):
                try:
                    if os.readlink(os.path.join(fds, fd)).startswith('/memfd:'):
                        st = os.stat(os.path.join(fds, fd))
                        best = st if best is None or st.st_size > best.st_size else best
                except OSError:
                    continue
        except OSError:
            return None
        return round(best.st_blocks * 512 / 2 ** 20) if best is not None else None

    def ours(self):
        """Pids of the QEMU processes that run this VM (its runtime directory on the command line)."""
        root = self.paths.root + '/'
        return sorted(p.pid for p in lib.qemu_processes() if any(root in a for a in p.argv))

    def source_state(self, pid):
        """After a failed update: does the guest run on its source ``pid``, the only QEMU of the VM, on the
        canonical QMP socket, ``running``?"""
        running = self.ours()
        try:
            with lib.QMPSession(self.paths.qmp_socket, 10) as qmp:
                status = qmp.execute('query-status')['status']
                peer = qmp.peer_pid
        except Exception as exc:  # pylint: disable=broad-except
            status, peer = 'no answer (%s)' % exc, None
        ok = running == [pid] and status == 'running' and peer in (None, pid)
        return dict(ok=ok, qemus=running, status=status, peer=peer,
                    summary='%s: QEMUs of the VM %s, canonical socket says %s' % (
                        'the source goes on alone' if ok else 'NOT the source alone', running, status))

    def update(self, row, target, mode, force):
        """One live update onto ``target``; the record, or HopFailed."""
        s = self.follower.poll()
        hb_before, gaps_before = s.hb_count, len(s.hb_gaps)
        old_pid, old_binary = self.pid, self.binary
        rec = dict(row=row, size_gib=self.size, vm=self.name, source=self.run.version_of(old_binary),
                   target=self.run.version_of(target), requested_mode=mode, force=force, old_pid=old_pid,
                   load=benchlib.loadavg()[0])
        params = dict(self.run.engine_defaults, name=self.name, runtime_dir=self.args.runtime_dir, target_binary=target,
                      transfer_mode=mode, force=force, verify_timeout=self.args.verify_timeout)
        del EVENTS[:]
        t0 = time.monotonic()
        try:
            res = lib.LiveUpdate(params, False).run()
        except Exception as exc:  # pylint: disable=broad-except
            # A LiveUpdateError says whether it rolled back; anything else is an engine crash. Either way
            # the run goes on only when the guest demonstrably runs on its source, alone.
            details = getattr(exc, 'details', {}) if isinstance(exc, lib.LiveUpdateError) else {}
            rec.update(call_s=round(time.monotonic() - t0, 4), error='%s: %s' % (type(exc).__name__, exc),
                       step=details.get('step'), rolled_back=details.get('rolled_back'),
                       crash=None if isinstance(exc, lib.LiveUpdateError) else traceback.format_exc())
            rec['source_after'] = after = self.source_state(old_pid)
            raise HopFailed('%s: update %s -> %s failed (%s) at %s: %s; afterwards: %s'
                            % (self.name, rec['source'], rec['target'], type(exc).__name__, details.get('step'),
                               exc, after['summary']),
                            rolled_back=after['ok'] and details.get('rolled_back') is not False, record=rec)
        rec['call_s'] = round(time.monotonic() - t0, 4)
        migration = res.get('migration') or {}
        new = res.get('new') or {}
        timings = res.get('timings') or {}
        rec.update(new_pid=new.get('pid'), version=new.get('version'), package=new.get('package'),
                   transfer_mode=res.get('transfer_mode'), migration_mode=migration.get('mode'),
                   guest_pause_ms=res.get('guest_pause_ms'), bytes=migration.get('bytes'),
                   total_time_ms=migration.get('total_time_ms'), downtime_ms=migration.get('downtime_ms'),
                   engine_s=timings.get('engine'), timings=timings, stop_method=res.get('stop_method'),
                   verified=res.get('verified'), split=pause_split(old_pid, new.get('pid')),
                   other_qemu=other_qemus(self.args.runtime_dir))
        if not res.get('changed') or not new.get('pid'):
            raise HopFailed('%s: the engine returned without updating: %s' % (self.name, res.get('msg')),
                            rolled_back=True, record=rec)
        self.pid, self.binary = new['pid'], target
        problems = []
        if rec['transfer_mode'] != mode:
            problems.append('transfer_mode %s, asked for %s' % (rec['transfer_mode'], mode))
        want = self.run.versions[target]
        if (new.get('version'), new.get('package')) != (want['version'], want['package']):
            problems.append('runs %s (%s), expected %s (%s)' % (new.get('version'), new.get('package'),
                                                                want['version'], want['package']))
        if res.get('verified') is not None and not all(c.get('ok') for c in res['verified'].values()):
            problems.append("the engine's verification failed: %s" % res['verified'])
        if lib.process_alive(old_pid):
            problems.append('the old QEMU pid %d is still alive' % old_pid)
        running = self.ours()
        if running != [self.pid]:
            problems.append('QEMUs of the VM: %s, expected only %d' % (running, self.pid))
        at_return = self.follower.poll().hb_count

        def heartbeats():
            summary = self.follower.poll()
            if summary.hb_count >= at_return + NEW_HEARTBEATS:
                return summary
            if not lib.process_alive(self.pid):
                raise HopFailed('%s: the new QEMU pid %d is gone' % (self.name, self.pid), record=rec)
            return None

        try:
            s = lib.wait_for(heartbeats, 10, 'heartbeats after the update', interval=0.02)
        except lib.WaitTimeout:
            s = self.follower.poll()
            problems.append('%d new heartbeats within 10 s after the update (need %d)' % (s.hb_count - at_return, NEW_HEARTBEATS))
        window = s.heartbeats[max(hb_before - 1, 0):]
        steps = [b[2] - a[2] for a, b in zip(window, window[1:]) if a[1] == b[1]]
        rec['hb_step_ms'] = round(max(steps) * 1000) if steps else None
        if len(s.hb_gaps) > gaps_before:
            problems.append('heartbeat counter gap(s): %s' % [g.as_dict() for g in s.hb_gaps[gaps_before:]])
        if len(s.boot_ids) != 1:
            problems.append('boot ids %s: the guest rebooted' % s.boot_ids)
        if s.mem_bad or s.mem_md5_changed:
            problems.append('memory checksum: %d BAD, md5 changed %s' % (s.mem_bad, s.mem_md5_changed))
        if problems:
            rec['problems'] = problems
            raise HopFailed('%s: after the update %s -> %s: %s'
                            % (self.name, rec['source'], rec['target'], '; '.join(problems)), record=rec)
        return rec

    def stop(self):
        """Stop the VM (the vm module's ladder) and remove its files."""
        if self.args.keep_logs and os.path.exists(self.paths.serial_log):
            os.makedirs(self.args.keep_logs, exist_ok=True)
            shutil.copy(self.paths.serial_log, os.path.join(self.args.keep_logs, self.name + '.serial.log'))
        try:
            lib.VmManager(dict(self.vm_params, state='stopped'), False).run()
        except Exception as exc:  # pylint: disable=broad-except
            log('cleanup: vm %s state=stopped: %s' % (self.name, exc))
        shutil.rmtree(self.paths.root, ignore_errors=True)


# --- the run ---

class Run:
    def __init__(self, args, collections):
        self.args = args
        self.engine_defaults = module_defaults(collections, 'live_update')
        self.vm_defaults = module_defaults(collections, 'vm')
        self.binaries = dict(old72=args.old72, qemu72=args.qemu72, qemu10=args.qemu10)
        self.versions = {}
        for binary in set(self.binaries.values()):
            info = lib.binary_version(binary)
            if not info:
                raise BenchError('%s --version names no QEMU version' % binary)
            self.versions[binary] = info
        self.vms = []  # every BenchVm started (for the clean-up)
        self.files = set()  # memory files of the run
        self.updates = []
        self.failures = []
        self.sizes = []
        self.waited = 0.0  # seconds spent in wait_quiet, against --wait-max

    def wait_quiet(self):
        """With --wait-load: before an update, wait until no other QEMU process runs (other engineers'
        tests), for up to --wait-max seconds over all updates together. Returns the count left."""
        others = other_qemus(self.args.runtime_dir)
        if not self.args.wait_load or not others:
            return others
        t0 = time.monotonic()
        log('%d other QEMU processes: waiting for none' % others)
        while others and self.waited + time.monotonic() - t0 < self.args.wait_max:
            time.sleep(1)
            others = other_qemus(self.args.runtime_dir)
        self.waited += time.monotonic() - t0
        log('%d other QEMU processes after %.0f s (%.0f s of waiting so far)' % (others, time.monotonic() - t0, self.waited))
        return others

    def version_of(self, binary):
        return self.versions[binary]['version']

    def hop(self, vm, row, target, mode, force=False):
        """One completed update of ``vm`` onto ``target``, recorded under ``row``. A failed attempt that left
        the guest on its source alone is recorded and tried again (up to --max-failures per row and size);
        any other failure raises."""
        while True:
            before = self.wait_quiet()
            try:
                rec = vm.update(row, target, mode, force)
                rec['other_qemu_before'] = before
                break
            except HopFailed as exc:
                rec = dict(exc.details.get('record') or {}, failure=str(exc))
                self.failures.append(rec)
                same = [f for f in self.failures if f.get('row') == row and f.get('size_gib') == vm.size]
                log('FAILED (%d in this row): %s' % (len(same), exc))
                if not exc.rolled_back or len(same) >= self.args.max_failures:
                    raise
                time.sleep(self.args.pause_between)
        self.updates.append(rec)
        n = sum(1 for r in self.updates if r['row'] == row and r['size_gib'] == vm.size)
        split = rec.get('split') or {}
        log('%s: %-22s %s -> %s %s: pause %.1f ms (QEMU %s + engine %s, rename %s), %s bytes, engine %.3f s (spawn %.3f), '
            'hb step %s ms, load %.2f, %d other QEMUs'
            % (vm.name, '%s #%d' % (row, n), rec['source'], rec['target'], rec['transfer_mode'],
               rec['guest_pause_ms'], split.get('qemu_ms'), split.get('engine_ms'), split.get('rename_ms'), rec['bytes'], rec['engine_s'],
               rec['timings'].get('spawn', 0), rec['hb_step_ms'], rec['load'], rec['other_qemu']))
        time.sleep(self.args.pause_between)
        return rec

    def file_vm(self, size):
        """The file-backed VM on 7.2: 7.2 -> 7.2, then 7.2 <-> 10.0 (with the 10.0 -> 10.0 control in between)."""
        a = self.args
        vm = BenchVm(self, size, 'file', a.qemu72)
        vm.start()
        rss = [vm.rss_mib()]
        if a.old72 != a.qemu72:  # 7.2.x -> 7.2.y and back: an even number, ending on /usr/bin
            for i in range(a.runs + a.runs % 2):
                self.hop(vm, '72-72', a.old72 if vm.binary == a.qemu72 else a.qemu72, 'x-ignore-shared')
        else:
            for i in range(a.runs):
                self.hop(vm, '72-72', a.qemu72, 'x-ignore-shared', force=True)
        if vm.binary != a.qemu72:
            self.hop(vm, '72-72', a.qemu72, 'x-ignore-shared')
        for i in range(a.runs):
            self.hop(vm, '72-10', a.qemu10, 'x-ignore-shared')
            if i == a.runs - 1 and a.control:
                for j in range(a.runs):
                    self.hop(vm, '10-10-xis', a.qemu10, 'x-ignore-shared', force=True)
            self.hop(vm, '10-72', a.qemu72, 'x-ignore-shared')
        rss.append(vm.rss_mib())
        vm.info['host_resident_mib'] = rss
        return vm

    def memfd_vm(self, size):
        a = self.args
        vm = BenchVm(self, size, 'memfd', a.qemu10)
        vm.start()
        rss = [vm.rss_mib()]
        for i in range(a.runs):
            self.hop(vm, '10-10-cpr', a.qemu10, 'cpr-transfer', force=True)
        rss.append(vm.rss_mib())
        vm.info['host_resident_mib'] = rss
        return vm

    def run(self):
        for size in self.args.sizes:
            entry = dict(size_gib=size, load_start=load_snapshot(self.args.runtime_dir), vms=[], errors=[])
            self.sizes.append(entry)
            for start in (self.file_vm, self.memfd_vm):
                vm = None
                try:
                    vm = start(size)
                except Exception as exc:  # pylint: disable=broad-except
                    log('ERROR at %s GiB: %s: %s' % (size, type(exc).__name__, exc))
                    entry['errors'].append(dict(error='%s: %s' % (type(exc).__name__, exc), traceback=traceback.format_exc()))
                    vm = self.vms[-1] if self.vms and self.vms[-1].size == size else None
                finally:
                    if vm is not None:
                        entry['vms'].append(vm.info)
                        vm.stop()
            entry['load_end'] = load_snapshot(self.args.runtime_dir)

    def cleanup(self):
        for vm in self.vms:
            vm.stop()
        benchlib.remove_leftovers(self.args.runtime_dir, sorted(self.files))


# --- report ---

def summarize(updates, failures, sizes):
    """One row per (row, size): n, failed attempts, pause median/p99/max, bytes median/max, engine median/p99/max, step medians."""
    out = []
    for size in sizes:
        for key, label, mode in ROWS:
            recs = [r for r in updates if r['row'] == key and r['size_gib'] == size]
            failed = [r for r in failures if r.get('row') == key and r.get('size_gib') == size]
            if not recs:
                if failed:
                    out.append(dict(row=key, label=label, mode=mode, size_gib=size, n=0, failed=len(failed),
                                    failures=sorted({f.get('error') or f.get('failure') for f in failed})))
                continue
            pause = [r['guest_pause_ms'] for r in recs if r['guest_pause_ms'] is not None]
            moved = [r['bytes'] for r in recs if r['bytes'] is not None]
            engine = [r['engine_s'] for r in recs if r['engine_s'] is not None]
            steps = {}
            for r in recs:
                for k, v in r['timings'].items():
                    steps.setdefault(k, []).append(v)
            row = dict(row=key, label=label, mode=mode, size_gib=size, n=len(recs), failed=len(failed),
                       failures=sorted({(f.get('error') or f.get('failure') or '')[:300] for f in failed}),
                       versions=sorted({'%s -> %s' % (r['source'], r['target']) for r in recs}),
                       pause_median=statistics.median(pause) if pause else None,
                       pause_p99=percentile(pause, 0.99) if pause else None, pause_max=max(pause) if pause else None,
                       bytes_median=statistics.median(moved) if moved else None, bytes_max=max(moved) if moved else None,
                       engine_median=statistics.median(engine) if engine else None,
                       engine_p99=percentile(engine, 0.99) if engine else None, engine_max=max(engine) if engine else None,
                       hb_step_median=statistics.median([r['hb_step_ms'] for r in recs if r.get('hb_step_ms') is not None] or [0]),
                       load=[min(r['load'] for r in recs), max(r['load'] for r in recs)],
                       other_qemu_max=max(max(r.get('other_qemu') or 0, r.get('other_qemu_before') or 0) for r in recs),
                       split={part: split_stats([(r.get('split') or {}).get(part) for r in recs])
                              for part in SPLIT},
                       steps={k: statistics.median(v) for k, v in steps.items()})
            row['meets'] = dict(pause=row['pause_p99'] is not None and row['pause_p99'] <= TARGETS['pause_p99_ms'],
                                bytes=row['bytes_max'] is not None and row['bytes_max'] <= TARGETS['bytes'],
                                engine=row['engine_median'] is not None and row['engine_median'] <= TARGETS['engine_s'])
            out.append(row)
    return out


def split_stats(values):
    values = [v for v in values if v is not None]
    return dict(median=statistics.median(values), p99=percentile(values, 0.99), max=max(values), n=len(values)) if values else None


def split_markdown(rows):
    lines = ['| update | mode | GiB | pause median / p99 | STOP -> destination completed (QEMU) median / p99 '
             '| completed -> RESUME (engine) median / p99 | engine\'s part, medians: event delivered / source\'s '
             'events read / /proc check / rename / cont -> RESUME | rename max |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        sp = r.get('split') or {}
        if not r['n'] or not all(sp.get(k) for k in SPLIT):
            continue
        lines.append('| %s | %s | %s | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f | %s | %.1f |' % (
            r['label'], r['mode'], r['size_gib'], r['pause_median'], r['pause_p99'], sp['qemu_ms']['median'],
            sp['qemu_ms']['p99'], sp['engine_ms']['median'], sp['engine_ms']['p99'],
            ' / '.join('%.1f' % sp[k]['median'] for k in SPLIT[2:]), sp['rename_ms']['max']))
    return '\n'.join(lines)


def markdown(rows):
    def ok(flag):
        return 'yes' if flag else '**no**'

    lines = ['| update | mode | GiB | n (failed attempts) | guest pause median / p99 / max (ms) | bytes moved (median) '
             '| engine median / p99 (s) | pause p99 ≤ 10 ms | ≤ 1 MiB | engine ≤ 0.25 s |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        if not r['n']:
            lines.append('| %s | %s | %s | 0 (%d) | - | - | - | **no** | **no** | **no** |' % (
                r['label'], r['mode'], r['size_gib'], r['failed']))
            continue
        lines.append('| %s | %s | %s | %d%s | %.1f / %.1f / %.1f | %s | %.3f / %.3f | %s | %s | %s |' % (
            r['label'], r['mode'], r['size_gib'], r['n'], ' (%d)' % r['failed'] if r['failed'] else '', r['pause_median'], r['pause_p99'], r['pause_max'],
            '{:,}'.format(int(r['bytes_median'])), r['engine_median'], r['engine_p99'],
            ok(r['meets']['pause']), ok(r['meets']['bytes']), ok(r['meets']['engine'])))
    return '\n'.join(lines)


def steps_markdown(rows):
    keys = ['spawn', 'migrate', 'switch', 'finish', 'engine', 'verify']
    lines = ['| update | mode | GiB | ' + ' | '.join(keys) + ' | guest heartbeat step (ms) |',
             '|---|---|---|' + '---|' * len(keys) + '---|']
    for r in rows:
        if not r['n']:
            continue
        lines.append('| %s | %s | %s | %s | %d |' % (r['label'], r['mode'], r['size_gib'], ' | '.join(
            '%.3f' % r['steps'][k] if k in r['steps'] else '-' for k in keys), r['hb_step_median']))
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    ap.add_argument('--sizes', default='1,4,16', help='guest RAM sizes in GiB, comma-separated (default 1,4,16)')
    ap.add_argument('--runs', type=int, default=10, help='updates per row and size (default 10)')
    ap.add_argument('--fill-mb', type=int, default=32,
                    help='MiB the guest fills and re-verifies by md5 (lu.fill_mb; default 32): what it touches '
                         'besides its kernel and page tables')
    ap.add_argument('--no-control', dest='control', action='store_false',
                    help='skip the 10.0 -> 10.0 x-ignore-shared control row')
    ap.add_argument('--max-failures', type=int, default=30,
                    help='failed attempts (each rolled back) per row and size before the run gives up (default 30)')
    ap.add_argument('--pause-between', type=float, default=0.5, help='seconds between two updates (default 0.5)')
    ap.add_argument('--verify-timeout', type=float, default=5.0, help="the engine's verify_timeout (default 5)")
    ap.add_argument('--boot-timeout', type=float, default=240.0, help='seconds for a guest to get ready (default 240)')
    ap.add_argument('--qemu72', default=QEMU72, help='QEMU 7.2 (default %s)' % QEMU72)
    ap.add_argument('--old72', default=os.environ.get('LIVEUPDATE_OLD_QEMU') or None,
                    help='an older 7.2 build for the 7.2 -> 7.2 row (default $LIVEUPDATE_OLD_QEMU; '
                         'without one, --qemu72 onto itself with force)')
    ap.add_argument('--qemu10', default=os.environ.get('LIVEUPDATE_NEW_QEMU') or QEMU10_STAGED,
                    help='QEMU 10.0 (default $LIVEUPDATE_NEW_QEMU, else %s)' % QEMU10_STAGED)
    ap.add_argument('--wait-load', type=float, metavar='LOAD',
                    help='before starting, wait until the 1-minute load is below LOAD and no other QEMU process '
                         'runs, and before each update until no other QEMU process runs (up to --wait-max seconds in all)')
    ap.add_argument('--wait-max', type=float, default=900.0)
    ap.add_argument('--runtime-dir', default='/run/liveupdate-qemu-xbench')
    ap.add_argument('--memory-dir', default='/dev/shm')
    ap.add_argument('--guest-dir', default=os.environ.get('LIVEUPDATE_GUEST_DIR'))
    ap.add_argument('--keep-logs', metavar='DIR', help="copy each guest's serial log into DIR before it is removed")
    ap.add_argument('--json', metavar='OUT', help='write every update and the summary as JSON')
    args = ap.parse_args(argv)
    args.sizes = [float(s) if '.' in s else int(s) for s in args.sizes.split(',') if s.strip()]
    args.old72 = args.old72 or args.qemu72
    if not args.guest_dir or not os.path.isfile(os.path.join(args.guest_dir, 'vmlinux')):
        ap.error('no test guest: set LIVEUPDATE_GUEST_DIR (source .build/env.sh) or --guest-dir')
    for opt in ('qemu72', 'old72', 'qemu10'):
        if not os.access(getattr(args, opt), os.X_OK):
            ap.error('--%s %s is not an executable' % (opt, getattr(args, opt)))
    if args.runs < 1:
        ap.error('--runs must be at least 1')

    benchlib.setup('xbench')  # SIGTERM ends the run as Ctrl-C does
    if args.wait_load:
        waited = time.monotonic()
        while ((benchlib.loadavg()[0] >= args.wait_load or other_qemus(args.runtime_dir))
               and time.monotonic() - waited < args.wait_max):
            log('load %s, %d other QEMU processes: waiting for load < %g and none'
                % (benchlib.loadavg(), other_qemus(args.runtime_dir), args.wait_load))
            time.sleep(30)
        log('load %s, %d other QEMU processes after %.0f s of waiting'
            % (benchlib.loadavg(), other_qemus(args.runtime_dir), time.monotonic() - waited))
    lock = benchlib.lock_runtime_dir(args.runtime_dir, LOCK_NAME)
    if lock is None:
        ap.error('another cross_version run uses %s' % args.runtime_dir)
    run = None
    rc = 0
    report = dict(command=' '.join(['python', os.path.relpath(os.path.abspath(sys.argv[0]), benchlib.ROOT)] + sys.argv[1:])
                  if argv is None else argv, host=socket.gethostname(), started=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
    try:
        collections = benchlib.snapshot_collection(os.path.join(args.runtime_dir, benchlib.COLLECTION_DIR))
        import_collection(collections)
        head = subprocess.run(['git', '-C', benchlib.ROOT, 'rev-parse', '--short', 'HEAD'],
                              capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(['git', '-C', benchlib.ROOT, 'status', '--porcelain', 'plugins'],
                               capture_output=True, text=True, check=False).stdout
        report['collection'] = dict(installed=benchlib.COLLECTIONS, head=head, plugins_modified_in_worktree=bool(dirty.strip()),
                                    sha256=benchlib.collection_identity(collections))
        machine = benchlib.machine_info(args.old72, args.qemu72)
        machine['qemu10'] = dict(binary=args.qemu10, version=benchlib.qemu_version(args.qemu10))
        report['machine'] = machine
        report['config'] = dict(sizes=args.sizes, runs=args.runs, fill_mb=args.fill_mb, control=args.control,
                                pause_between=args.pause_between, verify_timeout=args.verify_timeout,
                                wait_load=args.wait_load, wait_max=args.wait_max)
        report['load_start'] = load_snapshot(args.runtime_dir)
        log('machine: %d cores, %s GiB RAM, /dev/shm %s GiB; load %s, %d other QEMU processes'
            % (machine['cores'], machine['mem_total_gib'], machine['shm_gib'], report['load_start']['loadavg'],
               report['load_start']['other_qemu']))
        log('QEMU: 7.2 %s, older 7.2 %s, 10.0 %s; collection %s (HEAD %s%s)'
            % (machine['new_qemu']['version'], machine['old_qemu']['version'], machine['qemu10']['version'],
               collections, head, ', plugins modified in the work tree' if dirty.strip() else ''))
        run = Run(args, collections)
        t0 = time.monotonic()
        run.run()
        report['wall_s'] = round(time.monotonic() - t0, 1)
        report['waited_between_updates_s'] = round(run.waited, 1)
    except KeyboardInterrupt as exc:
        log('interrupted (%s): cleaning up' % (exc or 'Ctrl-C'))
        report['interrupted'] = str(exc) or 'Ctrl-C'
        rc = 130
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        log('ERROR: %s: %s' % (type(exc).__name__, exc))
        report['error'] = '%s: %s' % (type(exc).__name__, exc)
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if run is not None:
                run.cleanup()
            else:
                benchlib.remove_leftovers(args.runtime_dir)
        finally:
            benchlib.release_runtime_dir(args.runtime_dir, LOCK_NAME, lock)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report['finished'] = time.strftime('%Y-%m-%d %H:%M:%S %Z')
    if run is None:
        return rc or 1
    report['load_end'] = load_snapshot(args.runtime_dir)
    rows = summarize(run.updates, run.failures, args.sizes)
    report.update(sizes=run.sizes, updates=run.updates, failures=run.failures, summary=rows)
    if any(s['errors'] for s in run.sizes) or run.failures:
        rc = rc or 1
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        write_json(args.json, report)
        log('wrote %s' % args.json)

    m = report['machine']
    print('liveupdate.qemu cross-version benchmark, %s to %s' % (report['started'], report['finished']))
    print('command: %s' % report['command'])
    print('machine: %d cores (%s), %s GiB RAM, /dev/shm %s GiB, kernel %s, TCG' % (
        m['cores'], m['cpu'], m['mem_total_gib'], m['shm_gib'], m['kernel']))
    print('QEMU 7.2: %s; older 7.2: %s; 10.0: %s' % (m['new_qemu']['version'], m['old_qemu']['version'], m['qemu10']['version']))
    print('collection: HEAD %s%s; engine sha256 %s' % (
        report['collection']['head'], ' + uncommitted plugins/ changes' if report['collection']['plugins_modified_in_worktree'] else '',
        report['collection']['sha256'].get('module_utils/_live_update.py')))
    print('load (1 min) at start %s, at end %s; other QEMU processes %d / %d; %s s (%s s of it waiting for no other QEMU)' % (
        report['load_start']['loadavg'][0], report['load_end']['loadavg'][0], report['load_start']['other_qemu'],
        report['load_end']['other_qemu'], report.get('wall_s'), report.get('waited_between_updates_s')))
    if run.updates:
        print('during the updates: load (1 min) %.2f-%.2f, other QEMU processes at most %d' % (
            min(r['load'] for r in run.updates), max(r['load'] for r in run.updates),
            max(max(r.get('other_qemu') or 0, r.get('other_qemu_before') or 0) for r in run.updates)))
    for size in run.sizes:
        for info in size['vms']:
            print('VM %s: ready in %s s, %s MiB filled, host pages for guest RAM %s MiB (start / end)' % (
                info['name'], info.get('boot_s'), info.get('fill_mb'), ' / '.join(str(x) for x in info.get('host_resident_mib', []))))
        for err in size['errors']:
            print('ERROR at %s GiB: %s' % (size['size_gib'], err['error']))
    print()
    print(markdown(rows))
    print()
    print('Module timings, medians (s):')
    print()
    print(steps_markdown(rows))
    print()
    print('The guest pause in parts (ms; QEMU event timestamps, host times of the engine):')
    print()
    print(split_markdown(rows))
    print()
    print('p99 is nearest-rank: with fewer than 100 updates it is the maximum. Bytes: migration.bytes (ram.transferred).')
    print('=== targets: guest pause p99 <= %g ms, <= 1 MiB moved (max), engine median <= %g s ===' % (
        TARGETS['pause_p99_ms'], TARGETS['engine_s']))
    for r in rows:
        missed = [k for k, v in r['meets'].items() if not v] if r['n'] else ['no update completed']
        print('%-8s %s %s at %s GiB%s' % ('MET' if not missed else 'NOT MET', r['label'], r['mode'], r['size_gib'],
                                          '' if not missed else ' (missed: %s)' % ', '.join(missed)))
    for r in rows:
        if r['failed']:
            print('%d failed attempt(s) in %s %s at %s GiB (each left the guest on its source): %s' % (
                r['failed'], r['label'], r['mode'], r['size_gib'], ' | '.join(r['failures'])))
    for f in run.failures:
        if not (f.get('source_after') or {}).get('ok'):
            print('FAILED update that did not leave the source running alone: %s' % f.get('failure'))
    if report.get('interrupted'):
        print('INTERRUPTED: %s' % report['interrupted'])
    return rc


if __name__ == '__main__':
    sys.exit(main())
