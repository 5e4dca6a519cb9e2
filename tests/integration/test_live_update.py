# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""liveupdate.qemu.live_update on real guests: older build -> newer -> older,
with disk, network, serial and VNC; a paused VM stays paused."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request

import pytest

from harness import disk_records, guest_log, qemu_pids_under

INSTALLED = '/usr/bin/qemu-system-x86_64'
HTTP_PORT = 25880


@pytest.fixture(scope='module')
def disk_image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('disk') / 'guest.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, '64M'], check=True)
    return path


@pytest.fixture(scope='module')
def full_vm(ansible, guest_spec, old_qemu, disk_image):
    """A guest on the older build with a qcow2 disk it keeps writing, a user-mode NIC (QEMU's
    own, slirp) with a forwarded HTTP port, a serial console and VNC on a unix socket."""
    args = guest_spec('lut-full', binary=old_qemu, vnc='unix',
                      append='console=ttyS0 quiet lu.fill_mb=16 lu.disk=1 lu.http=1',
                      disks=[{'path': disk_image}],
                      nics=[{'type': 'user', 'backend': 'slirp', 'hostfwd': ['tcp:127.0.0.1:%d-:80' % HTTP_PORT]}])
    result = ansible.module('vm', args)
    assert result['changed'], result
    vm = result['vm']
    vm['log'] = guest_log(vm['serial_log'])
    vm['log'].wait(lambda s: s.mem_ok >= 1 and s.http_port and len(s.disk_records) >= 3, timeout=180)
    yield vm
    ansible.module('vm', dict(name='lut-full', state='stopped'))


def http_boot_id():
    with urllib.request.urlopen('http://127.0.0.1:%d/' % HTTP_PORT, timeout=10) as reply:
        return reply.read().decode().strip()


def assert_continuous(vm, since, boot_id):
    """Heartbeats went on past ``since`` without a gap, one boot, memory verified OK since."""
    summary = vm['log'].wait(lambda s: s.last_counter >= since + 20 and s.mem_ok >= 2, timeout=60)
    assert summary.boot_ids == [boot_id], summary.boot_ids
    assert summary.hb_gaps == [], summary.hb_gaps
    assert summary.mem_bad == 0 and not summary.mem_md5_changed
    assert summary.disk_gaps == [] and summary.disk_errors == 0
    return summary


