# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault matrix (issue 13): a real signal at every step boundary of a live update,
sent by the engine's own fault injection (LIVEUPDATE_QEMU_FAULTS=POINT:ACTION in the
module's environment, see plugins/module_utils/_faults.py), to the module, the source
or the destination.

Every case ends in the same property, or in a truthful loss:

- exactly one QEMU maps the VM's memory file, not frozen, running (paused only if it
  was paused before);
- the canonical names point at it: qmp.sock answers QMP with that pid as its peer,
  qemu.pid holds that pid;
- no PATH.lu-TOKEN temporary, no .migrate socket in the VM's runtime directory, no
  journal of an unfinished update left;
- the migration capabilities x-ignore-shared and events as the operator had them;
- for a booted guest: the heartbeat goes on, one boot id, memory checksum intact.

A case that must lose the guest (the process that ran it killed) fails saying so, no
process runs the guest afterwards (the source did not resume) and `vm state=stopped`
cleans everything up.

Cases take turns on one VM per kind (bare: no guest OS; booted: the test guest), each
starting where the previous one left the VM: that is the property again. A case that
loses the guest starts the next VM (a new name) in its own play. Each case is one
playbook; what the test must see between two of its tasks is recorded by a snapshot
task (harness.snapshot_task), and frozen processes are thawed by a task too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from harness import guest_log, process_state, qemu_pids_under, snapshot_task, snapshot_thaw_task, thaw, vm_snapshot

from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession

INSTALLED = '/usr/bin/qemu-system-x86_64'
FAULTS_ENV = 'LIVEUPDATE_QEMU_FAULTS'
POINTS = ('spawned', 'migrating', 'migrated', 'committed', 'switched', 'source-stopped', 'finished')
# Short, so that a frozen process costs seconds; long enough for a loaded 2-core host.
FAST = dict(timeout=2, migration_timeout=2, shutdown_timeout=1)
OPERATOR_CAPS = {'x-ignore-shared': False, 'events': False}

# What the engine must do when ACTION hits at POINT:
# - rolled-back: fails with rolled_back: true; the source runs on, untouched;
# - settled: the module died; vm_info still works; a second live_update settles the VM;
# - held: fails past the switch; the destination holds the guest and the names; after SIGCONT a
#   second live_update completes the update;
# - completed: the update succeeds anyway;
# - retried: fails before the switch with the source frozen; after SIGCONT a second live_update
#   settles the VM (the guest never left the source);
# - lost: the process that ran the guest was killed: a truthful failure, nothing runs the guest,
#   vm state=stopped cleans up;
# - saved: the source died after the migration: the destination that holds the whole guest is
#   kept, and a second live_update resumes the guest there.
ROLLED_BACK, SETTLED, HELD, COMPLETED, RETRIED, LOST, SAVED = (
    'rolled-back', 'settled', 'held', 'completed', 'retried', 'lost', 'saved')

EXPECTED = {
    'kill-module': dict((point, SETTLED) for point in POINTS),
    # Before the commit the destination never ran the guest: it can always be dropped.
    'kill-dest': {'spawned': ROLLED_BACK, 'migrating': ROLLED_BACK, 'migrated': ROLLED_BACK,
                  'committed': LOST, 'switched': LOST, 'source-stopped': LOST, 'finished': LOST},
    'stop-dest': {'spawned': ROLLED_BACK, 'migrating': ROLLED_BACK, 'migrated': ROLLED_BACK,
                  'committed': HELD, 'switched': HELD, 'source-stopped': HELD, 'finished': HELD},
    # The source is the VM until the switch: killing it then loses the guest whatever the
    # engine does. From `switched` on it is being ended anyway; at `finished` it is gone (no
    # case). stop-source at `migrating` is the migration_timeout case.
    'kill-source': {'spawned': LOST, 'migrating': LOST, 'migrated': SAVED,
                    'committed': HELD, 'switched': COMPLETED, 'source-stopped': COMPLETED},
    'stop-source': {'spawned': RETRIED, 'migrating': RETRIED, 'migrated': RETRIED,
                    'committed': HELD, 'switched': COMPLETED, 'source-stopped': COMPLETED},
}
BARE_CASES = [(point, action) for action in EXPECTED for point in POINTS if point in EXPECTED[action]]
# Where guest continuity matters most: the interrupted update completed by the next one,
# before and after the source is gone; the destination frozen at the point of no return;
# a rollback.
BOOTED_CASES = [('committed', 'kill-module'), ('source-stopped', 'kill-module'), ('committed', 'stop-dest'),
                ('migrating', 'kill-dest')]


