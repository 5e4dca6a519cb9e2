# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 9: live updates across major versions, QEMU 7.2 (Debian 12's, installed) <-> QEMU
10.0 (staged side by side: LIVEUPDATE_NEW_QEMU), and cpr-transfer between two 10.0 processes.

1. a booted guest with a disk 7.2 -> 10.0 -> 7.2 by x-ignore-shared, its machine type pinned
   to what the source resolved (pc-i440fx-7.2);
2. a memfd VM (memory_backend: memfd) on 10.0 moved by cpr-transfer;
3. cpr-transfer interrupted at its step boundaries (the engine's fault injection);
4. what cannot cross refused in preflight, naming the problem, nothing changed;
5. a VM launched by hand (-machine q35, unpinned) 7.2 -> 10.0.

A playbook run costs seconds here, so the VMs start together in one play (the guests boot
while the first tests run), each test runs its tasks in one play, and what must be seen
between two tasks is recorded by a lookup on the controller (cross_version_helpers:
snapshot_task, guest_task)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from cross_version_helpers import (
    guest_task, qemus_of, settled_problems, snapshot_task, task_output, temporaries, thaw,
)
from harness import disk_records, guest_log, process_state
from operator_vm import OperatorVM, peer_pid

INSTALLED = '/usr/bin/qemu-system-x86_64'  # QEMU 7.2, Debian 12's
# Found by comparing the builds (qom-list-properties of a type on each: 10.0's `-device help`
# aborts on the modules it was staged without): a device type only 10.0 has (since 8.0), and a
# migration capability only 7.2 has (query-migrate-capabilities: 7.2 has block and compress, 10.0
# has neither; 10.0 adds dirty-limit, mapped-ram and switchover-ack).
NEW_ONLY_DEVICE = 'virtio-multitouch-pci'
OLD_ONLY_CAPABILITY = 'compress'
FAULTS_ENV = 'LIVEUPDATE_QEMU_FAULTS'
FAST = dict(timeout=2, migration_timeout=3, shutdown_timeout=1)
OPERATOR_CAPS = {'x-ignore-shared': False, 'events': False}
MIB = 1 << 20
AFTER = 20  # heartbeats (2 s of guest time) that must follow an update


def _version(binary):
    out = subprocess.run([binary, '--version'], capture_output=True, text=True, check=True).stdout
    match = re.search(r'QEMU emulator version (\d+\.\d+\.\d+)', out)
    if not match:
        raise ValueError('no QEMU version in its --version output %r' % out[:200])
    return match.group(1)


@pytest.fixture(scope='module', autouse=True)
def file_timer(pytestconfig):
    """Prints how long the tests of this file took."""
    start = time.monotonic()
    yield
    line = '\ntest_cross_version.py: %.1f s' % (time.monotonic() - start)
    capture = pytestconfig.pluginmanager.get_plugin('capturemanager')
    if capture is None:
        print(line)
    else:
        with capture.global_and_fixture_disabled():
            print(line)


def _play(ansible, tasks):
    """Run ``tasks`` in one playbook; the results (what snapshot and guest tasks recorded as dicts)."""
    return [task_output(t, r) for t, r in zip(tasks, ansible.play(tasks).results)]


def _info_task(target, name=None, qmp_socket=None):
    query = "[?name=='%s']" % name if name else "[?qmp_socket=='%s']" % qmp_socket
    return {'liveupdate.qemu.vm_info': {'target_binary': target, 'query': query}}


# --- the VMs, started in one play ---

class Fleet:
    """The VMs of this file: key -> the vm module's `vm` result, and the hand-launched VM
    ``operator``. Names start with 'xv-PID-', not 'lut-' (another test session's teardown
    removes the /dev/shm/liveupdate-qemu-lut-* files of running VMs)."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.vms = {}
        self.operator = None

    def name(self, key):
        return '%s-%s' % (self.prefix, key)

    def __getitem__(self, key):
        return self.vms[key]

    def boot(self, key, predicate=None, timeout=240):
        """The VM ``key`` once its guest has booted (memory checksum verified once)."""
        vm = self.vms[key]
        guest_log(vm['serial_log']).wait(predicate or (lambda s: s.mem_ok >= 1), timeout)
        return vm

    def remove(self):
        """Everything of these VMs gone (straight, not under test: vm state=stopped is tested
        by test_cpr_transfer_memfd_vm and the lost cpr-transfer case)."""
        for vm in self.vms.values():
            thaw(vm['runtime_dir'])
            pids = [p.pid for p in qemus_of(vm['qmp_socket'])]
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while any(process_state(pid) not in (None, 'Z') for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            if vm['memory_file'] and os.path.exists(vm['memory_file']):
                os.unlink(vm['memory_file'])
            shutil.rmtree(vm['runtime_dir'], ignore_errors=True)
        if self.operator is not None:
            assert self.operator.destroy() == []


@pytest.fixture(scope='module')
def fleet(ansible, guest_spec, bare_spec, new_qemu, operator_root, guest_dir, tmp_path_factory):
    disk = str(tmp_path_factory.mktemp('xv-disk') / 'guest.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '64M'], check=True)
    fleet = Fleet('xv-%d' % os.getpid())
    specs = {
        # booted guests: the round trip (a disk the guest writes; also the 7.2 VM of the
        # refusals), cpr-transfer
        'trip': guest_spec(fleet.name('trip'), binary=INSTALLED, disks=[{'path': disk}],
                           append='console=ttyS0 quiet lu.fill_mb=8 lu.disk=1'),
        'cpr': guest_spec(fleet.name('cpr'), binary=new_qemu, memory_backend='memfd'),
        # no guest OS: the cpr-transfer faults, the refusals
        'memfd': bare_spec(fleet.name('memfd'), binary=new_qemu, memory_backend='memfd'),
        'pc10': bare_spec(fleet.name('pc10'), binary=new_qemu),
        'dev10': bare_spec(fleet.name('dev10'), binary=new_qemu, machine='pc-i440fx-7.2',
                           extra_args=['-device', NEW_ONLY_DEVICE]),
    }
    try:
        results = _play(ansible, [{'liveupdate.qemu.vm': args} for args in specs.values()])
        for key, result in zip(specs, results):
            if result.get('vm'):
                fleet.vms[key] = result['vm']
            assert result.get('changed') and not result.get('failed'), (key, result)
        fleet.vms['trip']['disk'] = disk
        # An operator's VM, launched by hand on 7.2: -machine q35 (an alias, unpinned), RAM in a
        # memory-backend-file share=on, its serial console to a file.
        fleet.operator = OperatorVM(operator_root, 'xv-q35', INSTALLED, guest_dir, machine='q35', serial='file')
        fleet.operator.start()
        yield fleet
    finally:
        fleet.remove()


def assert_went_on(summary, boot_id, what):
    """A guest_task's record: the guest went on after an update, one boot, no gap, memory intact."""
    assert summary['went_on'], (what, summary)
    assert summary['boot_ids'] == [boot_id], (what, summary['boot_ids'])
    assert summary['continuous'] and summary['heartbeats']['gaps'] == [], (what, summary['heartbeats'])
    assert summary['mem']['bad'] == 0 and not summary['mem']['md5_changed'], (what, summary['mem'])
    assert summary['disk']['gaps'] == [] and summary['disk']['errors'] == 0, (what, summary['disk'])


def assert_updated(result, old_pid, version, mode):
    assert result.get('changed') is True and not result.get('failed'), result
    assert result['old']['pid'] == old_pid and result['new']['pid'] != old_pid, result
    assert result['new']['version'] == version and result['new']['status'] == 'running', result['new']
    assert result['transfer_mode'] == mode and result['migration']['mode'] == mode, result['migration']
    assert result['migration']['full_copy'] is False
    assert 0 < result['migration']['bytes'] < MIB, result['migration']
    assert 0 < result['guest_pause_ms'] < 2000, result


# --- 1. x-ignore-shared round trip 7.2 -> 10.0 -> 7.2 of a booted guest ---

def test_round_trip_72_to_100_and_back(ansible, fleet, new_qemu):
    vm = fleet.boot('trip', lambda s: s.mem_ok >= 1 and len(s.disk_records) >= 3)
    boot_id = guest_log(vm['serial_log']).summary().boot_ids[0]
    versions = {new_qemu: _version(new_qemu), INSTALLED: _version(INSTALLED)}
    assert versions[INSTALLED].startswith('7.2.') and versions[new_qemu].startswith('10.0.'), versions
    hops = (new_qemu, INSTALLED)
    pid = qemus_of(vm['qmp_socket'])[0].pid
    tasks = []
    for target in hops:
        tasks += [{'liveupdate.qemu.live_update': {'name': vm['name'], 'target_binary': target}},
                  snapshot_task(vm['runtime_dir']), guest_task(vm['serial_log'], AFTER), _info_task(target, vm['name'])]
    results = _play(ansible, tasks)
    for number, target in enumerate(hops):
        result, snap, went_on, info = results[4 * number:4 * number + 4]
        what = 'hop %d onto QEMU %s' % (number + 1, versions[target])
        assert_updated(result, pid, versions[target], 'x-ignore-shared')
        pid = result['new']['pid']
        mode = 'normal' if target == new_qemu else None  # (no mode parameter before 8.2)
        assert [p['pid'] for p in snap['procs']] == [pid], (what, snap)
        assert settled_problems(snap, caps=OPERATOR_CAPS, mode=mode) == [], (what, snap)
        assert_went_on(went_on, boot_id, what)
        assert went_on['disk']['last'] > went_on['disk']['first'], (what, went_on['disk'])

        assert not info.get('failed') and len(info['vms']) == 1, (what, info)
        info = info['vms'][0]
        assert info['pid'] == pid and info['running']['version'] == versions[target], (what, info)
        assert info['machine'] == 'pc-i440fx-7.2', (what, info['machine'])  # pinned, never the target's `pc`
        assert info['outdated'] is False and info['eligible'] is True, (what, info['ineligible_reasons'])
        assert info['managed'] is True and info['qmp_socket'] == vm['qmp_socket'], (what, info)
        assert info['transfer_mode'] == 'x-ignore-shared', (what, info['transfer_modes'])
        assert info['capabilities']['x-ignore-shared'] is False, what  # not left on for later migrations
        if target == new_qemu:
            # On 10.0, a file-backed VM started without aux-ram-share cannot take cpr-transfer: said why.
            assert any('aux-ram-share' in r for r in info['transfer_modes']['cpr-transfer']), info['transfer_modes']

    # Every record the guest wrote, on either QEMU, is on the disk, in order, from one boot.
    last = guest_log(vm['serial_log']).summary().last_disk_record
    assert disk_records(vm['disk'], last) == [['LU-REC', str(n), boot_id] for n in range(1, last + 1)]
    assert temporaries(os.listdir(vm['runtime_dir'])) == []


# --- 2. cpr-transfer of a memfd VM, 10.0 -> 10.0 ---

def test_cpr_transfer_memfd_vm(ansible, fleet, new_qemu):
    vm = fleet.boot('cpr')
    version = _version(new_qemu)
    old_pid = qemus_of(vm['qmp_socket'])[0].pid
    boot_id = guest_log(vm['serial_log']).summary().boot_ids[0]
    info_before, result, snap, went_on, info_after, stopped, gone = _play(ansible, [
        _info_task(new_qemu, vm['name']),
        {'liveupdate.qemu.live_update': {'name': vm['name'], 'target_binary': new_qemu, 'force': True}},
        snapshot_task(vm['runtime_dir']),
        guest_task(vm['serial_log'], AFTER),
        _info_task(new_qemu, vm['name']),
        {'liveupdate.qemu.vm': {'name': vm['name'], 'state': 'stopped'}},
        snapshot_task(vm['runtime_dir'])])

    info = info_before['vms'][0]
    assert info['pid'] == old_pid and info['eligible'] is True, info
    assert info['transfer_mode'] == 'cpr-transfer' and info['transfer_modes']['cpr-transfer'] == [], info
    assert any('memory-backend-memfd' in r for r in info['transfer_modes']['x-ignore-shared']), info['transfer_modes']

    assert_updated(result, old_pid, version, 'cpr-transfer')
    new_pid = result['new']['pid']
    # One QEMU under the VM's names, the operator's capabilities, nothing left over, and the
    # migration mode parameter normal (a later migration to another host is no cpr-transfer).
    assert [p['pid'] for p in snap['procs']] == [new_pid], snap
    assert settled_problems(snap, caps=OPERATOR_CAPS) == [], snap
    assert_went_on(went_on, boot_id, 'after cpr-transfer')

    info = info_after['vms'][0]
    assert info['pid'] == new_pid and info['running']['version'] == version and info['managed'] is True, info
    assert info['machine'] == 'pc-i440fx-10.0' and info['qmp_socket'] == vm['qmp_socket'], info
    assert info['transfer_mode'] == 'cpr-transfer' and info['eligible'] is True, info['transfer_modes']
    assert [b['type'] for b in info['memory_backends']] == ['memory-backend-memfd']

    assert stopped.get('changed') is True and not stopped.get('failed'), stopped
    assert gone['procs'] == [] and gone['files'] is None and not gone['journal'], gone
    assert process_state(new_pid) in (None, 'Z')


# --- 4. what cannot cross is refused in preflight, nothing changed ---

REFUSALS = ('memfd-vm-to-7.2', 'machine-type-downgrade', 'device-only-in-10.0', 'capability-only-in-7.2',
            'cpr-transfer-forced-on-7.2', 'memfd-backend-on-7.2')


@pytest.fixture(scope='module')
def refusals(ansible, fleet, new_qemu):
    """Every refused attempt in one play, with a snapshot of its VM before and after; returns
    {case: (VM key, the refused result, snapshot before, snapshot after)}."""
    def update(key, target, **extra):
        return {'liveupdate.qemu.live_update': dict(name=fleet[key]['name'], target_binary=target, **extra)}

    def capability(state):
        return {'liveupdate.qemu.migrate_capabilities': {'name': fleet['trip']['name'],
                                                         'capabilities': {OLD_ONLY_CAPABILITY: state}}}

    fleet.boot('trip')  # (on 7.2: started there, and the round trip brings it back)
    cases = [
        ('memfd-vm-to-7.2', 'memfd', [], update('memfd', INSTALLED)),
        ('machine-type-downgrade', 'pc10', [], update('pc10', INSTALLED)),
        ('device-only-in-10.0', 'dev10', [], update('dev10', INSTALLED)),
        ('cpr-transfer-forced-on-7.2', 'trip', [], update('trip', new_qemu, transfer_mode='cpr-transfer')),
        ('capability-only-in-7.2', 'trip', [capability(True)], update('trip', new_qemu)),
    ]
    tasks, index = [], {}
    for case, key, before, task in cases:
        tasks += before + [snapshot_task(fleet[key]['runtime_dir'])]
        index[case] = (key, len(tasks))
        tasks += [task, snapshot_task(fleet[key]['runtime_dir'])]
    memfd_on_72 = fleet.name('memfd72')
    index['memfd-backend-on-7.2'] = (None, len(tasks))
    tasks += [{'liveupdate.qemu.vm': dict(name=memfd_on_72, binary=INSTALLED, memory='128M', accel=['tcg'],
                                          serial=False, memory_backend='memfd')},
              capability(False)]
    results = _play(ansible, tasks)
    assert not results[-1].get('failed'), results[-1]  # (compress off again: cleanup)
    out = dict((case, (key, results[at], results[at - 1], results[at + 1])) for case, (key, at) in index.items())
    out['memfd-backend-on-7.2'] = (os.path.join(ansible.runtime_dir, memfd_on_72),
                                   results[index['memfd-backend-on-7.2'][1]])
    return out


@pytest.mark.parametrize('case', REFUSALS)
def test_refused_across_versions(fleet, refusals, new_qemu, case):
    if case == 'memfd-backend-on-7.2':
        runtime_dir, result = refusals[case]
        assert result.get('failed') and result.get('changed') is False, result
        assert 'memory_backend memfd needs QEMU 10.0 or later' in result['msg'] and INSTALLED in result['msg'], \
            result['msg']
        assert not os.path.exists(runtime_dir) and qemus_of(os.path.join(runtime_dir, 'qmp.sock')) == []
        return
    key, result, before, after = refusals[case]
    name = fleet[key]['name']
    assert result.get('failed') and result.get('changed') is False, result
    assert result['step'] == 'preflight' and result['rolled_back'] is True, result
    msg = result['msg']
    assert msg.startswith('cannot live-update VM %s: ' % name), msg
    caps = dict(OPERATOR_CAPS)
    if case == 'memfd-vm-to-7.2':
        # neither mode moves it: 7.2 is too old for cpr-transfer, and memfd RAM is no named file
        assert 'cpr-transfer: the target runs QEMU 7.2' in msg, msg
        assert 'memory backend mem0 is memory-backend-memfd, not a named file' in msg, msg
    elif case == 'machine-type-downgrade':
        assert 'does not know machine type pc-i440fx-10.0' in msg and '-machine pc-i440fx-7.2' in msg, msg
        assert 'device or object type' not in msg, msg
    elif case == 'device-only-in-10.0':
        assert 'has no device or object type %s' % NEW_ONLY_DEVICE in msg, msg
        assert 'machine type' not in msg, msg
    elif case == 'capability-only-in-7.2':
        assert 'has no migration capability %s, which this VM has on' % OLD_ONLY_CAPABILITY in msg, msg
        assert new_qemu in msg, msg
        caps[OLD_ONLY_CAPABILITY] = True  # the operator's, untouched (turned off after the play)
    elif case == 'cpr-transfer-forced-on-7.2':
        assert 'this VM runs QEMU 7.2' in msg and 'cpr-transfer needs 10.0 or later' in msg, msg
    # Nothing changed: the same process, running, under its names, no leftovers.
    mode = (before['qmp'] or {}).get('mode')
    assert before['procs'] and settled_problems(before, caps=caps, mode=mode) == [], before
    assert [p['pid'] for p in after['procs']] == [p['pid'] for p in before['procs']], (before, after)
    assert settled_problems(after, caps=caps, mode=mode) == [], after
    assert [p.pid for p in qemus_of(fleet[key]['qmp_socket'])] == [before['procs'][0]['pid']]


# --- 3. cpr-transfer interrupted at its step boundaries ---

ROLLED_BACK, SETTLED, HELD, LOST = 'rolled-back', 'settled', 'held', 'lost'
# Before the commit the destination never ran the guest (at `spawned` it waits on the cpr
# channel, its monitor not even up): it is dropped and the source goes on, its migration mode
# back to normal. A module killed mid-way is settled by the next update. From the commit on the
# destination holds the guest: frozen, it keeps it (the next update resumes it there); killed,
# the guest is lost (last: that ends the VM).
CPR_CASES = [
    ('spawned', 'kill-dest', ROLLED_BACK), ('spawned', 'stop-dest', ROLLED_BACK),
    ('migrating', 'kill-dest', ROLLED_BACK), ('migrating', 'stop-dest', ROLLED_BACK),
    ('migrated', 'kill-dest', ROLLED_BACK), ('migrated', 'stop-dest', ROLLED_BACK),
    ('migrating', 'kill-module', SETTLED),
    ('committed', 'stop-dest', HELD),
    ('committed', 'kill-dest', LOST),
]


@pytest.fixture(scope='module')
def cpr_faults(ansible, fleet, new_qemu):
    """Every case in one play, one after the other on the bare memfd VM (each starts where the
    one before left it), with snapshots; returns {(point, action): (outcome, the source's pid
    before the case, [the results of the case's tasks])}."""
    vm = fleet['memfd']

    def update(fault=None):
        task = {'liveupdate.qemu.live_update': dict(FAST, name=vm['name'], target_binary=new_qemu, force=True,
                                                    transfer_mode='cpr-transfer')}
        if fault:
            task['environment'] = {FAULTS_ENV: fault}
        return task

    follow = {
        ROLLED_BACK: [],
        SETTLED: [snapshot_task(vm['runtime_dir']), update()],
        HELD: [snapshot_task(vm['runtime_dir'], thaw_after=True), update()],
        LOST: [snapshot_task(vm['runtime_dir']), {'liveupdate.qemu.vm': dict(name=vm['name'], state='stopped')}],
    }
    tasks, spans = [snapshot_task(vm['runtime_dir'])], []
    for point, action, outcome in CPR_CASES:
        case = [update('%s:%s' % (point, action))] + follow[outcome] + [snapshot_task(vm['runtime_dir'])]
        spans.append((len(tasks), len(tasks) + len(case)))
        tasks += case
    try:
        results = _play(ansible, tasks)
    finally:
        thaw(vm['runtime_dir'])  # nothing stays frozen, whatever happened
    out = {}
    for (point, action, outcome), (start, end) in zip(CPR_CASES, spans):
        out[(point, action)] = (outcome, (results[start - 1]['qmp'] or {}).get('peer'), results[start:end])
    return out


def _brief(result):
    keys = ('failed', 'changed', 'msg', 'rc', 'step', 'rolled_back', 'dest_pid', 'resumed', 'transfer_mode')
    return dict((k, result[k]) for k in keys if k in result)


@pytest.mark.parametrize('point,action', [c[:2] for c in CPR_CASES], ids=['%s:%s' % c[:2] for c in CPR_CASES])
def test_cpr_transfer_fault(cpr_faults, point, action):
    outcome, source, results = cpr_faults[(point, action)]
    failed, after = results[0], results[-1]
    assert source, 'the VM was not settled before this case (an earlier case left it so)'
    assert failed.get('failed'), _brief(failed)
    if outcome == ROLLED_BACK:
        assert failed.get('rolled_back') is True and failed.get('step') in ('spawn', 'migrate', 'switch'), \
            _brief(failed)
        assert 'lost' not in failed['msg'] and 'INCOMPLETE' not in failed['msg'], _brief(failed)
        # The source goes on as it was, its migration mode back to normal.
        assert [p['pid'] for p in after['procs']] == [source], (_brief(failed), after)
        assert settled_problems(after, caps=OPERATOR_CAPS) == [], (_brief(failed), after)
    elif outcome == SETTLED:
        left, rerun = results[1], results[2]
        assert failed.get('rc') in (137, -9), _brief(failed)
        assert source in [p['pid'] for p in left['procs']] and left['journal'], left
        assert rerun.get('changed') is True and not rerun.get('failed'), _brief(rerun)
        assert rerun['transfer_mode'] == 'cpr-transfer' and rerun['migration']['bytes'] < MIB, _brief(rerun)
        assert [p['pid'] for p in after['procs']] == [rerun['new']['pid']] != [source], (_brief(rerun), after)
        assert settled_problems(after, caps=OPERATOR_CAPS) == [], (_brief(rerun), after)
    elif outcome == HELD:
        held, rerun = results[1], results[2]
        dest = failed.get('dest_pid')
        assert failed.get('rolled_back') is False and failed.get('changed') is True, _brief(failed)
        assert dest and 'pid %d' % dest in failed['msg'] and 'lost' not in failed['msg'], _brief(failed)
        assert [p['pid'] for p in held['procs']] == [dest] and held['pidfile'] == dest, held
        assert (held['qmp'] or {}).get('peer') == dest and temporaries(held['files']) == [], held
        assert rerun.get('changed') is True and not rerun.get('failed'), _brief(rerun)
        assert 'completed an interrupted live update' in rerun['msg'] and rerun['new']['pid'] == dest, _brief(rerun)
        assert [p['pid'] for p in after['procs']] == [dest], after
        assert settled_problems(after, caps=OPERATOR_CAPS) == [], (_brief(rerun), after)
    elif outcome == LOST:
        gone, stopped = results[1], results[2]
        assert failed.get('rolled_back') is False and 'lost' in failed['msg'], _brief(failed)
        assert 'guest runs' not in failed['msg'] and 'runs on the destination' not in failed['msg'], _brief(failed)
        assert gone['procs'] == [], gone  # the source did not resume
        assert stopped.get('changed') is True and not stopped.get('failed'), stopped
        assert after['procs'] == [] and after['files'] is None and not after['journal'], after


# --- 5. a VM the operator launched by hand, 7.2 -> 10.0 ---

def test_operator_q35_vm_72_to_100(ansible, fleet, new_qemu):
    vm = fleet.operator
    boot = vm.wait_serial_file(lambda s: s.mem_ok >= 1, timeout=240)
    version = _version(new_qemu)
    result, went_on, info = _play(ansible, [
        {'liveupdate.qemu.live_update': {'socket': vm.qmp_socket, 'target_binary': new_qemu}},
        guest_task(vm.serial_file, AFTER),
        _info_task(new_qemu, qmp_socket=vm.qmp_socket)])
    assert_updated(result, vm.pid, version, 'x-ignore-shared')
    new_pid = result['new']['pid']
    vm.pid = new_pid
    assert vm.pids() == [new_pid] and peer_pid(vm.qmp_socket) == new_pid and vm.pidfile_pid() == new_pid
    assert vm.status() == 'running' and vm.temporaries() == []
    assert_went_on(went_on, boot.boot_ids[0], 'hand-launched VM on 10.0')

    assert not info.get('failed') and len(info['vms']) == 1, info
    info = info['vms'][0]
    assert info['pid'] == new_pid and info['running']['version'] == version and info['outdated'] is False, info
    assert info['machine'] == 'pc-q35-7.2', info['machine']  # q35 as 7.2 resolved it, pinned on 10.0
    assert info['managed'] is False and info['eligible'] is True, info['ineligible_reasons']
    assert info['transfer_mode'] == 'x-ignore-shared', info['transfer_modes']
