# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""liveupdate.qemu.vm on real QEMU: start, idempotence, check and diff mode,
stop ladder, stale files, bad input."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from harness import guest_log, mode_of, qemu_pids_under


def test_start_and_stop_check_real_again(ansible, guest_spec, runtime_dir):
    args = guest_spec('lut-idem')
    rundir = os.path.join(runtime_dir, 'lut-idem')
    memfile = '/dev/shm/liveupdate-qemu-lut-idem.ram'

    check = ansible.play([{'liveupdate.qemu.vm': args}], check=True, diff=True)
    assert check.results[0]['changed'] is True
    assert check.results[0]['diff']['before'] == {'state': 'stopped'}
    assert check.results[0]['diff']['after']['state'] == 'running'
    assert '+    "state": "running"' in check.stdout, check.stdout
    assert not os.path.exists(rundir) and not os.path.exists(memfile)
    assert qemu_pids_under(rundir) == []

    real = ansible.module('vm', args)
    assert real['changed'] is True and real['vm']['status'] == 'running'
    pid = real['vm']['pid']
    assert qemu_pids_under(memfile) == [pid]
    assert mode_of(rundir) == 0o700
    for path in (memfile, real['vm']['qmp_socket'], real['vm']['serial_socket'], real['vm']['serial_log']):
        assert mode_of(path) == 0o600, path
    assert os.path.getsize(memfile) == 256 << 20
    log = guest_log(real['vm']['serial_log'])
    summary = log.wait(lambda s: s.hb_count >= 5, timeout=120)
    assert len(summary.boot_ids) == 1

    again = ansible.module('vm', args)
    assert again['changed'] is False and again['vm']['pid'] == pid

    stop_check = ansible.module('vm', dict(name='lut-idem', state='stopped'), check=True)
    assert stop_check['changed'] is True and qemu_pids_under(memfile) == [pid]

    stop = ansible.module('vm', dict(name='lut-idem', state='stopped'))
    assert stop['changed'] is True and stop['stop_method'] == 'quit'
    assert qemu_pids_under(memfile) == []
    assert not os.path.exists(rundir) and not os.path.exists(memfile)

    stop_again = ansible.module('vm', dict(name='lut-idem', state='stopped'))
    assert stop_again['changed'] is False


def test_running_vm_with_another_spec_is_an_error(ansible, shared_vm):
    args = dict(shared_vm['args'], memory='512M', vcpus=2)
    result = ansible.module('vm', args)
    assert result.get('failed') and 'memory' in result['msg'] and 'vcpus' in result['msg']
    assert result['conflicts'] == ['memory', 'vcpus']
    assert qemu_pids_under(shared_vm['memory_file']) == [shared_vm['pid']]


def test_other_binary_on_running_vm_warns_only(ansible, shared_vm, old_qemu):
    result = ansible.module('vm', dict(shared_vm['args'], binary=old_qemu))
    assert result['changed'] is False and not result.get('failed')
    assert any('live_update' in w for w in result['warnings'])


def test_name_running_under_another_runtime_dir_is_refused(ansible, shared_vm, tmp_path):
    other = dict(shared_vm['args'], runtime_dir=str(tmp_path))
    result = ansible.module('vm', other)
    assert result.get('failed')
    assert 'already used by QEMU pid %d' % shared_vm['pid'] in result['msg']
    assert os.listdir(str(tmp_path)) == []


def test_restart_after_crash_removes_stale_files(ansible, bare_spec):
    args = bare_spec('lut-crash')
    first = ansible.module('vm', args)
    os.kill(first['vm']['pid'], signal.SIGKILL)
    time.sleep(0.3)
    second = ansible.module('vm', args)
    assert second['changed'] is True and second['stale_files_removed'] is True
    assert second['vm']['pid'] != first['vm']['pid'] and second['vm']['status'] == 'running'
    ansible.module('vm', dict(name='lut-crash', state='stopped'))


def test_stop_ladder_falls_back_to_sigterm(ansible, bare_spec):
    """A QMP monitor held by another client never answers us: the ladder goes on to SIGTERM."""
    started = ansible.module('vm', bare_spec('lut-ladder'))
    holder = socket.socket(socket.AF_UNIX)
    holder.connect(started['vm']['qmp_socket'])
    try:
        stop = ansible.module('vm', dict(name='lut-ladder', state='stopped', timeout=1, shutdown_timeout=5))
    finally:
        holder.close()
    assert stop['changed'] is True and stop['stop_method'] == 'SIGTERM'
    assert qemu_pids_under(started['vm']['memory_file']) == []
    assert not os.path.exists(started['vm']['runtime_dir'])


def test_start_failure_reports_qemu_error_and_leaves_nothing(ansible, bare_spec, runtime_dir):
    result = ansible.module('vm', bare_spec('lut-badarg', extra_args=['-device', 'no-such-device']))
    assert result.get('failed') and "no-such-device" in result['msg'] and 'exited with code 1' in result['msg']
    assert not os.path.exists(os.path.join(runtime_dir, 'lut-badarg'))
    assert not os.path.exists('/dev/shm/liveupdate-qemu-lut-badarg.ram')
    assert qemu_pids_under('lut-badarg') == []


@pytest.fixture(scope='module')
def not_executable(tmp_path_factory):
    path = tmp_path_factory.mktemp('bin') / 'qemu-system-x86_64'
    path.write_text('#!/bin/sh\n')
    path.chmod(0o644)
    return str(path)


BAD_INPUTS = [
    ({'name': 'a/b'}, "VM name 'a/b' is not valid"),
    ({'name': '..'}, "VM name '..' is not valid"),
    ({'name': ''}, "VM name '' is not valid"),
    ({'memory': '1X'}, "memory '1X' is not a size"),
    ({'memory': '0'}, "memory '0' is not a size"),
    ({'memory': '0G'}, "memory '0G' must be larger than zero"),
    ({'memory': '-1G'}, "memory '-1G' is not a size"),
    ({'memory_dir': '/nonexistent/dir'}, 'memory_dir /nonexistent/dir does not exist'),
    ({'memory': '100T'}, 'memory_dir /dev/shm has'),
    ({'binary': '/nonexistent/qemu'}, 'QEMU binary /nonexistent/qemu does not exist'),
    ({'vcpus': 0}, 'vcpus must be at least 1'),
    ({'kernel': '/nonexistent/vmlinuz'}, 'kernel /nonexistent/vmlinuz does not exist'),
    ({'nics': [{'type': 'tap'}]}, 'a tap NIC needs ifname'),
    ({'state': 'paused'}, 'value of state must be one of'),
]


def test_bad_input_is_refused_and_changes_nothing(ansible, bare_spec, runtime_dir, not_executable):
    cases = BAD_INPUTS + [({'binary': not_executable}, 'is not an executable file')]
    arg_list = [dict(bare_spec('lut-bad'), **override) for override, dummy in cases]
    results = ansible.modules('vm', arg_list)
    for (override, expected), result in zip(cases, results):
        assert result.get('failed'), (override, result)
        assert expected in result['msg'], (override, result['msg'])
    assert not os.path.exists(os.path.join(runtime_dir, 'lut-bad'))
    assert not os.path.exists('/dev/shm/liveupdate-qemu-lut-bad.ram')
    assert qemu_pids_under('lut-bad') == []
