# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet benchmark: the real rollout playbook (playbooks/live_update.yml) over many small VMs.

1. One host, N VMs (--sizes, default 10,50,100). For every batch size x concurrency of
   --configs (default: `default`, the role's own defaults, and 25x1): start N VMs named fb-NNN with liveupdate.qemu.vm on the
   older QEMU build ($LIVEUPDATE_OLD_QEMU; 64M of RAM, TCG, no serial console, no kernel: the
   firmware finds nothing to boot and idles), run ``ansible-playbook playbooks/live_update.yml``
   on a localhost inventory (method path, /usr/bin/qemu-system-x86_64, so that nothing is
   staged), time it end to end, read the guest pause of every VM from the report JSON the
   playbook writes, then stop the VMs again (benchmarks/playbooks/vms.yml). A callback plugin
   (benchmarks/callback_plugins/fleetbench_timer.py, not part of the collection) records how long
   each task took and the results of the live_update tasks, whose per-step ``timings``
   (``engine`` among them) the report JSON does not carry; from those the summary splits the
   wall time into ansible and engine time, telling rolling_update's tasks apart by action, check
   mode and task file, not by name. With --direct, one more run per N moves all N VMs with a
   single live_update task (playbooks/direct.yml: the engine's floor without the role around
   it); --baseline-runs, one VM alone (playbooks/baseline.yml).
   This part runs in a PID namespace of its own (unshare, with benchmarks/reaper.py as its PID 1),
   so that the rollout's discovery (vm_info) sees the benchmark's VMs only, not other QEMUs on the
   machine; --no-isolate runs it in the machine's namespace.
2. Hosts in parallel (--hosts H x --vms-per-host M, default 5 x 10; 0 skips): H test hosts from
   molecule/default/testhosts.sh (prefix fbh, network 10.213.91.0/24, state in
   /var/lib/liveupdate-fleetbench-hosts: apart from the molecule scenario's hosts), M VMs on
   each, the same playbook over SSH, with the playbook's default serial (--host-configs default)
   or live_update_serial H (--host-configs BATCHxCONCURRENCY).

It prints figures, not verdicts on correctness; the summary compares them with the targets.

    bash scripts/setup.sh && source .build/env.sh
    python benchmarks/fleet.py --sizes 10,50,100 --configs default,1x1,25x1 --hosts 5 --json fleet.json

Every VM, memory file, runtime directory and test host it creates is removed at the end, also
after a failure, Ctrl-C or SIGTERM. docs/performance.md ("Fleet rollout") has the results.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import benchlib  # benchmarks/benchlib.py: first, it puts the collection on sys.path
from benchlib import NEWER, Ansible, BenchError, loadavg, log, qemu_version, stats, write_json

from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_spec import memory_file_for

PLAYBOOK = os.path.join(benchlib.ROOT, 'playbooks', 'live_update.yml')
TESTHOSTS = os.path.join(benchlib.ROOT, 'molecule', 'default', 'testhosts.sh')
REAPER = os.path.join(benchlib.BENCH_DIR, 'reaper.py')  # PID 1 of part 1's namespace
# Issue 12: with the defaults (no batch, concurrency or serial given), 100 VMs on one host and
# 5 hosts x 10 VMs each within 30 s end to end.
TARGETS = dict(one_host_n=100, one_host_s=30.0, hosts_s=30.0)
HOSTS_ENV = dict(TESTHOSTS_PREFIX='fbh', TESTHOSTS_NET='10.213.91',
                 TESTHOSTS_DIR='/var/lib/liveupdate-fleetbench-hosts')
ISOLATED_ENV = 'FLEETBENCH_ISOLATED'
ROLLOUT_ROLE = 'rolling_update'  # the role whose tasks the breakdown splits
STEPS = ('locate', 'recover', 'preflight', 'spawn', 'migrate', 'switch', 'finish', 'engine')


def pause_stats(values):
    return stats(values, 0.95)


def qemu_banner(binary):
    """'QEMU emulator version 7.2.22 (Debian ...)', the first line of ``binary --version``."""
    return 'QEMU emulator version %s' % qemu_version(binary)


def vm_names(n):
    return ['fb-%03d' % i for i in range(1, n + 1)]


def write_local_inventory(workdir):
    path = os.path.join(workdir, 'local-inventory.yml')
    with open(path, 'w') as handle:
        json.dump({'hypervisors': {'hosts': {'localhost': {
            'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}}}}, handle)
    return path


def write_hosts_inventory(workdir, hosts_json):
    path = os.path.join(workdir, 'hosts-inventory.yml')
    hosts = {}
    for host in hosts_json['hosts']:
        hosts[host['name']] = {
            'ansible_host': host['address'], 'ansible_port': host['port'], 'ansible_user': host['user'],
            'ansible_ssh_private_key_file': hosts_json['key'],
            'ansible_ssh_common_args': '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
            # The hosts share the root filesystem (and so this venv) with the controller.
            'ansible_python_interpreter': sys.executable}
    with open(path, 'w') as handle:
        json.dump({'hypervisors': {'hosts': hosts}}, handle)
    return path


def rollout_vars(args, names, batch, concurrency, report_dir):
    return dict(
        live_update_report_dir=report_dir,
        rolling_update_include=names,
        rolling_update_runtime_dir=args.runtime_dir,
        hypervisor_runtime_dir=args.runtime_dir,
        qemu_build_method='path',
        qemu_build_binary_path=NEWER,
        hypervisor_install_packages=False,
        # A venv that already has qemu.qmp and jmespath: this one (the role only checks it).
        hypervisor_venv=sys.prefix,
        # batch 0: the roles' defaults (growing batches, one VM at a time)
        **(dict(rolling_update_batch_size=batch, rolling_update_concurrency=concurrency) if batch else {}))


def read_report(report_dir):
    found = sorted(glob.glob(os.path.join(report_dir, 'rollout-*.json')))
    if not found:
        raise BenchError('the playbook wrote no report JSON in %s' % report_dir)
    with open(found[-1]) as handle:
        return json.load(handle)


# --- VMs ---

class Fleet:
    """The benchmark's VMs on the hosts of one inventory (localhost or the test hosts)."""

    def __init__(self, args, ansible, inventory, hosts, names):
        self.args = args
        self.ansible = ansible
        self.inventory = inventory
        self.hosts = hosts
        self.names = names

    def _run(self, state, names, label, check=True, info_first=False):
        return self.ansible.playbook(label, 'vms.yml', self.inventory, dict(
            fb_hosts=self.hosts, fb_names=names, fb_state=state, fb_binary=self.args.old_qemu, fb_target=NEWER,
            fb_runtime_dir=self.args.runtime_dir, fb_info_first=info_first), check=check)

    def _slices(self):
        jobs = max(1, min(self.args.start_jobs, len(self.names)))
        return [self.names[i::jobs] for i in range(jobs)]

    def _parallel(self, state, label, check):
        """--start-jobs ansible runs at once (localhost); on test hosts one run (one fork per host)."""
        if self.hosts != 'localhost':
            return [self._run(state, self.names, label, check)]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=len(self._slices())) as pool:
            return list(pool.map(lambda s: self._run(state, s, label, check), self._slices()))

    def start(self):
        start = time.monotonic()
        self._parallel('running', 'start', True)
        return time.monotonic() - start

    def check_and_stop(self):
        """(how the VMs ran before the stop: {host: [(name, status, outdated)]}, seconds)."""
        start = time.monotonic()
        info = self._run('stopped', [], 'info', check=False, info_first=True)
        runs = self._parallel('stopped', 'stop', False)
        failed = [r for r in runs if r['rc'] != 0]
        if failed:
            log('stopping VMs failed (%s); the cleanup removes what is left' % failed[0]['log'])
        seen = dict((i['host'], i['vms']) for i in (info['records'] or {}).get('infos', []))
        if not seen:
            log('vm_info before the stop gave nothing (%s)' % info['log'])
        return seen, time.monotonic() - start


def runtime_leftovers(runtime_dir, names, memory_dir):
    """End the QEMUs of the benchmark's VMs and remove their files (this PID namespace only)."""
    ended, removed = benchlib.remove_leftovers(runtime_dir, [memory_file_for(memory_dir, n) for n in names])
    if os.path.isdir(runtime_dir):
        shutil.rmtree(runtime_dir)
    return ended, removed


# --- analysis ---

def step_total(updates, name):
    """Seconds of step ``name`` of the live_update ``timings``, summed over ``updates``."""
    return sum((u['timings'] or {}).get(name, 0.0) for u in updates)


def steps_sum(updates):
    return dict((name, round(step_total(updates, name), 3)) for name in STEPS)


def breakdown(records, wall):
    """Where the time of one rollout went, from the callback's task records (seconds).

    Tasks are told apart by where they come from, not by their names: the role, the action, check
    mode and the task file. The update tasks are rolling_update's live_update tasks outside check mode
    (its preflight is the one in check mode); the other tasks of a batch are those in the same task
    file as an update task, and the include_tasks that names that file."""
    tasks = records['tasks'] if records else []
    updates = [u for u in (records['updates'] if records else []) if not u['check_mode']]
    pre_updates = [u for u in (records['updates'] if records else []) if u['check_mode']]

    def role(t):
        return (t['role'] or '').split('.')[-1]

    def action(t):
        return (t['action'] or '').split('.')[-1]

    def rollout_update(t, check_mode):
        return role(t) == ROLLOUT_ROLE and action(t) == 'live_update' and t['check_mode'] == check_mode

    def total(pred):
        return sum(t['duration'] for t in tasks if pred(t))

    startup = (records['started'] - records['launched'] + tasks[0]['start']) if tasks else 0.0
    update_tasks = [t for t in tasks if rollout_update(t, False)]
    batch_files = set(os.path.basename(t['path'].rsplit(':', 1)[0]) for t in update_tasks)

    def batch_other(t):
        in_batch_file = os.path.basename((t['path'] or '').rsplit(':', 1)[0]) in batch_files
        includes_it = os.path.basename(t['includes'] or '') in batch_files
        return role(t) == ROLLOUT_ROLE and not rollout_update(t, False) and (in_batch_file or includes_it)

    rolling = total(lambda t: role(t) == ROLLOUT_ROLE)
    parts = dict(
        startup=startup,  # ansible-playbook start (python, inventory, playbook parsing) until its first play
        setup_roles=total(lambda t: role(t) in ('hypervisor', 'qemu_build')),
        discovery_vm_info=total(lambda t: role(t) == ROLLOUT_ROLE and action(t) == 'vm_info'),
        preflight_task=total(lambda t: rollout_update(t, True)),
        update_tasks=sum(t['duration'] for t in update_tasks),
        batch_other_tasks=total(batch_other),
        report_play=total(lambda t: not t['role'] and action(t) != 'play'),
        play_headers=total(lambda t: action(t) == 'play'),
    )
    parts['rolling_other'] = rolling - parts['discovery_vm_info'] - parts['preflight_task'] - \
        parts['update_tasks'] - parts['batch_other_tasks']
    accounted = sum(parts.values())
    parts['unaccounted'] = wall - accounted  # first play header, ansible-playbook exit
    out = dict((k, round(v, 2)) for k, v in parts.items())
    out.update(
        wall=round(wall, 2),
        n_tasks=len([t for t in tasks if t['action'] != 'play']),
        update_tasks_n=len(update_tasks),
        engine_sum=round(step_total(updates, 'engine'), 2),
        # locate + recover + preflight + engine of every VM: the module's own work in the update tasks
        module_steps_sum=round(sum(step_total(updates, s) for s in ('locate', 'recover', 'preflight', 'engine')), 2),
        preflight_steps_sum=round(sum(step_total(pre_updates, s) for s in ('locate', 'recover', 'preflight')), 2),
        steps_sum=steps_sum(updates),
    )
    return out


def summarize_run(kind, n, batch, concurrency, run, report, hosts=1):
    """One rollout: the guest pauses from the report JSON (or, when the playbook wrote none, from the
    live_update results the callback recorded), the failures, and where the time went."""
    updates = [u for u in ((run['records'] or {}).get('updates') or []) if not u['check_mode']]
    failures = [(u['host'], u['vm'], u['msg']) for u in updates if u['failed']]
    if report is not None:
        rows = report['results']
        updated = [r for r in rows if r['result'] == 'updated']
        pauses = [float(r['guest_pause_ms']) for r in updated if r['guest_pause_ms'] not in (None, '', 'None')]
        not_updated = [(r['host'], r['vm'], r['result'], r['msg']) for r in rows if r['result'] != 'updated']
    else:
        updated = [u for u in updates if u['changed'] and not u['failed']]
        pauses = [u['guest_pause_ms'] for u in updated]
        not_updated = [(f[0], f[1], 'failed', f[2]) for f in failures]
    bd = breakdown(run['records'], run['wall'])
    return dict(kind=kind, hosts=hosts, n=n, batch=batch, concurrency=concurrency, wall=round(run['wall'], 2),
                rc=run['rc'], report=report is not None, updated=len(updated), not_updated=not_updated,
                failures=failures, pause=pause_stats(pauses), breakdown=bd, loadavg=loadavg())


# --- the two parts ---

def single_host(args, ansible, workdir, results):
    inventory = write_local_inventory(workdir)
    os.makedirs(args.runtime_dir, exist_ok=True)
    all_names = vm_names(max(args.sizes))
    try:
        if args.baseline_runs > 0:
            baseline(args, ansible, workdir, inventory, results)
            runtime_leftovers(args.runtime_dir, all_names, args.memory_dir)
        for n in args.sizes:
            names = vm_names(n)
            fleet = Fleet(args, ansible, inventory, 'localhost', names)
            for batch, concurrency in args.configs:
                for rep in range(args.repeat):
                    label = 'n%d-%s-r%d' % (n, config_name(batch, concurrency), rep)
                    log('%s: starting %d VMs on %s' % (label, n, qemu_banner(args.old_qemu)))
                    start_s = fleet.start()
                    log('%s: %d VMs up in %.1f s; load %s; running the rollout playbook' % (
                        label, n, start_s, loadavg()))
                    report_dir = os.path.join(workdir, 'reports-' + label)
                    run = ansible.playbook('rollout-' + label, PLAYBOOK, inventory,
                                           rollout_vars(args, names, batch, concurrency, report_dir), check=False)
                    report = None
                    try:
                        report = read_report(report_dir)
                    except BenchError as exc:
                        log(str(exc))
                    entry = summarize_run('playbook', n, batch, concurrency, run, report)
                    entry['start_s'] = round(start_s, 1)
                    after, stop_s = fleet.check_and_stop()
                    entry['after'] = summarize_after(after, names)
                    entry['stop_s'] = round(stop_s, 1)
                    results.append(entry)
                    print_entry(entry)
                    if run['rc'] != 0:
                        log('the rollout failed (exit %d), log %s:\n%s' % (run['rc'], run['log'], run['output'][-3000:]))
                    runtime_leftovers(args.runtime_dir, all_names, args.memory_dir)
            if args.direct:
                for concurrency in sorted(set(c for dummy, c in args.configs)):
                    label = 'n%d-direct-c%d' % (n, concurrency)
                    log('%s: starting %d VMs' % (label, n))
                    fleet.start()
                    run = ansible.playbook('direct-' + label, 'direct.yml', inventory, dict(
                        fb_hosts='localhost', fb_names=names, fb_vms=[{'name': x} for x in names], fb_target=NEWER,
                        fb_runtime_dir=args.runtime_dir, fb_concurrency=concurrency), check=False)
                    updates = list((run['records'] or {}).get('updates', []))
                    task = [t for t in (run['records'] or {}).get('tasks', []) if t['action']
                            and t['action'].endswith('live_update')]
                    entry = dict(kind='direct', hosts=1, n=n, batch=n, concurrency=concurrency, wall=round(run['wall'], 2),
                                 rc=run['rc'], updated=sum(1 for u in updates if u['changed'] and not u['failed']),
                                 task_s=round(sum(t['duration'] for t in task), 2),
                                 pause=pause_stats([u['guest_pause_ms'] for u in updates]),
                                 steps_sum=steps_sum(updates),
                                 loadavg=loadavg())
                    after, dummy = fleet.check_and_stop()
                    entry['after'] = summarize_after(after, names)
                    results.append(entry)
                    print_entry(entry)
                    runtime_leftovers(args.runtime_dir, all_names, args.memory_dir)
    finally:
        killed, removed = runtime_leftovers(args.runtime_dir, all_names, args.memory_dir)
        if killed or removed:
            log('cleanup: killed %d QEMU(s), removed %d memory file(s)' % (len(killed), removed))


def baseline(args, ansible, workdir, inventory, results):
    names = vm_names(1)
    fleet = Fleet(args, ansible, inventory, 'localhost', names)
    log('baseline: one VM, %d live updates' % args.baseline_runs)
    fleet.start()
    run = ansible.playbook('baseline', 'baseline.yml', inventory, dict(
        fb_hosts='localhost', fb_names=names, fb_target=NEWER, fb_runtime_dir=args.runtime_dir,
        fb_runs=args.baseline_runs), check=False)
    updates = [u for u in (run['records'] or {}).get('updates', []) if u['changed'] and not u['failed']]
    entry = dict(kind='single VM', hosts=1, n=1, batch=1, concurrency=1, runs=args.baseline_runs,
                 wall=round(run['wall'], 2), rc=run['rc'], updated=len(updates),
                 pause=pause_stats([u['guest_pause_ms'] for u in updates]),
                 first_pause_ms=updates[0]['guest_pause_ms'] if updates else None,
                 engine=pause_stats([u['timings'].get('engine') for u in updates]),
                 steps_sum=steps_sum(updates),
                 loadavg=loadavg())
    fleet.check_and_stop()
    results.append(entry)
    print_entry(entry)


def summarize_after(after, names):
    """How many of the VMs ran on the target (not outdated, running) when the rollout was over."""
    out = {}
    for host, vms in after.items():
        mine = [v for v in vms if v['name'] in names]
        out[host] = dict(found=len(mine), running=sum(1 for v in mine if v['status'] == 'running'),
                         on_target=sum(1 for v in mine if v['status'] == 'running' and not v['outdated']))
    return out


def testhosts(cmd, n=None, check=True):
    env = dict(os.environ, **HOSTS_ENV)
    argv = ['bash', TESTHOSTS, cmd] + ([str(n)] if n is not None else [])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)
    if check and proc.returncode != 0:
        raise BenchError('%s failed (exit %d):\n%s%s' % (' '.join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc


def multi_host(args, ansible, workdir, results):
    names = vm_names(args.vms_per_host)
    try:
        log('creating %d test hosts with %s (%s)' % (args.hosts, TESTHOSTS, HOSTS_ENV))
        start = time.monotonic()
        proc = testhosts('create', args.hosts)
        hosts_json = json.loads(proc.stdout)
        create_s = time.monotonic() - start
        down = [h['name'] for h in hosts_json['hosts'] if not h['up']]
        if down:
            raise BenchError('test hosts not up: %s' % down)
        log('%d hosts up in %.1f s' % (args.hosts, create_s))
        inventory = write_hosts_inventory(workdir, hosts_json)
        fleet = Fleet(args, ansible, inventory, 'hypervisors', names)
        for batch, concurrency in args.host_configs:
            for pipelining in args.pipelining:
                suffix = '-pipelining' if pipelining else ''
                label = 'hosts%dx%d-%s%s' % (args.hosts, args.vms_per_host, config_name(batch, concurrency), suffix)
                log('%s: starting %d VMs on each of %d hosts' % (label, args.vms_per_host, args.hosts))
                start_s = fleet.start()
                log('%s: VMs up in %.1f s; load %s; running the rollout playbook' % (label, start_s, loadavg()))
                report_dir = os.path.join(workdir, 'reports-' + label)
                extra = rollout_vars(args, names, batch, concurrency, report_dir)
                if batch:  # else the playbook's default serial (growing batches of hosts)
                    extra.update(live_update_serial=args.hosts)
                run = ansible.playbook('rollout-' + label, PLAYBOOK, inventory, extra, check=False, extra_env=dict(
                    ANSIBLE_FORKS=str(max(5, args.hosts)), ANSIBLE_PIPELINING='True' if pipelining else 'False'))
                report = None
                try:
                    report = read_report(report_dir)
                except BenchError as exc:
                    log(str(exc))
                entry = summarize_run('hosts', args.hosts * args.vms_per_host, batch, concurrency, run, report,
                                      hosts=args.hosts)
                entry['pipelining'] = pipelining
                entry['start_s'] = round(start_s, 1)
                after, stop_s = fleet.check_and_stop()
                entry['after'] = summarize_after(after, names)
                results.append(entry)
                print_entry(entry)
                if run['rc'] != 0:
                    log('the rollout failed (exit %d), log %s:\n%s' % (run['rc'], run['log'], run['output'][-3000:]))
    finally:
        proc = testhosts('destroy', check=False)
        if proc.returncode != 0:
            log('testhosts.sh destroy failed (exit %d): %s' % (proc.returncode, proc.stderr.strip()[-2000:]))
        else:
            log('test hosts destroyed')


# --- output ---

def fmt_pause(p):
    if not p:
        return '-'
    return '%.1f / %.1f / %.1f' % (p['median'], p['p95'], p['max'])


def print_entry(e):
    bd = e.get('breakdown') or {}
    if e['kind'] == 'single VM':
        print('single VM  %d updates  pause median/p95/max %s ms (first, from the older build: %s ms)  '
              'engine median %.3f s  rc %d' % (e['updated'], fmt_pause(e['pause']), e['first_pause_ms'],
                                               (e['engine'] or {}).get('median', 0), e['rc']), flush=True)
        return
    if e['kind'] == 'direct':
        print('direct   N=%-4d conc=%d  wall %6.1f s  task %6.1f s  engine sum %6.1f s  updated %d  '
              'pause median/p95/max %s ms  after %s' % (e['n'], e['concurrency'], e['wall'], e['task_s'],
                                                        e['steps_sum']['engine'], e['updated'],
                                                        fmt_pause(e['pause']), e['after']), flush=True)
        return
    print('%-8s hosts=%d N=%-4d %-7s%s  wall %6.1f s  updated %d/%d  pause median/p95/max %s ms  '
          'engine sum %.1f s  update tasks %.1f s (%d)  discovery %.1f s  preflight %.1f s  setup %.1f s  '
          'batch other %.1f s  role other %.1f s  report %.1f s  startup %.1f s  rc %d  after %s' % (
              e['kind'], e['hosts'], e['n'], config_name(e['batch'], e['concurrency']),
              ' pipelining' if e.get('pipelining') else '', e['wall'], e['updated'], e['n'], fmt_pause(e['pause']), bd.get('engine_sum', 0),
              bd.get('update_tasks', 0), bd.get('update_tasks_n', 0), bd.get('discovery_vm_info', 0),
              bd.get('preflight_task', 0), bd.get('setup_roles', 0), bd.get('batch_other_tasks', 0),
              bd.get('rolling_other', 0), bd.get('report_play', 0), bd.get('startup', 0), e['rc'], e.get('after')), flush=True)
    if e.get('not_updated'):
        print('   not updated: %s' % e['not_updated'][:5], flush=True)
    if e.get('failures'):
        print('   failed live updates: %s' % e['failures'][:5], flush=True)
    if not e.get('report', True):
        print('   the playbook wrote no report (figures from the live_update results)', flush=True)


def print_summary(results, meta):
    print('\n== Fleet rollout (%s; load before %s) ==' % (meta['time'], meta['loadavg_before']))
    print('| kind | hosts x VMs | batch x conc. | wall s | updated | failed | pause median ms | pause max ms '
          '| engine sum s | update tasks s | load 1m after |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for e in results:
        bd = e.get('breakdown') or {}
        engine = bd.get('engine_sum', (e.get('steps_sum') or {}).get('engine', 0))
        tasks = bd.get('update_tasks', e.get('task_s', 0))
        p = e.get('pause') or {}
        print('| %s%s | %d x %d | %s | %.1f | %d | %d%s | %s | %s | %.1f | %.1f | %.2f |' % (
            e['kind'], ' (pipelining)' if e.get('pipelining') else '', e['hosts'], e['n'] // e['hosts'],
            config_name(e['batch'], e['concurrency']), e['wall'], e['updated'], len(e.get('failures') or []),
            '' if e.get('report', True) else ' (no report)', '%.1f' % p['median'] if p else '-',
            '%.1f' % p['max'] if p else '-', engine, tasks, e['loadavg'][0]))
    one = [e for e in results if e['kind'] == 'playbook' and e['n'] >= TARGETS['one_host_n'] and e['rc'] == 0
           and e['updated'] == e['n'] and not e['batch']]
    if one:
        worst = max(one, key=lambda e: e['wall'])
        print('target %d VMs on one host <= %.0f s with the defaults: %s (slowest of %d runs %.1f s)' % (
            TARGETS['one_host_n'], TARGETS['one_host_s'], 'MET' if worst['wall'] <= TARGETS['one_host_s'] else 'NOT MET',
            len(one), worst['wall']))
    base = next((e for e in results if e['kind'] == 'single VM' and e['pause']), None)
    if base:
        for e in results:
            if e['kind'] in ('playbook', 'hosts', 'direct') and e.get('pause'):
                print('guest pause %s %d x %d %s: median %.1f ms (%.2fx the single VM\'s %.1f), '
                      'max %.1f ms (single VM p95 %.1f, max %.1f)' % (
                          e['kind'], e['hosts'], e['n'] // e['hosts'], config_name(e['batch'], e['concurrency']),
                          e['pause']['median'], e['pause']['median'] / base['pause']['median'],
                          base['pause']['median'], e['pause']['max'], base['pause']['p95'], base['pause']['max']))
    hosts = [e for e in results if e['kind'] == 'hosts' and e['rc'] == 0 and e['updated'] == e['n'] and not e['batch']]
    if hosts:
        worst = max(hosts, key=lambda e: e['wall'])
        print('target %d hosts x %d VMs <= %.0f s with the defaults: %s (slowest of %d runs %.1f s)' % (
            worst['hosts'], worst['n'] // worst['hosts'], TARGETS['hosts_s'],
            'MET' if worst['wall'] <= TARGETS['hosts_s'] else 'NOT MET', len(hosts), worst['wall']))


# --- main ---

def config_name(batch, concurrency):
    return '%dx%d' % (batch, concurrency) if batch else 'default'


def parse_configs(text):
    """BATCHxCONCURRENCY items, or 'default' (0, 0): the roles' and playbook's defaults."""
    out = []
    for item in text.split(','):
        if item.strip() == 'default':
            out.append((0, 0))
        elif item.strip():
            batch, concurrency = item.lower().split('x')
            out.append((int(batch), int(concurrency)))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    p.add_argument('--sizes', default='10,50,100', help='VM counts on one host; empty skips part 1')
    p.add_argument('--configs', default='default,25x1', help='BATCHxCONCURRENCY (or default) list for part 1')
    p.add_argument('--repeat', type=int, default=1, help='runs of each size and config')
    p.add_argument('--direct', action='store_true', help='also one live_update task with all N VMs, per concurrency')
    p.add_argument('--baseline-runs', type=int, default=10,
                   help='live updates of one VM alone, the single-VM reference (0 skips it)')
    p.add_argument('--hosts', type=int, default=5, help='test hosts of part 2 (0 skips it)')
    p.add_argument('--vms-per-host', type=int, default=10)
    p.add_argument('--host-configs', default='default', help='BATCHxCONCURRENCY (or default) list for part 2')
    p.add_argument('--pipelining', default='off', choices=['off', 'on', 'both'],
                   help='ansible SSH pipelining in part 2')
    p.add_argument('--runtime-dir', default='/run/liveupdate-qemu-fleetbench')
    p.add_argument('--memory-dir', default='/dev/shm')
    p.add_argument('--start-jobs', type=int, default=4, help='parallel ansible runs that start / stop VMs (one host)')
    p.add_argument('--old-qemu', default=os.environ.get('LIVEUPDATE_OLD_QEMU'))
    p.add_argument('--no-isolate', dest='isolate', action='store_false',
                   help='run part 1 in the machine PID namespace, where vm_info sees every QEMU')
    p.add_argument('--json', help='write the results here')
    p.add_argument('--keep-logs', help='keep the ansible logs, callback records and reports in this directory')
    p.add_argument('--part', choices=['all', 'single', 'hosts'], default='all', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(',') if x.strip()]
    args.configs = parse_configs(args.configs)
    args.host_configs = parse_configs(args.host_configs)
    args.pipelining = dict(off=[False], on=[True], both=[False, True])[args.pipelining]
    if not args.old_qemu or not os.access(args.old_qemu, os.X_OK):
        p.error('--old-qemu / $LIVEUPDATE_OLD_QEMU must be an executable QEMU (source .build/env.sh)')
    return args


def run_isolated_single(args, argv):
    """Part 1 in a PID namespace of its own: a child of this process, results through a JSON file.
    Returns (results, exit code, interrupted)."""
    out = tempfile.NamedTemporaryFile(prefix='fleetbench-', suffix='.json', delete=False)
    out.close()
    child_argv = list(argv)
    child_argv += ['--part', 'single', '--json', out.name, '--hosts', '0']
    env = dict(os.environ, **{ISOLATED_ENV: '1'})
    # --kill-child: should this process die, the namespace's init (REAPER) goes, and the kernel kills
    # every QEMU in it (their memory files are then removed by this process's cleanup).
    cmd = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child', sys.executable, REAPER,
           sys.executable, os.path.abspath(__file__)]
    interrupted = False
    try:
        proc = subprocess.Popen(cmd + child_argv, env=env)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            # Let the child clean up and write what it has (unshare does not pass SIGTERM on; the
            # reaper does).
            interrupted = True
            child = benchlib.child_of(proc.pid)
            if child:
                os.kill(child, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=120)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                rc = proc.wait()
        with open(out.name) as handle:
            data = handle.read()
        if not data:
            raise BenchError('part 1 (isolated) wrote no results (exit %d)' % rc)
        return json.loads(data)['results'], rc, interrupted
    finally:
        os.unlink(out.name)
        runtime_leftovers(args.runtime_dir, vm_names(max(args.sizes or [1])), args.memory_dir)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    benchlib.setup('fleet', (signal.SIGTERM, signal.SIGHUP))
    if os.geteuid() != 0:
        raise SystemExit('run as root (QEMU processes, /run, test hosts)')
    meta = dict(time=time.strftime('%Y-%m-%d %H:%M:%S'), loadavg_before=loadavg(), nproc=os.cpu_count(),
                old=qemu_banner(args.old_qemu), new=qemu_banner(NEWER), uptime=subprocess.run(
                    ['uptime'], capture_output=True, text=True, check=False).stdout.strip(), argv=argv)
    results = []
    rc = 0
    workdir = args.keep_logs or tempfile.mkdtemp(prefix='fleetbench-')
    os.makedirs(workdir, exist_ok=True)
    try:
        ansible = Ansible(benchlib.snapshot_collection(os.path.join(workdir, 'collections')), workdir)
        if args.part in ('all', 'single') and args.sizes:
            if args.isolate and not os.environ.get(ISOLATED_ENV) and args.part == 'all':
                part, child_rc, interrupted = run_isolated_single(args, argv)
                results += part
                rc = rc or child_rc
                if interrupted:
                    raise KeyboardInterrupt('part 1 interrupted')
            else:
                single_host(args, ansible, workdir, results)
        if args.part in ('all', 'hosts') and args.hosts > 0:
            multi_host(args, ansible, workdir, results)
    except KeyboardInterrupt:
        log('interrupted')
        rc = 130
    except Exception as exc:  # noqa: BLE001 -- report, clean up, exit 1
        log('FAILED: %s' % exc)
        traceback.print_exc()
        rc = 1
    finally:
        meta['loadavg_after'] = loadavg()
        if args.json:
            write_json(args.json, dict(meta=meta, results=results), indent=2)
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log('logs kept in %s' % workdir)
    if args.part == 'all':
        print_summary(results, meta)
        print('load average after: %s; %s' % (meta['loadavg_after'], meta['uptime']))
    return rc


if __name__ == '__main__':
    sys.exit(main())