# --- the VM the cases take turns on ---

class Subject:
    """One VM that cases of a kind run against, one after the other. Its name has a
    generation number: a case that loses the guest starts the next generation. Names
    start with 'fm-PID-', not 'lut-': another test session's teardown removes every
    /dev/shm/liveupdate-qemu-lut-* memory file, also those of VMs that still run, and VM
    names must be unique on the host."""

    def __init__(self, ansible, spec, base, binary, booted):
        self.ansible = ansible
        self.spec = spec
        self.base = base
        self.binary = binary
        self.booted = booted
        self.generation = 0
        self.vm = None
        self.log = None

    @property
    def name(self):
        return '%s-%d' % (self.base, self.generation)

    @property
    def memory_file(self):
        return self.vm['memory_file']

    @property
    def vm_dir(self):
        return self.vm['runtime_dir']

    def start_task(self):
        """The task that starts the VM of the next generation (on the old build)."""
        return {'liveupdate.qemu.vm': self.spec('%s-%d' % (self.base, self.generation + 1), binary=self.binary)}

    def started(self, result):
        assert result.get('changed') and not result.get('failed'), result
        self.generation += 1
        self.vm = result['vm']
        if self.booted:
            self.log = guest_log(self.vm['serial_log'])
            self.log.wait(lambda s: s.mem_ok >= 1, timeout=180)

    def start(self):
        self.started(self.ansible.play([self.start_task()]).results[0])

    def update(self, fault=None, **extra):
        """A live_update task of this VM to the installed QEMU, with ``fault`` injected (force:
        from the second case on the VM already runs the installed QEMU)."""
        args = dict(FAST, name=self.name, target_binary=INSTALLED, force=True)
        args.update(extra)
        task = {'liveupdate.qemu.live_update': args}
        if fault:
            task['environment'] = {FAULTS_ENV: fault}
        return task

    def stop_task(self):
        return {'liveupdate.qemu.vm': dict(name=self.name, state='stopped')}

    def snapshot_task(self, thaw_after=False):
        """A task that records the VM's snapshot (harness.vm_snapshot), then with ``thaw_after``
        sends SIGCONT to its frozen QEMUs."""
        if thaw_after:
            return snapshot_thaw_task(self.memory_file, self.vm_dir)
        return snapshot_task(self.memory_file, self.vm_dir)

    def now(self):
        return vm_snapshot(self.memory_file, self.vm_dir)

    def play(self, tasks):
        """Run ``tasks`` in one playbook; the results, a snapshot task's as its snapshot."""
        results = self.ansible.play(tasks).results
        return [json.loads(r['stdout']) if t.get('name') == 'snapshot' and 'stdout' in r else r
                for t, r in zip(tasks, results)]

    def discard(self, vm=None):
        """Remove the VM ``vm`` (default: the current one) whatever state a case left it in,
        with its memory file and runtime directory: QEMUs thawed (a frozen QEMU does not
        even die of SIGTERM), vm state=stopped, then SIGKILL for what is left."""
        vm = vm or self.vm
        if vm is None:
            return
        thaw(vm['memory_file'])
        if os.path.isdir(vm['runtime_dir']):
            self.ansible.module('vm', dict(name=vm['name'], state='stopped', shutdown_timeout=2))
        for pid in qemu_pids_under(vm['memory_file']):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while process_state(pid) not in (None, 'Z') and time.monotonic() < deadline:
                time.sleep(0.05)
        if os.path.exists(vm['memory_file']):
            os.unlink(vm['memory_file'])
        shutil.rmtree(vm['runtime_dir'], ignore_errors=True)

    def ready(self):
        """The snapshot of the VM before a case (every case starts from the operator's
        default capabilities). A VM that an earlier case left unsettled (an engine bug) is
        replaced, so that one bug fails one case, not every later one."""
        snap = self.now()
        if problems(snap):
            time.sleep(1)  # (a QMP answer late on a loaded host is not worth a new VM)
            snap = self.now()
        if problems(snap):
            self.discard()
            self.vm = None
            self.start()
            snap = self.now()
            assert not problems(snap), snap
        return snap


