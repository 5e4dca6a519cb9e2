# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""liveupdate.qemu.qmp_command on a real guest, and every way a QMP socket can be wrong."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def test_query_runs_in_check_mode_and_changes_nothing(ansible, shared_vm):
    for check in (True, False):
        result = ansible.module('qmp_command', {'name': 'lut-shared', 'command': 'query-status'}, check=check)
        assert result['changed'] is False and result['result']['status'] == 'running'
        assert result['socket'] == shared_vm['qmp_socket']


def test_stop_and_cont(ansible, shared_vm):
    target = {'socket': shared_vm['qmp_socket']}
    run = ansible.play([
        {'liveupdate.qemu.qmp_command': dict(target, command='stop'), 'check_mode': True},
        {'liveupdate.qemu.qmp_command': dict(target, command='query-status')},
        {'liveupdate.qemu.qmp_command': dict(target, command='stop')},
        {'liveupdate.qemu.qmp_command': dict(target, command='query-status')},
        {'liveupdate.qemu.qmp_command': dict(target, command='cont')},
        {'liveupdate.qemu.qmp_command': dict(target, command='query-status')},
    ])
    stop_check, status1, stop, status2, cont, status3 = run.results
    assert stop_check['changed'] is True and status1['result']['status'] == 'running'
    assert stop['changed'] is True and status2['result']['status'] == 'paused'
    assert cont['changed'] is True and status3['result']['status'] == 'running'


def test_arguments_are_passed(ansible, shared_vm):
    result = ansible.module('qmp_command', {'name': 'lut-shared', 'command': 'qom-get',
                                            'arguments': {'path': '/machine', 'property': 'type'}})
    assert result['result'] == 'pc-i440fx-7.2-machine'


def test_qemu_error_is_reported_with_its_class(ansible, shared_vm):
    results = ansible.modules('qmp_command', [
        {'name': 'lut-shared', 'command': 'no-such-command'},
        {'name': 'lut-shared', 'command': 'qom-get', 'arguments': {'path': '/nope', 'property': 'type'}},
    ])
    assert results[0]['failed'] and results[0]['error_class'] == 'CommandNotFound'
    assert "QMP command no-such-command failed: CommandNotFound" in results[0]['msg']
    assert results[1]['failed'] and results[1]['error_class'] == 'DeviceNotFound'


@pytest.fixture
def silent_socket(tmp_path):
    """A unix socket that accepts and never says a word (a hung or busy monitor)."""
    path = str(tmp_path / 'silent.sock')
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except socket.timeout:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_socket_problems(ansible, shared_vm, silent_socket, tmp_path):
    regular = tmp_path / 'regular-file'
    regular.write_text('')
    started = time.monotonic()
    results = ansible.modules('qmp_command', [
        {'socket': str(tmp_path / 'missing.sock'), 'command': 'query-status'},
        {'socket': str(regular), 'command': 'query-status'},
        # The guest's serial console: a real socket that speaks no QMP.
        {'socket': shared_vm['serial_socket'], 'command': 'query-status', 'timeout': 5},
        {'socket': silent_socket, 'command': 'query-status', 'timeout': 1},
        {'name': 'not/a/name', 'command': 'query-status'},
        {'name': 'lut-shared', 'command': 'query-status', 'timeout': 0},
        {'name': 'lut-shared', 'socket': shared_vm['qmp_socket'], 'command': 'query-status'},
    ])
    missing, not_socket, not_qmp, silent, bad_name, bad_timeout, both = results
    assert 'QMP socket %s does not exist' % (tmp_path / 'missing.sock') == missing['msg']
    assert '%s is not a unix socket' % regular == not_socket['msg']
    assert 'is not a QMP server' in not_qmp['msg'], not_qmp['msg']
    assert 'did not answer the QMP greeting within 1.0s' in silent['msg'], silent['msg']
    assert "VM name 'not/a/name' is not valid" in bad_name['msg']
    assert 'timeout must be positive' in bad_timeout['msg']
    assert 'mutually exclusive' in both['msg']
    assert time.monotonic() - started < 120