def serial_heartbeat(path):
    """Connect to the serial console socket and read until a heartbeat line shows up."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    data = b''
    try:
        while b'LU-HB' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return data


def vnc_greeting(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    data = sock.recv(12)
    sock.close()
    return data


def update_and_check(ansible, vm, target, expected_package):
    before = vm['log'].summary()
    boot_id = before.boot_ids[0]
    pid_before = qemu_pids_under(vm['memory_file'])
    result = ansible.module('live_update', {'name': 'lut-full', 'target_binary': target})
    assert result['changed'] is True and not result.get('failed'), result
    assert result['old']['pid'] == pid_before[0] and result['new']['pid'] != result['old']['pid']
    assert result['new']['package'] == expected_package and result['new']['status'] == 'running'
    assert result['migration']['bytes'] < 1 << 20 and result['migration']['full_copy'] is False
    assert 0 < result['guest_pause_ms'] < 2000
    assert qemu_pids_under(vm['memory_file']) == [result['new']['pid']]

    summary = assert_continuous(vm, before.last_counter, boot_id)
    records = disk_records(vm['disk'], summary.last_disk_record)
    assert records == [['LU-REC', str(n), boot_id] for n in range(1, summary.last_disk_record + 1)]

    info = ansible.module('vm_info', {'query': "[?name=='lut-full']", 'target_binary': target})['vms'][0]
    assert info['pid'] == result['new']['pid'] and info['running']['package'] == expected_package
    assert info['outdated'] is False and info['eligible'] is True
    assert info['qmp_socket'] == vm['qmp_socket'] and info['managed'] is True
    assert info['capabilities']['x-ignore-shared'] is False  # not left on for later migrations
    status = ansible.module('qmp_command', {'name': 'lut-full', 'command': 'query-status'})
    assert status['result']['status'] == 'running'
    assert b'LU-HB' in serial_heartbeat(vm['serial_socket'])
    assert vnc_greeting(os.path.join(vm['runtime_dir'], 'vnc.sock')).startswith(b'RFB ')
    assert http_boot_id() == boot_id
    for leftover in os.listdir(vm['runtime_dir']):
        assert '.lu-' not in leftover, leftover
    return result


def test_check_mode_plans_and_changes_nothing(ansible, full_vm):
    pids = qemu_pids_under(full_vm['memory_file'])
    result = ansible.module('live_update', {'name': 'lut-full'}, check=True)
    assert result['changed'] is True and 'new' not in result
    plan = result['plan']
    canonical = sorted(c for t, c in plan['renames'])
    root = full_vm['runtime_dir']
    assert canonical == sorted(os.path.join(root, f) for f in ('qmp.sock', 'serial.sock', 'vnc.sock', 'qemu.pid'))
    assert plan['host_forwards'] == [['net0', 'tcp:127.0.0.1:%d-10.0.2.15:80' % HTTP_PORT]]
    assert 'pc-i440fx-7.2,memory-backend=mem0' in plan['argv'] and plan['argv'][-3:] == ['-S', '-incoming', 'defer']
    assert '-daemonize' not in plan['argv']  # started detached: its output stays in the log
    assert not any('hostfwd' in a for a in plan['argv'])
    assert qemu_pids_under(full_vm['memory_file']) == pids


def test_update_older_to_newer_then_back(ansible, full_vm, old_qemu, disk_image):
    full_vm['disk'] = disk_image
    newer = subprocess.run([INSTALLED, '--version'], capture_output=True, text=True, check=True).stdout
    older = subprocess.run([old_qemu, '--version'], capture_output=True, text=True, check=True).stdout
    newer_pkg = newer.split('(', 1)[1].split(')')[0]
    older_pkg = older.split('(', 1)[1].split(')')[0]
    assert newer_pkg != older_pkg

    up = update_and_check(ansible, full_vm, INSTALLED, newer_pkg)
    again = ansible.module('live_update', {'name': 'lut-full', 'target_binary': INSTALLED})
    assert again['changed'] is False and 'already runs' in again['msg']
    down = update_and_check(ansible, full_vm, old_qemu, older_pkg)
    assert down['old']['pid'] == up['new']['pid']


def test_discard_data_on_the_source_keeps_the_guest_ram(ansible, full_vm):
    """A source backend with discard-data=on would free the guest's pages of the shared file
    when it exits, under the destination: the update turns it off first."""
    result = ansible.module('qmp_command', {'name': 'lut-full', 'command': 'qom-set', 'arguments': {
        'path': '/objects/mem0', 'property': 'discard-data', 'value': True}})
    assert not result.get('failed'), result
    before = full_vm['log'].summary()
    result = ansible.module('live_update', {'name': 'lut-full', 'force': True})
    assert result['changed'] is True and not result.get('failed'), result
    assert qemu_pids_under(full_vm['memory_file']) == [result['new']['pid']]
    assert_continuous(full_vm, before.last_counter, before.boot_ids[0])


def test_paused_vm_stays_paused(ansible, full_vm):
    ansible.module('qmp_command', {'name': 'lut-full', 'command': 'stop'})
    try:
        result = ansible.module('live_update', {'name': 'lut-full', 'force': True})
        assert result['changed'] is True and result['new']['status'] == 'paused', result
        assert 'guest_pause_ms' not in result
        status = ansible.module('qmp_command', {'name': 'lut-full', 'command': 'query-status'})
        assert status['result']['status'] == 'paused'
    finally:
        ansible.module('qmp_command', {'name': 'lut-full', 'command': 'cont'})
    before = full_vm['log'].summary()
    assert_continuous(full_vm, before.last_counter, before.boot_ids[0])


def test_open_connection_through_slirp_is_refused_then_reset(ansible, full_vm):
    """A client connected through QEMU's own user-mode networking: preflight names the
    connection and refuses; open_connections=reset goes on and the client sees its end."""
    pid = qemu_pids_under(full_vm['memory_file'])
    client = socket.create_connection(('127.0.0.1', HTTP_PORT), timeout=10)
    try:
        local = '%s:%d' % client.getsockname()
        refused = ansible.module('live_update', {'name': 'lut-full', 'force': True})
        assert refused['failed'] and refused['step'] == 'preflight' and refused['rolled_back'], refused
        assert [c['remote'] for c in refused['connections']] == [local], refused['connections']
        assert refused['connections'][0]['kind'] == 'forwarded to the guest'
        assert 'open_connections=reset' in refused['msg']
        assert qemu_pids_under(full_vm['memory_file']) == pid

        reset = ansible.module('live_update', {'name': 'lut-full', 'force': True, 'open_connections': 'reset'})
        assert reset['changed'] and [c['remote'] for c in reset['connections_reset']] == [local], reset
        client.sendall(b'GET / HTTP/1.0\r\n\r\n')
        try:
            assert client.recv(100) == b''  # the guest never saw this connection's new owner
        except ConnectionResetError:
            pass
    finally:
        client.close()
    assert http_boot_id()  # new connections are forwarded again
