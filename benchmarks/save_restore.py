# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of save / restore (saved_vm), templates and clones (vm_template, vm_clone), on real guests.

The collection's verbs are driven in-process with the params the modules would hand them (their
argument_spec defaults plus what is given here): SavedVmManager, TemplateManager, CloneManager and
VmManager, from a private copy of the installed collection. Five parts, in one run:

1. ``sizes``: per guest size S GiB (one at a time), one test guest on QEMU 7.2 started with -S, --fill-ratio
   of its RAM file written by the host with random data before it runs (a TCG guest fills about
   1.5 MiB/s on a loaded 2-core machine), --guest-fill-mb filled inside the guest; --runs saves and restores with saved_vm (module timings save_ms,
   restore_ms, load_ms, state_bytes; wall time of each verb), then (--qemu10) a restore onto QEMU 10.0
   and --runs saves / restores there (cpr-reboot mode); then an ordinary migrate-to-file save of the
   same guest (x-ignore-shared off, ``migrate fd:`` into a file) with max-bandwidth unlimited and
   QEMU's default 128 MiB/s, each restored by a new QEMU with ``-incoming`` from that file (exec ->
   RESUME event). The guest's heartbeats (same boot id, counter on, md5 never bad) are checked after
   every restore.
2. ``fsync``: two guests with their memory file on persistent storage (--work-dir, ext4), saved right
   after they are ready with sync=always and sync=never; the memory file's dirty and writeback pages
   (cachestat(2), per file) before and after each save, the module's sync_ms, and how long the kernel
   takes to write the never-synced file back by itself.
3. ``maintenance``: --vms small guests saved one after the other, then restored one after the other,
   as roles/host_maintenance does (without Ansible's own per-task cost).
4. ``clones``: one of those guests becomes a template; --clones clones started cold (process start ->
   guest running) and from a warm pool (state=warm, then state=running).
5. memory of the clones (/proc/PID/smaps_rollup and the guest-RAM mapping in /proc/PID/smaps) against
   the template's touched RAM, and of --clones clones against as many booted guests (measured in
   part 3, before their save).

    bash scripts/setup.sh && source .build/env.sh
    python benchmarks/save_restore.py --sizes 1,4,16 --json /tmp/save_restore.json
    python benchmarks/save_restore.py --quick

Everything it creates is under --runtime-dir, --work-dir (ext4) and --memory-dir (files named
liveupdate-qemu-srb-*), and is removed at the end, also after a failure, Ctrl-C or SIGTERM.
docs/performance.md has the results.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from types import SimpleNamespace

import benchlib  # first: the collection on sys.path
from benchlib import BenchError, load_snapshot, log, meminfo, stats, write_json

LOCK_NAME = '.save_restore.lock'
QEMU_DEFAULT_BANDWIDTH = 128 << 20
UNLIMITED_BANDWIDTH = 1 << 40  # 1 TiB/s: no limit, the same meaning on 7.2 and 10.0
QEMU10_STAGED = glob.glob(os.path.join(benchlib.ROOT, '.cache', 'qemu', '1_10.0.2*', 'bin', 'qemu-system-x86_64'))
TARGETS = dict(save_ms=20.0, restore_ms=60.0, clone_cold_ms=50.0, clone_warm_ms=20.0, clone_private=0.10)
PREFIX = 'srb-'  # the VMs of this benchmark

lib = None  # benchlib.import_collection(...), set in main()
M = None  # the managers of the collection, set in main()


# --- files and memory ---

