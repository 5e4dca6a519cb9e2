# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""liveupdate.qemu.vm_info on real QEMU processes, launched by the vm module or by hand."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from harness import qemu_pids_under

INSTALLED = '/usr/bin/qemu-system-x86_64'


def by_pid(result, pid):
    matches = [vm for vm in result['vms'] if vm['pid'] == pid]
    assert len(matches) == 1, result
    return matches[0]


@pytest.fixture
def hand_started(tmp_path):
    """Start QEMU by hand (not through the vm module) with the given extra args and a QMP socket."""
    pids = []

    def start(*args, qmp=True):
        sock = str(tmp_path / ('qmp%d.sock' % len(pids)))
        argv = [INSTALLED, '-accel', 'tcg', '-nodefaults', '-display', 'none', '-S', '-daemonize',
                '-pidfile', str(tmp_path / ('pid%d' % len(pids)))]
        if qmp:
            argv += ['-qmp', 'unix:%s,server=on,wait=off' % sock]
        subprocess.run(argv + list(args), check=True, capture_output=True, timeout=60)
        with open(str(tmp_path / ('pid%d' % len(pids)))) as handle:
            pids.append(int(handle.read()))
        return pids[-1]
    yield start
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_managed_vm_is_eligible_and_current(ansible, shared_vm):
    result = ansible.module('vm_info', {})
    assert result['changed'] is False
    vm = by_pid(result, shared_vm['pid'])
    assert vm['name'] == 'lut-shared' and vm['managed'] is True
    assert vm['runtime_dir'] == shared_vm['runtime_dir'] and vm['qmp_socket'] == shared_vm['qmp_socket']
    assert vm['status'] == 'running' and vm['migration'] == 'none'
    assert vm['machine'] == 'pc-i440fx-7.2'
    assert vm['binary'] == {'path': INSTALLED, 'deleted': False, 'replaced': False}
    assert vm['running'] == {k: vm['target'][k] for k in ('version', 'package')}
    assert vm['outdated'] is False and vm['outdated_reasons'] == []
    assert vm['memory_backends'] == [{'id': 'mem0', 'type': 'memory-backend-file', 'size': 256 << 20,
                                      'share': True, 'path': shared_vm['memory_file'], 'filesystem': 'tmpfs', 'mapped': 'mapped'}]
    assert vm['capabilities']['x-ignore-shared'] is False
    assert vm['eligible'] is True and vm['ineligible_reasons'] == []


def test_vm_on_old_build_is_outdated(ansible, bare_spec, old_qemu):
    started = ansible.module('vm', bare_spec('lut-old', binary=old_qemu))
    try:
        vm = by_pid(ansible.module('vm_info', {'target_binary': INSTALLED}), started['vm']['pid'])
        assert vm['outdated'] is True and vm['eligible'] is True
        assert vm['running']['package'] != vm['target']['package']
        assert 'target %s' % INSTALLED in vm['outdated_reasons'][0]
        assert vm['binary']['deleted'] is False
    finally:
        ansible.module('vm', dict(name='lut-old', state='stopped'))


def binary_copy(tmp_path):
    """A copy of the installed QEMU in a tree shaped like /usr, so that it finds its modules and
    data relative to itself."""
    usr = tmp_path / 'usr'
    (usr / 'bin').mkdir(parents=True)
    (usr / 'lib' / 'x86_64-linux-gnu').mkdir(parents=True)
    os.symlink('/usr/lib/x86_64-linux-gnu/qemu', str(usr / 'lib' / 'x86_64-linux-gnu' / 'qemu'))
    os.symlink('/usr/share', str(usr / 'share'))
    copy = str(usr / 'bin' / 'qemu-system-x86_64')
    shutil.copy2(INSTALLED, copy)
    return copy


def test_deleted_binary_is_outdated(ansible, bare_spec, tmp_path):
    copy = binary_copy(tmp_path)
    started = ansible.module('vm', bare_spec('lut-deleted', binary=copy))
    assert started['vm']['status'] == 'running', started
    os.unlink(copy)
    try:
        vm = by_pid(ansible.module('vm_info', {'target_binary': INSTALLED}), started['vm']['pid'])
        assert vm['binary'] == {'path': copy, 'deleted': True, 'replaced': False}
        assert vm['outdated'] is True and 'binary %s was deleted' % copy in vm['outdated_reasons']
    finally:
        ansible.module('vm', dict(name='lut-deleted', state='stopped'))


def test_replaced_binary_is_outdated(ansible, bare_spec, tmp_path):
    copy = binary_copy(tmp_path)
    started = ansible.module('vm', bare_spec('lut-replaced', binary=copy))
    # What a package upgrade does: a new file renamed over the old path.
    shutil.copy2(INSTALLED, copy + '.new')
    os.rename(copy + '.new', copy)
    try:
        vm = by_pid(ansible.module('vm_info', {}), started['vm']['pid'])
        assert vm['binary'] == {'path': copy, 'deleted': False, 'replaced': True}, vm['binary']
        assert 'binary %s was replaced on disk' % copy in vm['outdated_reasons']
    finally:
        ansible.module('vm', dict(name='lut-replaced', state='stopped'))


def test_hand_started_vms_and_their_reasons(ansible, hand_started, tmp_path):
    memfile = str(tmp_path / 'private.ram')
    share_off = hand_started('-name', 'lut-shareoff', '-m', '128M', '-machine', 'pc,memory-backend=m0',
                             '-object', 'memory-backend-file,id=m0,size=128M,mem-path=%s,share=off' % memfile)
    anonymous = hand_started('-name', 'lut-anon', '-m', '128M')
    no_qmp = hand_started('-name', 'lut-noqmp', '-m', '128M', qmp=False)
    result = ansible.module('vm_info', {})

    vm = by_pid(result, share_off)
    assert vm['managed'] is False and vm['name'] == 'lut-shareoff' and vm['eligible'] is False
    assert vm['memory_backends'][0]['share'] is False and vm['memory_backends'][0]['path'] == memfile
    assert any('share=off' in r for r in vm['ineligible_reasons']), vm['ineligible_reasons']
    assert vm['status'] == 'prelaunch' and any('run state is prelaunch' in r for r in vm['ineligible_reasons'])

    vm = by_pid(result, anonymous)
    # QEMU 7.2 wraps plain -m RAM in an implicit memory-backend-ram named pc.ram.
    assert [b['type'] for b in vm['memory_backends']] == ['memory-backend-ram'] and vm['eligible'] is False
    assert any('is memory-backend-ram, not a named file' in r for r in vm['ineligible_reasons'])

    vm = by_pid(result, no_qmp)
    assert vm['qmp_socket'] is None and vm['eligible'] is False
    assert vm['ineligible_reasons'] == ['QMP: no unix QMP socket on its command line']


def test_query_selects_vms(ansible, shared_vm):
    result = ansible.module('vm_info', {'query': "[?name=='lut-shared'].{name: name, eligible: eligible}"})
    assert result['vms'] == [{'name': 'lut-shared', 'eligible': True}]
    bad = ansible.module('vm_info', {'query': '[?name=='})
    assert bad.get('failed') and 'is not valid JMESPath' in bad['msg']


def test_check_mode_reports_the_same(ansible, shared_vm):
    result = ansible.module('vm_info', {'query': "[?name=='lut-shared'].pid"}, check=True)
    assert result['vms'] == [shared_vm['pid']] and result['changed'] is False
    assert qemu_pids_under(shared_vm['memory_file']) == [shared_vm['pid']]