def _subject(ansible, spec, base, binary, booted):
    subject = Subject(ansible, spec, base, binary, booted)
    subject.start()
    yield subject
    subject.discard()


@pytest.fixture(scope='module')
def bare(ansible, bare_spec, old_qemu):
    yield from _subject(ansible, bare_spec, 'fm-%d-bare' % os.getpid(), old_qemu, booted=False)


@pytest.fixture(scope='module')
def booted(ansible, guest_spec, old_qemu):
    yield from _subject(ansible, guest_spec, 'fm-%d-guest' % os.getpid(), old_qemu, booted=True)


# --- the property ---

def problems(snap, status='running', caps=None):
    """What keeps ``snap`` (harness.vm_snapshot) from the property; [] when it holds.
    ``caps``: the operator's migration capabilities (default OPERATOR_CAPS)."""
    caps = OPERATOR_CAPS if caps is None else caps
    found = []
    procs = snap['procs']
    if len(procs) != 1:
        return ['%d QEMU processes map the memory file: %s' % (len(procs), procs)]
    pid = procs[0]['pid']
    if procs[0]['state'] in ('T', 'Z', None):
        found.append('QEMU pid %d is in state %s' % (pid, procs[0]['state']))
    if snap['pidfile'] != pid:
        found.append('qemu.pid holds %s, not %d' % (snap['pidfile'], pid))
    qmp = snap['qmp'] or {}
    if qmp.get('peer') != pid or 'status' not in qmp:
        found.append('qmp.sock does not answer as pid %d: %s' % (pid, qmp))
    else:
        if qmp['status'] != status:
            found.append('pid %d is %s, not %s' % (pid, qmp['status'], status))
        have = dict((name, qmp['capabilities'].get(name)) for name in caps)
        if have != caps:
            found.append('migration capabilities %s, the operator had %s' % (have, caps))
    temporaries = [f for f in snap['files'] or [] if '.lu-' in f or f.endswith('.migrate')]
    if temporaries:
        found.append('temporaries left in the runtime directory: %s' % temporaries)
    if snap['journal']:
        found.append('the journal of an unfinished update is left')
    return found


def assert_settled(snap, status='running', caps=None):
    """The property holds in ``snap``; returns the pid of the one QEMU of the VM."""
    found = problems(snap, status, caps)
    assert not found, (found, snap)
    return snap['procs'][0]['pid']


def assert_guest_goes_on(subject, before):
    """The booted guest kept its boot and memory and its heartbeat goes on without a gap."""
    after = subject.log.wait(lambda s: s.last_counter >= before.last_counter + 10 and s.mem_ok > before.mem_ok,
                             timeout=60)
    assert after.boot_ids == before.boot_ids and len(after.boot_ids) == 1, after.boot_ids
    assert after.hb_gaps == [] and after.mem_bad == 0 and not after.mem_md5_changed, after.as_dict()


class Findings:
    """Every expectation of a case that failed, reported together with the evidence (a
    case's first broken promise should not hide the others)."""

    def __init__(self):
        self.missed = []

    def expect(self, ok, what):
        if not ok:
            self.missed.append(what)
        return ok

    def check(self, **evidence):
        assert not self.missed, dict(missed=self.missed, **dict((k, brief(v)) for k, v in evidence.items()))


KEYS = ('failed', 'changed', 'msg', 'rc', 'step', 'rolled_back', 'dest_pid', 'recovered', 'resumed',
        'capabilities_restored', 'stop_method')