class _Range(ctypes.Structure):
    _fields_ = [('off', ctypes.c_uint64), ('len', ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ('nr_cache', 'nr_dirty', 'nr_writeback', 'nr_evicted', 'nr_recently_evicted')]


_LIBC = ctypes.CDLL(None, use_errno=True)
SYS_CACHESTAT = 451  # x86_64, Linux >= 6.5


def cachestat(path):
    """Pages of ``path`` in the page cache, dirty, under writeback (cachestat(2)), in MiB; None when
    the kernel has no cachestat."""
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, out = _Range(0, 0), _Cachestat()
        if _LIBC.syscall(SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(out), 0) != 0:
            return None
    finally:
        os.close(fd)
    page = os.sysconf('SC_PAGE_SIZE')
    return dict(cached_mib=round(out.nr_cache * page / 2 ** 20, 1), dirty_mib=round(out.nr_dirty * page / 2 ** 20, 1),
                writeback_mib=round(out.nr_writeback * page / 2 ** 20, 1))


def prefill(path, mib, offset_mib):
    """Write ``mib`` MiB of random-looking data (no zero page) into ``path`` from ``offset_mib`` MiB on."""
    block = bytearray(os.urandom(16 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        done = 0
        while done < mib:
            n = min(16, mib - done)
            block[:8] = done.to_bytes(8, 'little')
            os.pwrite(fd, memoryview(block)[:n << 20], (offset_mib + done) << 20)
            done += n
    finally:
        os.close(fd)


def dirty_meminfo_mib():
    info = meminfo()
    return dict(dirty_mib=round(info['Dirty'] / 2 ** 20, 1), writeback_mib=round(info['Writeback'] / 2 ** 20, 1))


def file_mib(path):
    """Blocks of ``path`` (on tmpfs: the guest RAM it holds), MiB."""
    return round(os.stat(path).st_blocks * 512 / 2 ** 20, 1)


SMAPS_KEYS = ('Rss', 'Pss', 'Private_Clean', 'Private_Dirty', 'Shared_Clean', 'Shared_Dirty', 'Anonymous')


def smaps(pid, guest_ram):
    """{whole: smaps_rollup, guest_ram: the mappings of file ``guest_ram``} in MiB (keys SMAPS_KEYS)."""
    whole = dict.fromkeys(SMAPS_KEYS, 0)
    with open('/proc/%d/smaps_rollup' % pid) as handle:
        for line in handle:
            key, dummy, rest = line.partition(':')
            if key in whole:
                whole[key] += int(rest.split()[0])
    ram = dict.fromkeys(SMAPS_KEYS, 0)
    current = False
    with open('/proc/%d/smaps' % pid) as handle:
        for line in handle:
            head = line.split(None, 5)
            if head and '-' in head[0] and not head[0].endswith(':'):
                current = len(head) == 6 and head[5].strip().replace(' (deleted)', '') == guest_ram
                continue
            if current:
                key, dummy, rest = line.partition(':')
                if key in ram:
                    ram[key] += int(rest.split()[0])

    def mib(kib):
        return dict((k, round(v / 1024, 1)) for k, v in kib.items())
    return dict(whole=mib(whole), guest_ram=mib(ram))


# --- where a restore's time goes ---

MARKS = {}  # monotonic times noted by the wrappers below during one verb


def instrument(modules):
    """Wrap launch_detached and load_state as ``modules`` (_saved_vm, _template) call them, noting when
    each starts and returns (MARKS): the modules report exec -> loaded and exec -> running, not the
    QEMU's own start apart from the state load."""
    for mod in modules:
        def launch(*a, _orig=mod.launch_detached, **k):
            MARKS['launch'] = time.monotonic()
            child = _orig(*a, **k)
            MARKS['launched'] = time.monotonic()
            return child

        def load(*a, _orig=mod.load_state, **k):
            MARKS['load'] = time.monotonic()
            out = _orig(*a, **k)
            MARKS['loaded'] = time.monotonic()
            return out

        mod.launch_detached, mod.load_state = launch, load


def phases():
    """{spawn_ms: exec -> QMP socket there, incoming_ms: load_state (migrate-incoming -> completed)} of the
    verb that just ran, then MARKS cleared."""
    out = {}
    if 'launch' in MARKS and 'launched' in MARKS:
        out['spawn_ms'] = round((MARKS['launched'] - MARKS['launch']) * 1000, 1)
    if 'load' in MARKS and 'loaded' in MARKS:
        out['incoming_ms'] = round((MARKS['loaded'] - MARKS['load']) * 1000, 1)
    MARKS.clear()
    return out


# --- the run ---

class Run:
    def __init__(self, args, collections):
        self.args = args
        self.collections = collections
        self.defaults = dict((m, benchlib.module_defaults(collections, m))
                             for m in ('vm', 'saved_vm', 'vm_template', 'vm_clone'))
        self.names = []  # VMs and clones of this run
        self.templates = []
        self.pids = set()  # QEMUs started by this benchmark itself (full-copy restores)
        self.files = set()
        self.followers = {}
        self.report = {}

    # params as the modules would pass them

    def params(self, module, **given):
        common = dict(runtime_dir=self.args.runtime_dir)
        if module == 'saved_vm':
            common['save_dir'] = self.args.save_dir
        if module in ('vm_template', 'vm_clone'):
            common['template_dir'] = self.args.template_dir
        if module == 'vm_clone':
            common['overlay_dir'] = os.path.join(self.args.work_dir, 'overlays')
        return dict(self.defaults[module], **dict(common, **given))

    def vm(self, **given):
        return M.VmManager(self.params('vm', **given), False).run()

    def saved(self, name, state, **given):
        t0 = time.monotonic()
        res = M.SavedVmManager(self.params('saved_vm', name=name, state=state, **given), False).run()
        res['_wall_ms'] = round((time.monotonic() - t0) * 1000, 1)
        return res

    def clone(self, name, template, state, **given):
        MARKS.clear()
        t_req = time.time()
        t0 = time.monotonic()
        res = M.CloneManager(self.params('vm_clone', name=name, template=template, state=state, **given), False).run()
        res['_wall_ms'] = round((time.monotonic() - t0) * 1000, 1)
        res['_requested_at'] = t_req
        return res

    # guests

    def start_guest(self, name, mib, fill_mb, binary, memory_dir, prefill_mb=0):
        """Start test guest ``name`` (``fill_mb`` MiB filled inside the guest). ``prefill_mb``: before its
        first instruction (-S), that much of its RAM file from 64 MiB on is written by the host with
        random data (touched RAM the guest never reads: a TCG guest fills about 1.5 MiB/s on this
        loaded machine), then it is started (cont)."""
        self.names.append(name)
        self.files.add(lib.memory_file_for(memory_dir, name))
        self.vm(name=name, state='stopped', memory_dir=memory_dir)
        res = self.vm(name=name, state='running', memory='%dM' % mib, memory_dir=memory_dir, accel=['tcg'], binary=binary,
                      kernel=os.path.join(self.args.guest_dir, 'vmlinux'),
                      initrd=os.path.join(self.args.guest_dir, 'initramfs.gz'),
                      append='console=ttyS0 quiet lu.fill_mb=%d' % fill_mb, extra_args=['-S'] if prefill_mb else [])
        vm = res['vm']
        if prefill_mb:
            t0 = time.monotonic()
            prefill(vm['memory_file'], prefill_mb, 64)
            vm['prefill_s'] = round(time.monotonic() - t0, 1)
            with lib.QMPSession(vm['qmp_socket'], 30) as qmp:
                qmp.execute('cont')
        self.followers[name] = lib.guestlog.LogFollower(vm['serial_log'])
        return vm

    def wait_ready(self, names, timeout):
        start = time.monotonic()
        last = [start]

        def ready():
            sums = dict((n, self.followers[n].poll()) for n in names)
            waiting = [n for n, s in sums.items() if s.mem_ready_md5 is None or s.hb_count < 5]
            if time.monotonic() - last[0] > 60:
                log('waiting for %d guest(s) to fill: %s (%.0f s)' % (len(waiting), ', '.join(waiting[:4]), time.monotonic() - start))
                last[0] = time.monotonic()
            return not waiting

        try:
            lib.wait_for(ready, timeout, 'LU-MEM-READY', interval=0.5)
        except lib.WaitTimeout:
            raise BenchError('guests %s not ready within %.0f s' % (names, timeout))
        return round(time.monotonic() - start, 1)

    def continues(self, name, pid, beats=5, timeout=60):
        """After a restore: ``beats`` more heartbeats of the same boot, no bad md5. Returns a dict."""
        follower = self.followers[name]
        s = follower.poll()
        boot, have = s.last_boot_id, s.hb_count

        def more():
            now = follower.poll()
            if pid and not lib.process_alive(pid):
                raise BenchError('%s: QEMU pid %s is gone' % (name, pid))
            return now if now.hb_count >= have + beats else None

        try:
            now = lib.wait_for(more, timeout, 'heartbeats', interval=0.05)
        except (lib.WaitTimeout, BenchError) as exc:
            return dict(ok=False, why=str(exc))
        # boot is None when nothing was printed yet (a clone's log has no LU-BOOT line: the template booted)
        ok = len(now.boot_ids) == 1 and boot in (None, now.last_boot_id) and now.mem_bad == 0 and not now.mem_md5_changed
        return dict(ok=ok, boot_ids=len(now.boot_ids), mem_ok=now.mem_ok, mem_bad=now.mem_bad)

    def remove_vm(self, name, memory_dir=None):
        """Whatever ``name`` is now (saved, clone, VM): gone, with its files."""
        try:
            M.SavedVmManager(self.params('saved_vm', name=name, state='absent'), False).run()
        except Exception as exc:  # pylint: disable=broad-except
            log('%s: saved_vm absent: %s' % (name, exc))
        try:
            params = dict(name=name, state='stopped')
            if memory_dir:
                params['memory_dir'] = memory_dir
            self.vm(**params)
        except Exception as exc:  # pylint: disable=broad-except
            log('%s: vm stopped: %s' % (name, exc))

    def cleanup(self):
        for name in list(self.names):
            state = lib.RuntimePaths(self.args.runtime_dir, name).read_state()
            clone = ((state or {}).get('clone') or {}).get('template')
            if clone:
                try:
                    M.CloneManager(self.params('vm_clone', name=name, template=clone, state='absent'), False).run()
                except Exception as exc:  # pylint: disable=broad-except
                    log('%s: clone absent: %s' % (name, exc))
            else:
                self.remove_vm(name)
        for tpl in self.templates:
            try:
                M.TemplateManager(self.params('vm_template', name=tpl, state='absent'), False).run()
            except Exception as exc:  # pylint: disable=broad-except
                log('template %s absent: %s' % (tpl, exc))
        benchlib.end_processes(sorted(self.pids))
        benchlib.remove_leftovers(self.args.runtime_dir, sorted(self.files))
        for directory in (self.args.save_dir, self.args.template_dir, self.args.work_dir):
            shutil.rmtree(directory, ignore_errors=True)
        for path in glob.glob(os.path.join(self.args.memory_dir, 'liveupdate-qemu-%s*' % PREFIX)):
            log('cleanup: removing %s' % path)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


# --- part 1: one size ---

def save_restore_cycle(run, name, binary=None, label=''):
    """saved_vm state=saved then state=running; (save record, restore record)."""
    load = load_snapshot(run.args.runtime_dir)['loadavg']
    res = run.saved(name, 'saved')
    t = res['timings']
    save = dict(label=label, save_ms=t.get('save_ms'), quit_ms=t.get('quit_ms'), sync_ms=t.get('sync_ms'),
                state_bytes=res['saved']['state_bytes'], transfer=res['saved']['transfer'],
                version=res['saved']['version'].get('version') if isinstance(res['saved']['version'], dict) else res['saved']['version'],
                wall_ms=res['_wall_ms'], load=load)
    given = dict(binary=binary) if binary else {}
    MARKS.clear()
    res = run.saved(name, 'running', **given)
    t = res['timings']
    restore = dict(label=label, load_ms=t.get('load_ms'), restore_ms=t.get('restore_ms'), verify_ms=t.get('verify_ms'),
                   guest_pause_ms=res.get('guest_pause_ms'), wall_ms=res['_wall_ms'], pid=res['vm']['pid'], load=load,
                   **phases())
    restore['guest'] = run.continues(name, res['vm']['pid'])
    log('%s %s: save %s ms (%s, %d B state, verb wall %s ms); restore %s ms (QEMU start %s ms, state load %s ms, '
        'verb wall %s ms), guest %s'
        % (name, label, save['save_ms'], save['transfer'], save['state_bytes'], save['wall_ms'], restore['restore_ms'],
           restore.get('spawn_ms'), restore.get('incoming_ms'), restore['wall_ms'], 'OK' if restore['guest']['ok'] else 'NOT OK %s' % restore['guest']))
    return save, restore


def full_copy_cycle(run, name, pid, qmp_path, mode, index):
    """An ordinary migrate-to-file save of the VM of ``pid`` (x-ignore-shared off) with max-bandwidth
    ``mode``, the source ended and its memory file removed, then a new QEMU restoring the guest from
    that file with -incoming. Returns (record, new pid, new qmp socket)."""
    from live_update import Qmp, destination_argv  # benchmarks/live_update.py
    args = run.args
    proc = lib.QemuProcess.from_pid(pid)
    argv = proc.argv
    source_mem = next(o.get('mem-path') for o in proc.cmdline.opts('object') if o.get('mem-path'))
    base = os.path.join(args.runtime_dir, '%s.fc%d' % (name, index))
    new_qmp, pidfile, serial = base + '.qmp', base + '.pid', base + '.serial'
    new_mem = lib.memory_file_for(args.memory_dir, '%s.fc%d' % (name, index))
    run.files.update([new_mem])
    need = file_mib(source_mem) * 2 ** 20
    where = args.full_copy_dir or (args.memory_dir if meminfo()['MemAvailable'] > need + (6 << 30) else args.work_dir)
    stream = os.path.join(where, 'liveupdate-qemu-%s.fc%d.stream' % (name, index))
    run.files.add(stream)
    rec = dict(mode=mode, stream_dir=where, load=load_snapshot(args.runtime_dir)['loadavg'])
    with Qmp(qmp_path) as qmp:
        rec['version'] = qmp.execute('query-version')['qemu']
        machine = lib.query_vm(qmp, pid)['machine']
        caps = dict((c['capability'], c['state']) for c in qmp.execute('query-migrate-capabilities'))
        qmp.execute('migrate-set-capabilities', {'capabilities': [
            {'capability': 'events', 'state': True}, {'capability': 'x-ignore-shared', 'state': False}]})
        params = {'max-bandwidth': UNLIMITED_BANDWIDTH if mode == 'unlimited' else QEMU_DEFAULT_BANDWIDTH}
        if 'mode' in qmp.execute('query-migrate-parameters'):
            params['mode'] = 'normal'
        qmp.execute('migrate-set-parameters', params)
        fd = os.open(stream, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            qmp.pass_fd(fd, 'srb-save')
        finally:
            os.close(fd)
        qmp.drain_events()
        t0 = time.monotonic()
        qmp.execute('migrate', {'uri': 'fd:srb-save'})
        # at 128 MiB/s, three times over; a stream onto disk went at about 24 MB/s here (16 GiB: > 358 s)
        timeout = 120 + need / (QEMU_DEFAULT_BANDWIDTH if where == args.memory_dir else 16 << 20) * 3
        end = qmp.wait_kept('MIGRATION', timeout, lambda e: e['data']['status'] in ('completed', 'failed', 'cancelled'))
        rec['migrate_wall_ms'] = round((time.monotonic() - t0) * 1000, 1)
        if end['data']['status'] != 'completed':
            qmp.execute('migrate-set-capabilities', {'capabilities': [
                {'capability': k, 'state': caps[k]} for k in ('x-ignore-shared',)]})
            raise BenchError('full-copy save of %s: %s %s' % (name, end['data']['status'], qmp.execute('query-migrate')))
        stop = qmp.wait_kept('STOP', 10)
        rec['stop_to_completed_ms'] = round((lib.event_time(end) - lib.event_time(stop)) * 1000, 1)

        def timed():
            state = qmp.execute('query-migrate')
            return state if state.get('total-time') else None

        info = lib.wait_for(timed, 5, 'total-time', interval=0.01)
        rec.update(total_time_ms=info.get('total-time'), downtime_ms=info.get('downtime'),
                   ram_transferred=info.get('ram', {}).get('transferred'))
        try:
            qmp.execute('quit')
        except Exception:  # pylint: disable=broad-except
            pass
    lib.wait_for(lambda: not lib.process_alive(pid), 30, 'the source to exit', interval=0.01)
    if not args.full_copy_dir and where != args.memory_dir:
        t1 = time.monotonic()
        fd = os.open(stream, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        rec['stream_fsync_ms'] = round((time.monotonic() - t1) * 1000, 1)
    rec['stream_bytes'] = os.path.getsize(stream)
    os.unlink(source_mem)  # the guest lives in the stream now (and only one guest's RAM fits at 16 GiB)
    # restore: a new QEMU, the same command line, -incoming from the file
    dargv = destination_argv(argv, new_qmp, pidfile, serial, new_mem, machine)
    run.files.update([new_qmp, pidfile, serial])
    t_exec = time.time()
    t0 = time.monotonic()
    proc_run = subprocess.run(dargv, capture_output=True, text=True, check=False, timeout=120)
    if proc_run.returncode != 0:
        raise BenchError('full-copy restore QEMU failed to start: %s' % proc_run.stderr)
    with open(pidfile) as handle:
        new_pid = int(handle.read().strip())
    run.pids.add(new_pid)
    with Qmp(new_qmp) as qmp:
        qmp.execute('migrate-set-capabilities', {'capabilities': [
            {'capability': 'events', 'state': True}, {'capability': 'x-ignore-shared', 'state': False}]})
        fd = os.open(stream, os.O_RDONLY)
        try:
            qmp.pass_fd(fd, 'srb-restore')
        finally:
            os.close(fd)
        qmp.drain_events()
        qmp.execute('migrate-incoming', {'uri': 'fd:srb-restore'})
        resume = qmp.wait_kept('RESUME', 120 + need / 2 ** 28)
        rec['restore_ms'] = round((lib.event_time(resume) - t_exec) * 1000, 1)
        rec['restore_wall_ms'] = round((time.monotonic() - t0) * 1000, 1)
        lib.wait_for(lambda: qmp.execute('query-status')['status'] == 'running', 30, 'running', interval=0.01)
    os.unlink(stream)
    rec['guest'] = run.continues(name, new_pid, timeout=120)
    log('%s full copy (bw %s, QEMU %s): save stop->completed %s ms, total %s ms, %d B; restore exec->RESUME %s ms; guest %s'
        % (name, mode, rec['version'], rec['stop_to_completed_ms'], rec['total_time_ms'], rec['stream_bytes'],
           rec['restore_ms'], 'OK' if rec['guest']['ok'] else 'NOT OK %s' % rec['guest']))
    return rec, new_pid, new_qmp


def part_size(run, size):
    args = run.args
    name = '%s%dg' % (PREFIX, size)
    fill = int(size * 1024 * args.fill_ratio)
    rec = dict(size_gib=size, prefill_mb=fill, guest_fill_mb=args.guest_fill_mb, saved=[], restored=[], full_copy=[], errors=[],
               load_start=load_snapshot(args.runtime_dir))
    t0 = time.monotonic()
    try:
        vm = run.start_guest(name, size * 1024, args.guest_fill_mb, args.qemu72, args.memory_dir, prefill_mb=fill)
        log('%s: started (pid %d); %d MiB written by the host in %s s' % (name, vm['pid'], fill, vm['prefill_s']))
        rec['prefill_s'] = vm['prefill_s']
        rec['fill_s'] = run.wait_ready([name], 600)
        rec['memory_file_mib'] = file_mib(vm['memory_file'])
        log('%s: ready after %s s, memory file %s MiB' % (name, rec['fill_s'], rec['memory_file_mib']))
        for dummy in range(args.runs):
            s, r = save_restore_cycle(run, name, label='7.2')
            rec['saved'].append(s)
            rec['restored'].append(r)
        pid, qmp = r['pid'], lib.RuntimePaths(args.runtime_dir, name).qmp_socket
        if args.qemu10:
            s, r = save_restore_cycle(run, name, binary=args.qemu10, label='7.2->10.0')
            rec['saved'].append(s)
            rec['restored'].append(r)
            for dummy in range(args.runs):
                s, r = save_restore_cycle(run, name, binary=args.qemu10, label='10.0')
                rec['saved'].append(s)
                rec['restored'].append(r)
            pid = r['pid']
        modes = args.full_copy_modes if size <= args.full_copy_all_modes_max_gib else args.full_copy_modes[:1]
        for index, mode in enumerate(modes):
            fc, pid, qmp = full_copy_cycle(run, name, pid, qmp, mode, index)
            rec['full_copy'].append(fc)
            if not fc['guest']['ok']:
                break
    except (BenchError, OSError, subprocess.SubprocessError, lib.LiveUpdateError) as exc:
        log('ERROR at %s GiB: %s' % (size, exc))
        rec['errors'].append(dict(error='%s: %s' % (type(exc).__name__, exc), traceback=traceback.format_exc()))
    finally:
        benchlib.end_processes(sorted(run.pids))
        run.remove_vm(name)
        benchlib.remove_leftovers(args.runtime_dir, sorted(f for f in run.files if name in f))
        rec['wall_s'] = round(time.monotonic() - t0, 1)
        rec['load_end'] = load_snapshot(args.runtime_dir)
    return rec


# --- part 2: fsync ---

def part_fsync(run):
    args = run.args
    mem_dir = os.path.join(args.work_dir, 'memory')
    os.makedirs(mem_dir, exist_ok=True)
    mib = int(args.fsync_gib * 1024)
    fill = int(mib * args.fill_ratio)
    out = dict(size_mib=mib, prefill_mb=fill, guest_fill_mb=args.guest_fill_mb, memory_dir=mem_dir, fs=lib.filesystem_of(mem_dir), runs=[], errors=[],
               vm_sysctl=dict((k, int(open('/proc/sys/vm/' + k).read())) for k in (
                   'dirty_expire_centisecs', 'dirty_writeback_centisecs', 'dirty_ratio', 'dirty_background_ratio')),
               load_start=load_snapshot(args.runtime_dir))
    names = dict(always=PREFIX + 'fs-always', never=PREFIX + 'fs-never')
    try:
        vms = dict((sync, run.start_guest(n, mib, args.guest_fill_mb, args.qemu72, mem_dir, prefill_mb=fill))
                   for sync, n in names.items())
        out['prefill_s'] = dict((sync, vm['prefill_s']) for sync, vm in vms.items())
        out['fill_s'] = run.wait_ready(list(names.values()), 600)
        for sync in ('always', 'never'):
            path = vms[sync]['memory_file']
            before = dict(file=cachestat(path), meminfo=dirty_meminfo_mib())
            res = run.saved(names[sync], 'saved', sync=sync)
            after = dict(file=cachestat(path), meminfo=dirty_meminfo_mib())
            t = res['timings']
            rec = dict(sync=sync, save_ms=t.get('save_ms'), quit_ms=t.get('quit_ms'), sync_ms=t.get('sync_ms'),
                       synced=res['saved']['synced'], wall_ms=res['_wall_ms'], before=before, after=after,
                       memory_file_mib=file_mib(path), load=load_snapshot(args.runtime_dir)['loadavg'])
            log('fsync %s: file dirty+writeback %s -> %s MiB, sync_ms %s, save verb wall %s ms'
                % (sync, before['file']['dirty_mib'] + before['file']['writeback_mib'],
                   after['file']['dirty_mib'] + after['file']['writeback_mib'], rec['sync_ms'], rec['wall_ms']))
            if sync == 'never':
                t0 = time.monotonic()
                curve = []

                def clean():
                    c = cachestat(path)
                    pending = c['dirty_mib'] + c['writeback_mib']
                    if not curve or time.monotonic() - t0 - curve[-1][0] >= 1:
                        curve.append((round(time.monotonic() - t0, 1), pending))
                    return pending == 0

                try:
                    lib.wait_for(clean, args.writeback_timeout, 'writeback', interval=0.1)
                    rec['written_back_after_s'] = round(time.monotonic() - t0, 1)
                except lib.WaitTimeout:
                    rec['written_back_after_s'] = None
                rec['pending_curve'] = curve
                t1 = time.monotonic()
                lib.fsync_path(path)
                rec['fsync_when_clean_ms'] = round((time.monotonic() - t1) * 1000, 1)
                log('fsync never: the kernel wrote the file back by itself after %s s' % rec['written_back_after_s'])
            out['runs'].append(rec)
    except (BenchError, OSError, subprocess.SubprocessError, lib.LiveUpdateError) as exc:
        log('ERROR in fsync: %s' % exc)
        out['errors'].append(dict(error='%s: %s' % (type(exc).__name__, exc), traceback=traceback.format_exc()))
    finally:
        for n in names.values():
            run.remove_vm(n, memory_dir=mem_dir)
        out['load_end'] = load_snapshot(args.runtime_dir)
    return out


# --- parts 3-5: maintenance, clones, memory ---

def memory_of(pids_files):
    """[(pid, guest RAM file)] -> per process smaps and the totals."""
    rows = []
    for pid, ram in pids_files:
        rows.append(dict(pid=pid, **smaps(pid, ram)))

    def total(part, key):
        return round(sum(r[part][key] for r in rows), 1)
    return dict(per_vm=rows, total=dict((part, dict((k, total(part, k)) for k in SMAPS_KEYS)) for part in ('whole', 'guest_ram')))


def part_fleet(run):
    args = run.args
    n = args.vms
    names = ['%sm%02d' % (PREFIX, i) for i in range(1, n + 1)]
    out = dict(vms=n, size_mib=args.small_mib, fill_mb=args.small_fill_mb, errors=[],
               load_start=load_snapshot(args.runtime_dir))
    tpl = PREFIX + 'tpl'
    try:
        vms = {}
        for name in names:
            vms[name] = run.start_guest(name, args.small_mib, args.small_fill_mb, args.qemu72, args.memory_dir)
        out['boot_s'] = run.wait_ready(names, 900)
        time.sleep(args.settle)
        out['booted_memory'] = memory_of([(vms[x]['pid'], vms[x]['memory_file']) for x in names])
        out['booted_memory']['memory_files_mib'] = round(sum(file_mib(vms[x]['memory_file']) for x in names), 1)
        out['load_booted'] = load_snapshot(args.runtime_dir)
        log('%d booted guests: sum Rss %s MiB, sum Pss %s MiB, memory files %s MiB'
            % (n, out['booted_memory']['total']['whole']['Rss'], out['booted_memory']['total']['whole']['Pss'],
               out['booted_memory']['memory_files_mib']))
        # part 3: save all, then restore all, one after the other
        saves, restores = [], []
        t0 = time.monotonic()
        for name in names:
            res = run.saved(name, 'saved')
            saves.append(dict(name=name, wall_ms=res['_wall_ms'], save_ms=res['timings'].get('save_ms'),
                              quit_ms=res['timings'].get('quit_ms')))
        t1 = time.monotonic()
        for name in names:
            MARKS.clear()
            res = run.saved(name, 'running')
            restores.append(dict(name=name, wall_ms=res['_wall_ms'], restore_ms=res['timings'].get('restore_ms'),
                                 pid=res['vm']['pid'], **phases()))
        t2 = time.monotonic()
        guests = [run.continues(r['name'], r['pid']) for r in restores]
        out['maintenance'] = dict(save_all_s=round(t1 - t0, 3), restore_all_s=round(t2 - t1, 3), total_s=round(t2 - t0, 3),
                                  saves=saves, restores=restores, guests_ok=sum(1 for g in guests if g['ok']),
                                  load=load_snapshot(args.runtime_dir)['loadavg'])
        log('maintenance of %d VMs: save all %.2f s, restore all %.2f s, %d/%d guests went on'
            % (n, t1 - t0, t2 - t1, out['maintenance']['guests_ok'], n))
        # part 4: the first becomes a template; the others go
        for name in names[1:]:
            run.remove_vm(name)
        run.templates.append(tpl)
        res = M.TemplateManager(run.params('vm_template', name=tpl, vm=names[0], state='present'), False).run()
        out['template'] = dict(timings=res.get('timings'), memory_file=res['template']['memory_file'],
                               touched_mib=file_mib(res['template']['memory_file']))
        log('template %s: %s, touched RAM %s MiB' % (tpl, res.get('timings'), out['template']['touched_mib']))
        clones = ['%sc%02d' % (PREFIX, i) for i in range(1, args.clones + 1)]
        cold = []
        for name in clones:
            run.names.append(name)
            run.followers[name] = None
            res = run.clone(name, tpl, 'running')
            cold.append(clone_record(run, name, res))
        out['cold'] = cold
        time.sleep(args.settle)
        out['clone_guests'] = [dict(name=c, **run.continues(c, None, timeout=60)) for c in clones]
        out['clones_ok'] = sum(1 for g in out['clone_guests'] if g['ok'])
        mem = memory_of([(c['pid'], out['template']['memory_file']) for c in cold])
        mem['template_file_mib'] = out['template']['touched_mib']
        out['clone_memory'] = mem
        out['load_clones'] = load_snapshot(args.runtime_dir)
        log('%d clones: sum Pss %s MiB, sum Private %s MiB, Anonymous %s MiB (guest RAM CoW %s MiB); template file %s MiB'
            % (len(clones), mem['total']['whole']['Pss'],
               mem['total']['whole']['Private_Clean'] + mem['total']['whole']['Private_Dirty'],
               mem['total']['whole']['Anonymous'], mem['total']['guest_ram']['Anonymous'], mem['template_file_mib']))
        for name in clones:
            M.CloneManager(run.params('vm_clone', name=name, template=tpl, state='absent'), False).run()
        # the warm pool
        warm, hot = [], []
        for name in clones:
            res = run.clone(name, tpl, 'warm')
            warm.append(dict(name=name, start_ms=res.get('timings', {}).get('start_ms'), wall_ms=res['_wall_ms']))
        for name in clones:
            res = run.clone(name, tpl, 'running')
            hot.append(clone_record(run, name, res))
        out['warm_start'] = warm
        out['warm'] = hot
        out['warm_guests'] = [dict(name=c, **run.continues(c, None, timeout=60)) for c in clones]
        out['warm_clones_ok'] = sum(1 for g in out['warm_guests'] if g['ok'])
        for name in clones:
            M.CloneManager(run.params('vm_clone', name=name, template=tpl, state='absent'), False).run()
        M.TemplateManager(run.params('vm_template', name=tpl, state='absent'), False).run()
        run.templates.remove(tpl)
    except (BenchError, OSError, subprocess.SubprocessError, lib.LiveUpdateError) as exc:
        log('ERROR in maintenance/clones: %s' % exc)
        out['errors'].append(dict(error='%s: %s' % (type(exc).__name__, exc), traceback=traceback.format_exc()))
    finally:
        out['load_end'] = load_snapshot(args.runtime_dir)
    return out


def clone_record(run, name, res):
    vm = res['vm']
    if vm.get('serial_log'):  # a new clone of the same name writes a new log
        run.followers[name] = lib.guestlog.LogFollower(vm['serial_log'])
    t = res.get('timings', {})
    ext = (res['resumed_at'] - res['_requested_at']) * 1000 if res.get('resumed_at') else None
    rec = dict(name=name, pid=vm['pid'], start_ms=t.get('start_ms'), load_to_running_ms=t.get('load_to_running_ms'),
               total_ms=t.get('total_ms'), wall_ms=res['_wall_ms'], request_to_resume_event_ms=round(ext, 1) if ext else None,
               **phases())
    log('clone %s: start %s ms, load->running %s ms, total %s ms, request->RESUME event %s ms; QEMU start %s ms, state load %s ms'
        % (name, rec['start_ms'], rec['load_to_running_ms'], rec['total_ms'], rec['request_to_resume_event_ms'],
           rec.get('spawn_ms'), rec.get('incoming_ms')))
    return rec


# --- the report ---

def fmt(v, digits=1):
    if v is None:
        return '-'
    if isinstance(v, float):
        return ('%%.%df' % digits) % v
    return str(v)


def med(rows, key, where=lambda r: True):
    s = stats([r.get(key) for r in rows if where(r)])
    return s


def cell(s):
    return '-' if not s else '%s / %s (%d)' % (fmt(s['median']), fmt(s['max']), s['n'])


def summarize(report):
    lines, verdicts = [], []
    add = lines.append
    add('=== 1. save / restore (median / max (n); ms unless said) ===')
    add('%-6s %-10s %-22s %-22s %-14s %-22s %-22s %-12s' % (
        'size', 'how', 'save (guest stopped)', 'verb wall save', 'state bytes', 'restore (exec->run)',
        'verb wall restore', 'guest ok'))
    worst_save, worst_restore = [], []
    for size in report.get('sizes', []):
        add('%s GiB guest: memory file holds %s MiB (%s MiB written by the host before boot, lu.fill_mb=%s), ready after %s s'
            % (size['size_gib'], size.get('memory_file_mib'), size['prefill_mb'], size['guest_fill_mb'], size.get('fill_s')))
        for label in ('7.2', '7.2->10.0', '10.0'):
            sv = [r for r in size['saved'] if r['label'] == label]
            rs = [r for r in size['restored'] if r['label'] == label]
            if not sv:
                continue
            ok = '%d/%d' % (sum(1 for r in rs if r['guest']['ok']), len(rs))
            add('%-6s %-10s %-22s %-22s %-14s %-22s %-22s %-12s' % (
                '%s GiB' % size['size_gib'], 'saved_vm ' + label, cell(med(sv, 'save_ms')), cell(med(sv, 'wall_ms')),
                fmt(max(r['state_bytes'] for r in sv)), cell(med(rs, 'restore_ms')), cell(med(rs, 'wall_ms')), ok))
            if any('spawn_ms' in r for r in rs):
                add('%-6s %-10s   restore in parts: QEMU exec -> QMP socket %s, migrate-incoming -> completed %s'
                    % ('', '', cell(med(rs, 'spawn_ms')), cell(med(rs, 'incoming_ms'))))
            worst_save += [r['save_ms'] for r in sv if r['save_ms'] is not None]
            worst_restore += [r['restore_ms'] for r in rs if r['restore_ms'] is not None]
        for fc in size['full_copy']:
            add('%-6s %-10s %-22s %-22s %-14s %-22s %-22s %-12s' % (
                '%s GiB' % size['size_gib'], 'full %s' % fc['mode'][:5], fmt(fc['stop_to_completed_ms']),
                fmt(fc['migrate_wall_ms']), fmt(fc['stream_bytes']), fmt(fc['restore_ms']), fmt(fc['restore_wall_ms']),
                'OK' if fc['guest']['ok'] else 'NOT OK'))
        for err in size['errors']:
            add('ERROR at %s GiB: %s' % (size['size_gib'], err['error']))
    if worst_save:
        verdicts.append(('save <= %g ms at every size (saved_vm save_ms)' % TARGETS['save_ms'], 'max %.1f ms' % max(worst_save),
                         max(worst_save) <= TARGETS['save_ms']))
    if worst_restore:
        verdicts.append(('restore <= %g ms at every size (saved_vm restore_ms)' % TARGETS['restore_ms'],
                         'max %.1f ms' % max(worst_restore), max(worst_restore) <= TARGETS['restore_ms']))
    fs = report.get('fsync')
    if fs:
        add('')
        add('=== 2. memory file on %s (%s), %d MiB guest, %d MiB written by the host before boot ===' % (
            fs['memory_dir'], fs['fs'], fs['size_mib'], fs['prefill_mb']))
        add('vm.dirty_expire_centisecs %(dirty_expire_centisecs)d, dirty_writeback_centisecs %(dirty_writeback_centisecs)d'
            % fs['vm_sysctl'])
        for r in fs['runs']:
            b, a = r['before']['file'], r['after']['file']
            add('sync=%-6s: file dirty+writeback before save %.1f MiB, after %.1f MiB; sync_ms %s; save_ms %s; verb wall %s ms%s'
                % (r['sync'], b['dirty_mib'] + b['writeback_mib'], a['dirty_mib'] + a['writeback_mib'], fmt(r['sync_ms']),
                   fmt(r['save_ms']), fmt(r['wall_ms']),
                   '; written back by the kernel after %s s' % fmt(r.get('written_back_after_s')) if r['sync'] == 'never' else ''))
        for err in fs['errors']:
            add('ERROR: %s' % err['error'])
    fl = report.get('fleet')
    if fl:
        add('')
        mt = fl.get('maintenance')
        if mt:
            add('=== 3. host maintenance, %d VMs of %d MiB (%d MiB filled), one after the other ===' % (fl['vms'], fl['size_mib'], fl['fill_mb']))
            add('save all %.2f s, restore all %.2f s, total %.2f s; per VM save verb %s ms, restore verb %s ms; guests ok %d/%d'
                % (mt['save_all_s'], mt['restore_all_s'], mt['total_s'], cell(med(mt['saves'], 'wall_ms')),
                   cell(med(mt['restores'], 'wall_ms')), mt['guests_ok'], fl['vms']))
            add('per VM: save_ms %s, quit_ms %s; restore_ms %s (QEMU exec -> QMP socket %s, state load %s)'
                % (cell(med(mt['saves'], 'save_ms')), cell(med(mt['saves'], 'quit_ms')), cell(med(mt['restores'], 'restore_ms')),
                   cell(med(mt['restores'], 'spawn_ms')), cell(med(mt['restores'], 'incoming_ms'))))
        if fl.get('cold'):
            add('')
            add('=== 4. clones of a %d MiB template (touched RAM %s MiB) ===' % (fl['size_mib'], fl['template']['touched_mib']))
            add('%-34s %-22s %-22s' % ('', 'cold (state=running)', 'warm pool (warm->running)'))
            for label, key in (('start_ms (QEMU started, ready)', 'start_ms'), ('load_to_running_ms', 'load_to_running_ms'),
                               ('total_ms (module)', 'total_ms'), ('request -> RESUME event (outside)', 'request_to_resume_event_ms'),
                               ('verb wall', 'wall_ms'), ('  QEMU exec -> QMP socket', 'spawn_ms'),
                               ('  state load (migrate-incoming -> completed)', 'incoming_ms')):
                add('%-34s %-22s %-22s' % (label, cell(med(fl['cold'], key)), cell(med(fl.get('warm', []), key))))
            if fl.get('warm_start'):
                add('warm pool: state=warm took %s ms per clone (start_ms), verb wall %s'
                    % (cell(med(fl['warm_start'], 'start_ms')), cell(med(fl['warm_start'], 'wall_ms'))))
            add('clones whose guest went on: cold %s/%d, warm %s/%d' % (
                fl.get('clones_ok'), len(fl['cold']), fl.get('warm_clones_ok'), len(fl.get('warm', []))))
            cold = [r['total_ms'] for r in fl['cold'] if r['total_ms'] is not None]
            if cold:
                verdicts.append(('clone, process start -> running <= %g ms (cold total_ms)' % TARGETS['clone_cold_ms'],
                                 'median %.1f, max %.1f ms' % (stats(cold)['median'], max(cold)), max(cold) <= TARGETS['clone_cold_ms']))
            hot = [r['load_to_running_ms'] for r in fl.get('warm', []) if r['load_to_running_ms'] is not None]
            if hot:
                verdicts.append(('clone from a warm pool, request -> running <= %g ms (load_to_running_ms)' % TARGETS['clone_warm_ms'],
                                 'median %.1f, max %.1f ms' % (stats(hot)['median'], max(hot)), max(hot) <= TARGETS['clone_warm_ms']))
        cm, bm = fl.get('clone_memory'), fl.get('booted_memory')
        if cm:
            add('')
            add('=== 5. memory (MiB), %d clones vs %d booted guests ===' % (len(cm['per_vm']), len(bm['per_vm']) if bm else 0))
            touched = cm['template_file_mib']
            priv = [r['whole']['Private_Clean'] + r['whole']['Private_Dirty'] for r in cm['per_vm']]
            anon_ram = [r['guest_ram']['Anonymous'] for r in cm['per_vm']]
            add('per clone: Private_Clean+Private_Dirty %s, Pss %s, Anonymous %s; guest-RAM mapping: Anonymous (CoW copies) %s, Pss %s'
                % (cell(stats(priv)), cell(med([r['whole'] for r in cm['per_vm']], 'Pss')),
                   cell(med([r['whole'] for r in cm['per_vm']], 'Anonymous')), cell(stats(anon_ram)),
                   cell(med([r['guest_ram'] for r in cm['per_vm']], 'Pss'))))
            verdicts.append(('clone private memory <= 10%% of the template touched RAM (%s MiB)' % touched,
                             'guest RAM CoW max %.1f MiB = %.1f%%; whole process Private max %.1f MiB = %.0f%%'
                             % (max(anon_ram), 100 * max(anon_ram) / touched, max(priv), 100 * max(priv) / touched),
                             max(anon_ram) <= TARGETS['clone_private'] * touched))
            add('%d clones: sum Pss %s, sum Rss %s; sum Anonymous %s + template file %s = %s'
                % (len(cm['per_vm']), cm['total']['whole']['Pss'], cm['total']['whole']['Rss'], cm['total']['whole']['Anonymous'],
                   touched, round(cm['total']['whole']['Anonymous'] + touched, 1)))
            if bm:
                add('%d booted: sum Pss %s, sum Rss %s; sum Anonymous %s + memory files %s = %s'
                    % (len(bm['per_vm']), bm['total']['whole']['Pss'], bm['total']['whole']['Rss'], bm['total']['whole']['Anonymous'],
                       bm['memory_files_mib'], round(bm['total']['whole']['Anonymous'] + bm['memory_files_mib'], 1)))
        for err in fl['errors']:
            add('ERROR: %s' % err['error'])
    return lines, verdicts


def main(argv=None):
    global lib, M
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    ap.add_argument('--sizes', default='1,4,16', help='guest RAM sizes of part 1, GiB, comma-separated (default 1,4,16)')
    ap.add_argument('--fill-ratio', type=float, default=0.6,
                    help='share of the guest RAM of parts 1 and 2 written by the host before the guest starts (default 0.6)')
    ap.add_argument('--guest-fill-mb', type=int, default=16, help='MiB filled inside the guest (lu.fill_mb) in parts 1 and 2')
    ap.add_argument('--runs', type=int, default=3, help='saves and restores per size and QEMU version (default 3)')
    ap.add_argument('--full-copy-modes', default='unlimited,default', help='bandwidths of the ordinary save: unlimited, default')
    ap.add_argument('--full-copy-dir', help='where the ordinary save writes its stream (default: --memory-dir when it fits '
                                            'with 6 GiB to spare, else --work-dir)')
    ap.add_argument('--fsync-gib', type=float, default=1, help='guest RAM of the fsync part, GiB (default 1; 0: skip)')
    ap.add_argument('--writeback-timeout', type=float, default=120)
    ap.add_argument('--vms', type=int, default=10, help='VMs of the maintenance part (default 10; 0: skip parts 3-5)')
    ap.add_argument('--clones', type=int, default=10)
    ap.add_argument('--small-mib', type=int, default=256)
    ap.add_argument('--small-fill-mb', type=int, default=16, help='lu.fill_mb of the small guests (default 16)')
    ap.add_argument('--settle', type=float, default=3.0, help='seconds before memory is measured')
    ap.add_argument('--parts', default='sizes,fsync,fleet',
                    help='in this order: sizes (all of --sizes), size:N (one size), fsync, fleet (maintenance + clones + memory)')
    ap.add_argument('--full-copy-all-modes-max-gib', type=int, default=4,
                    help='above this size only the first of --full-copy-modes runs (default 4: at 128 MiB/s a 16 GiB '
                         'guest with 9.8 GiB touched needs 78 s or more)')
    ap.add_argument('--quick', action='store_true', help='a small run: 1 GiB, 1 run, 0.5 GiB fsync guest, 3 VMs, 3 clones')
    ap.add_argument('--qemu72', default=benchlib.NEWER)
    ap.add_argument('--qemu10', default=os.environ.get('LIVEUPDATE_NEW_QEMU') or (QEMU10_STAGED[0] if QEMU10_STAGED else None),
                    help='QEMU 10.0 for the cpr-reboot saves ("" to skip)')
    ap.add_argument('--runtime-dir', default='/run/liveupdate-qemu-srbench')
    ap.add_argument('--memory-dir', default='/dev/shm')
    ap.add_argument('--work-dir', default='/var/tmp/liveupdate-qemu-srbench', help='on persistent storage (ext4)')
    ap.add_argument('--json', metavar='OUT')
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.fsync_gib, args.vms, args.clones = '1', 1, 0.5, 3, 3
    args.sizes = [int(s) for s in args.sizes.split(',') if s.strip()]
    args.full_copy_modes = [m for m in args.full_copy_modes.split(',') if m]
    args.parts = [p for p in args.parts.split(',') if p]
    args.save_dir = os.path.join(args.work_dir, 'saved')
    args.template_dir = os.path.join(args.memory_dir, 'liveupdate-qemu-%stemplates' % PREFIX)
    args.guest_dir = os.environ.get('LIVEUPDATE_GUEST_DIR') or os.path.join(benchlib.ROOT, '.cache', 'guest')
    if not benchlib.COLLECTIONS:
        ap.error('source .build/env.sh first')
    benchlib.setup('srbench')
    lock = benchlib.lock_runtime_dir(args.runtime_dir, LOCK_NAME)
    if lock is None:
        ap.error('another save_restore run uses %s' % args.runtime_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    collections = benchlib.snapshot_collection(os.path.join(args.work_dir, 'collection'))
    lib = benchlib.import_collection(collections, 'save_restore')
    from ansible_collections.liveupdate.qemu.plugins.module_utils import _proc, _qemu_state, _saved, _saved_vm, _template
    lib.QemuProcess, lib.filesystem_of, lib.query_vm = _proc.QemuProcess, _proc.filesystem_of, _qemu_state.query_vm
    lib.fsync_path = _saved.fsync_path
    instrument([_saved_vm, _template])
    M = SimpleNamespace(VmManager=lib.VmManager, SavedVmManager=_saved_vm.SavedVmManager,
                        TemplateManager=_template.TemplateManager, CloneManager=_template.CloneManager)
    run = Run(args, collections)
    report = dict(command=' '.join(['python', os.path.relpath(sys.argv[0], benchlib.ROOT)] + sys.argv[1:]) if argv is None else argv,
                  host=socket.gethostname(), started=time.strftime('%Y-%m-%d %H:%M:%S'),
                  machine=benchlib.machine_info(args.qemu72, args.qemu10 or args.qemu72),
                  load_start=load_snapshot(args.runtime_dir), uptime=subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip())
    log('load %s (%s), %d other QEMUs' % (report['load_start']['loadavg'], report['uptime'], report['load_start']['other_qemu']))
    rc = 0
    try:
        report['sizes'] = []
        for part in args.parts:
            if part == 'sizes' or part.startswith('size:'):
                for size in args.sizes if part == 'sizes' else [int(part.split(':')[1])]:
                    report['sizes'].append(part_size(run, size))
            elif part == 'fsync' and args.fsync_gib:
                report['fsync'] = part_fsync(run)
            elif part == 'fleet' and args.vms:
                report['fleet'] = part_fleet(run)
    except KeyboardInterrupt:
        log('interrupted: cleaning up')
        rc = 130
    finally:
        run.cleanup()
        shutil.rmtree(args.work_dir, ignore_errors=True)
        benchlib.release_runtime_dir(args.runtime_dir, LOCK_NAME, lock)
        report['finished'] = time.strftime('%Y-%m-%d %H:%M:%S')
        report['load_end'] = load_snapshot(args.runtime_dir)
        report['uptime_end'] = subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
        if args.json:
            write_json(args.json, report)
    lines, verdicts = summarize(report)
    report['verdicts'] = [dict(target=t, measured=m, met=v) for t, m, v in verdicts]
    if args.json:
        write_json(args.json, report)
        log('wrote %s' % args.json)
    print('liveupdate.qemu save/restore and clone benchmark, %s - %s; %d cores, TCG; QEMU %s and %s'
          % (report['started'], report['finished'], report['machine']['cores'], report['machine']['old_qemu']['version'],
             report['machine']['new_qemu']['version']))
    print('load at start: %s; at end: %s' % (report['uptime'], report['uptime_end']))
    print()
    for line in lines:
        print(line)
    print()
    print('=== targets ===')
    for target, measured, met in verdicts:
        print('%-8s %s: %s' % ('MET' if met else 'NOT MET', target, measured))
    errors = [e for s in report.get('sizes', []) for e in s['errors']] + (report.get('fsync') or {}).get('errors', []) \
        + (report.get('fleet') or {}).get('errors', [])
    return rc or (1 if errors else 0)


if __name__ == '__main__':
    sys.exit(main())