def brief(result):
    """The parts of a module result (or a list of vm_info entries) that tell a case apart."""
    if isinstance(result, list):
        return [dict(pid=vm['pid'], status=vm['status'], qmp_error=vm['qmp_error']) for vm in result]
    if 'procs' in result:  # a snapshot
        return result
    out = dict((k, result[k]) for k in KEYS if k in result)
    for key in ('old', 'new'):
        if isinstance(result.get(key), dict):
            out[key] = result[key].get('pid')
    return out


def temporaries_in(snap):
    return [f for f in snap['files'] or [] if '.lu-' in f or f.endswith('.migrate')]


# --- one case ---

def run_case(subject, point, action, caps=None, before_tasks=()):
    """Inject ACTION at POINT into an update of ``subject`` (after ``before_tasks``, in the
    same play), check the outcome EXPECTED names, then the property with the operator's
    capabilities ``caps``."""
    outcome = EXPECTED[action][point]
    source = subject.ready()['procs'][0]['pid']
    guest_before = subject.log.summary() if subject.booted else None
    check = CHECKS[outcome]
    tasks = list(before_tasks) + [subject.update('%s:%s' % (point, action))] + check.tasks(subject)
    results = subject.play(tasks)[len(before_tasks):]
    try:
        check(subject, point, action, source, results, caps)
    except AssertionError:
        # The guest's side is evidence too, when the VM was settled.
        if subject.booted and outcome != LOST and not problems(subject.now()):
            assert_guest_goes_on(subject, guest_before)
        raise
    finally:
        thaw(subject.memory_file)  # nothing stays frozen after a failed assertion
    if subject.booted and outcome != LOST:
        assert_guest_goes_on(subject, guest_before)


class Check:
    """What one outcome adds to the play after the faulted update, and how it is checked."""

    def tasks(self, subject):
        return []

    def __call__(self, subject, point, action, source, results, caps):
        raise NotImplementedError


class RolledBack(Check):

    def __call__(self, subject, point, action, source, results, caps):
        failed = results[0]
        assert failed.get('failed') and failed.get('rolled_back') is True, brief(failed)
        assert failed['step'] in ('spawn', 'migrate', 'switch') and 'lost' not in failed['msg'], brief(failed)
        assert assert_settled(subject.now(), caps=caps) == source, 'the source is no longer the VM'


class Settled(Check):
    """kill-module: the module run dies; vm_info still reports; a second update settles it."""

    def tasks(self, subject):
        return [subject.snapshot_task(), {'liveupdate.qemu.vm_info': {'query': "[?name=='%s']" % subject.name}},
                subject.update()]

    def __call__(self, subject, point, action, source, results, caps):
        killed, left, info, rerun = results
        assert killed.get('failed') and killed.get('rc') in (137, -9), brief(killed)
        assert not rerun.get('failed') and rerun['changed'] is True, brief(rerun)
        after = subject.now()
        survivor = assert_settled(after, caps=caps)
        found = Findings()
        found.expect(rerun['new']['pid'] == survivor, 'the rerun reports new pid %s' % rerun['new']['pid'])
        others = [p['pid'] for p in left['procs'] if p['pid'] != source]
        if point in ('switched', 'source-stopped'):
            # The destination already ran the guest: it keeps it.
            found.expect('completed an interrupted live update' in rerun['msg'] and others == [survivor],
                         'the destination that ran the guest did not keep it')
        else:
            # It never ran (or the update had finished): the guest went on from the source.
            found.expect(survivor not in [source] + others, 'the rerun made no new update')
        # vm_info after the kill: no crash, every process of the VM listed, none given
        # another process's run state.
        if found.expect(not info.get('failed'), 'vm_info failed'):
            listed = dict((vm['pid'], vm) for vm in info['vms'])
            found.expect(sorted(listed) == sorted(p['pid'] for p in left['procs']),
                         'vm_info lists pids %s' % sorted(listed))
            truth = dict((r['pid'], r['status']) for r in rerun.get('recovered', []))
            if left['qmp'] and 'status' in left['qmp']:
                truth[left['qmp']['peer']] = left['qmp']['status']
            reported = dict((pid, vm['status']) for pid, vm in listed.items() if vm['status'] is not None)
            found.expect(all(truth.get(pid, status) == status for pid, status in reported.items()),
                         'vm_info reports run states %s, the processes are %s' % (reported, truth))
        found.check(killed=killed, left=left, vm_info=info.get('vms') or info, rerun=rerun, after=after)


class Held(Check):
    """Past the switch the destination holds the guest but did not (or could not) confirm:
    it has the names; after SIGCONT the next update completes the update."""

    def tasks(self, subject):
        return [subject.snapshot_task(thaw_after=True), subject.update()]

    def __call__(self, subject, point, action, source, results, caps):
        failed, held, rerun = results
        assert failed.get('failed'), brief(failed)
        found = Findings()
        dest = failed.get('dest_pid') or failed.get('new', {}).get('pid')
        found.expect(failed.get('rolled_back') is False and failed.get('changed') is True,
                     'rolled_back must be false and changed true')
        found.expect(dest and 'pid %d' % dest in failed['msg'] and 'lost' not in failed['msg'],
                     'the message must name the process that holds the guest (and not call it lost)')
        found.expect([p['pid'] for p in held['procs']] == [dest], 'the source must be gone, the destination alive')
        found.expect(held['pidfile'] == dest and (held['qmp'] or {}).get('peer') == dest,
                     'the names must point at the destination')
        found.expect(not temporaries_in(held), 'temporaries left')
        if found.expect(not rerun.get('failed') and rerun.get('changed') is True, 'the rerun must settle the VM'):
            after = subject.now()
            survivor = assert_settled(after, caps=caps)
            found.expect(rerun['new']['pid'] == survivor, 'the rerun reports new pid %s' % rerun['new']['pid'])
            if point != 'finished':  # (there the update had finished: the rerun is a normal update)
                found.expect(survivor == dest and 'completed an interrupted live update' in rerun['msg'],
                             'the rerun must complete the interrupted update on the destination')
            # (stop-dest at `committed`: the failed run's `cont` waits in the frozen destination's
            # socket and may run when it is thawed, before the rerun looks, so the rerun may or may
            # not be the one that resumes it; assert_settled checks that the guest runs.)
        found.check(failed=failed, held=held, rerun=rerun)


class Completed(Check):

    def __call__(self, subject, point, action, source, results, caps):
        done = results[0]
        assert not done.get('failed') and done['changed'] is True, brief(done)
        survivor = assert_settled(subject.now(), caps=caps)
        assert done['new']['pid'] == survivor != source, brief(done)


class Retried(Check):
    """The source froze before the switch: the update cannot roll back over its QMP. After
    SIGCONT the guest is still the source's (the destination never ran it), and the next
    update settles and updates it."""

    def tasks(self, subject):
        return [subject.snapshot_task(thaw_after=True), subject.update()]

    def __call__(self, subject, point, action, source, results, caps):
        failed, frozen, rerun = results
        assert failed.get('failed'), brief(failed)
        found = Findings()
        found.expect(failed['step'] in ('migrate', 'switch') and 'lost' not in failed['msg'], 'a failure before the switch')
        found.expect(failed.get('rolled_back') is True or 'ROLLBACK INCOMPLETE' in failed['msg'],
                     'rolled_back false must say the rollback is incomplete')
        found.expect(frozen['procs'] == [dict(pid=source, state='T')] and frozen['pidfile'] == source,
                     'the destination must be dropped, the frozen source keep the names')
        found.expect(not temporaries_in(frozen), 'temporaries left')
        if found.expect(not rerun.get('failed') and rerun.get('changed') is True, 'the rerun must settle the VM'):
            survivor = assert_settled(subject.now(), caps=caps)
            found.expect(rerun['new']['pid'] == survivor != source, 'the rerun must update the VM')
        found.check(failed=failed, frozen=frozen, rerun=rerun)


class Lost(Check):
    """The process that held the guest was killed: the failure says the guest is lost, no
    process runs it (the source did not resume), and vm state=stopped removes everything.
    The same play starts the VM of the next generation (another name) for the next case."""

    def tasks(self, subject):
        return [subject.snapshot_task(), subject.stop_task(), subject.start_task()]

    def __call__(self, subject, point, action, source, results, caps):
        failed, gone, stopped, restarted = results
        lost_vm = subject.vm
        clean = vm_snapshot(lost_vm['memory_file'], lost_vm['runtime_dir'])
        try:
            subject.started(restarted)
        finally:
            subject.discard(lost_vm)
        assert failed.get('failed'), brief(failed)
        found = Findings()
        msg = failed['msg']
        found.expect(failed.get('rolled_back') is False, 'rolled_back must be false')
        found.expect('lost' in msg and 'runs on the destination' not in msg and 'guest runs' not in msg,
                     'the message must say that the guest is lost')
        found.expect(gone['procs'] == [], 'no QEMU may map the memory of a lost guest')
        found.expect(not stopped.get('failed') and stopped.get('changed') is True, 'vm state=stopped must clean up')
        found.expect(clean['procs'] == [] and not clean['memory_file'] and clean['files'] is None,
                     'vm state=stopped left files')
        found.expect(not clean['journal'], 'vm state=stopped left the journal of the lost update: the next VM of '
                                           'that name inherits it')
        found.check(failed=failed, gone=gone, stopped=stopped, clean=clean)


class Saved(Check):
    """The source died after the migration, before the switch: the destination, which holds the
    whole guest and never ran it, is kept; the next update gives it the names and resumes it."""

    def tasks(self, subject):
        return [subject.snapshot_task(), subject.update()]

    def __call__(self, subject, point, action, source, results, caps):
        failed, kept, rerun = results
        assert failed.get('failed'), brief(failed)
        found = Findings()
        dest = failed.get('dest_pid')
        found.expect(failed.get('rolled_back') is False and dest and 'pid %d holds the whole guest' % dest
                     in failed['msg'] and 'lost' not in failed['msg'], 'the message must name the process kept')
        found.expect([p['pid'] for p in kept['procs']] == [dest], 'only the destination may map the memory')
        if found.expect(not rerun.get('failed') and rerun.get('changed') is True, 'the rerun must settle the VM'):
            survivor = assert_settled(subject.now(), caps=caps)
            found.expect(survivor == dest and rerun.get('resumed') is True
                         and 'completed an interrupted live update' in rerun['msg'],
                         'the rerun must resume the guest on the destination')
        found.check(failed=failed, kept=kept, rerun=rerun)


CHECKS = {ROLLED_BACK: RolledBack(), SETTLED: Settled(), HELD: Held(), COMPLETED: Completed(),
          RETRIED: Retried(), LOST: Lost(), SAVED: Saved()}


# --- the tests ---

@pytest.mark.parametrize('point,action', BARE_CASES, ids=['%s:%s' % c for c in BARE_CASES])
def test_fault(bare, point, action):
    run_case(bare, point, action)


@pytest.mark.parametrize('point,action', BOOTED_CASES, ids=['%s:%s' % c for c in BOOTED_CASES])
def test_fault_booted_guest(booted, point, action):
    """The same cases on a booted guest: it must not notice (heartbeat, boot id, memory)."""
    run_case(booted, point, action)


@pytest.mark.parametrize('point,action', [('switched', 'kill-module'), ('committed', 'stop-dest')],
                         ids=['switched:kill-module', 'committed:stop-dest'])
def test_operator_capabilities_survive(bare, point, action):
    """The operator had set events: true before the update: it survives the fault and the recovery."""
    caps = dict(OPERATOR_CAPS, events=True)
    bare.ready()  # (a case before may have replaced the VM)
    before = [{'liveupdate.qemu.migrate_capabilities': {'name': bare.name, 'capabilities': {'events': True}}}]
    try:
        run_case(bare, point, action, caps=caps, before_tasks=before)
    finally:
        # Back to the default for the next case (cleanup, not under test: straight over QMP).
        try:
            with QMPSession(os.path.join(bare.vm_dir, 'qmp.sock'), 5) as qmp:
                qmp.execute('migrate-set-capabilities', {'capabilities': [{'capability': 'events', 'state': False}]})
        except QMPError:
            pass
