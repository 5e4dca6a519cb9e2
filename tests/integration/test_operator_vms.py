# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 13: 'updated' must mean the guest is fine, for VMs the operator launched by hand
(no liveupdate.qemu.vm): live_update by QMP socket from the older QEMU build to the
installed one, then the guest must go on where the operator looks at it: its serial
console (socket or file), disk, network, guest agent channel and VNC socket.

The VMs come from the operator_vm fixture (tests/integration/operator_vm.py)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from harness import disk_records, guestlog, process_state
from operator_vm import SerialReader, StalledClient, free_tcp_port, peer_pid, unix_greeting

INSTALLED = '/usr/bin/qemu-system-x86_64'
AFTER = 20  # heartbeats (2 s of guest time) that must arrive after an update


def update(ansible, vm):
    return ansible.module('live_update', dict(socket=vm.qmp_socket, target_binary=INSTALLED))


def wait_booted_on_socket(vm, timeout=120):
    """Boot through a reader on the serial socket, which then disconnects."""
    reader = SerialReader(vm.serial_socket, reconnect=False).start()
    try:
        reader.wait(lambda s: s.mem_ok >= 1, timeout)
        summary = reader.summary()
        return summary.boot_ids[0], summary.last_counter
    finally:
        reader.close()


def engine_log(ansible, vm):
    """What the destination QEMU wrote: for a VM not launched by liveupdate.qemu.vm the engine
    keeps it beside its update lock, in the runtime directory."""
    path = os.path.join(ansible.runtime_dir, '.locks', vm.qmp_socket.strip('/').replace('/', '%') + '.log')
    try:
        with open(path, errors='replace') as handle:
            return handle.read()[-2000:]
    except OSError as exc:
        return '(%s)' % exc


def assert_updated(ansible, vm, result):
    """The module says it updated, and the VM is now exactly one QEMU from the installed
    binary behind the operator's own QMP socket and pidfile, running, no temporary names."""
    assert result.get('changed') is True and not result.get('failed'), \
        'live_update failed at %s: %s\ndestination log: %s\n%s' % (
            result.get('step'), result.get('msg'), engine_log(ansible, vm), result)
    old_pid, new_pid = result['old']['pid'], result['new']['pid']
    assert old_pid == vm.pid and new_pid != old_pid, result
    assert vm.pids() == [new_pid], (vm.pids(), result)
    assert os.path.realpath('/proc/%d/exe' % new_pid) == os.path.realpath(INSTALLED)
    assert peer_pid(vm.qmp_socket) == new_pid
    assert vm.pidfile_pid() == new_pid
    assert vm.status() == 'running'
    assert vm.temporaries() == []
    assert 0 < result['guest_pause_ms'] < 2000, result
    vm.pid = new_pid


def assert_console_goes_on(heartbeats, boot_id, after_counter, what):
    """``heartbeats`` [(counter, boot id, uptime)] read from a console after an update: the
    same boot, counters past ``after_counter`` and increasing (a console socket drops what
    the guest prints while nobody is connected, so gaps are allowed, going back is not)."""
    assert heartbeats, what
    assert {hb[1] for hb in heartbeats} == {boot_id}, what
    counters = [hb[0] for hb in heartbeats]
    assert counters == sorted(set(counters)), what
    assert sum(1 for c in counters if c > after_counter) >= AFTER, what


def read_console_after_update(vm, boot_id, after_counter, timeout=15):
    """Connect a new client to the serial socket and collect AFTER heartbeats."""
    reader = SerialReader(vm.serial_socket).start()
    try:
        try:
            reader.wait(lambda s: sum(1 for hb in s.heartbeats if hb[0] > after_counter) >= AFTER, timeout)
        except TimeoutError as exc:
            status = vm.status()
            cpus = vm.qmp('query-cpus-fast')
            pytest.fail('serial console %s dead after the update: %s; QMP status %s, %d vCPUs; '
                        'a client connected to it got %d bytes in %ds'
                        % (vm.serial_socket, exc, status, len(cpus), reader.bytes, timeout))
        return reader.heartbeats()
    finally:
        reader.close()


# --- (b) controls: a client that keeps reading, and none ---

def test_reading_console_client_console_works_after_update(ansible, operator_vm):
    """Control of (a): the console client keeps reading through the update (it connects
    again when the old QEMU's socket closes)."""
    vm = operator_vm('reading', machine='q35')
    reader = SerialReader(vm.serial_socket).start()
    try:
        reader.wait(lambda s: s.mem_ok >= 1, 120)
        boot_id = reader.summary().boot_ids[0]
        last_before = reader.summary().last_counter
        result = update(ansible, vm)
        assert_updated(ansible, vm, result)
        reader.wait(lambda s: sum(1 for hb in s.heartbeats if hb[0] > last_before) >= AFTER, 15)
        assert reader.connections >= 2  # it did follow the console to the new QEMU
        assert_console_goes_on(reader.heartbeats(), boot_id, last_before, 'reading client')
    finally:
        reader.close()


# --- (c) the other shapes of hand-launched VMs ---

DEVICES = dict(smp=2, serial='file', disk=True, net=True, http=True, qga=True, vnc=True)
SHAPES = {
    'q35-smp2-qcow2-usernet-qga-vnc-serialfile': dict(DEVICES, machine='q35'),
    'pc-smp2-qcow2-usernet-qga-vnc-serialfile': dict(DEVICES, machine='pc'),
    'pc-serialsocket-noclient': dict(machine='pc', serial='socket'),
    # passt started by hand, its stream in libvirt's JSON form; a client connected through it
    # before the update is served after it.
    'q35-passt-serialsocket': dict(machine='q35', serial='socket', net='passt', http=True),
}


@pytest.mark.parametrize('shape', list(SHAPES))
def test_hand_launched_shapes_update_and_go_on(ansible, operator_vm, tmp_path, shape):
    options = dict(SHAPES[shape])
    disk = http = None
    if options.pop('disk', False):
        disk = str(tmp_path / 'disk.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '64M'], check=True)
    if options.pop('http', False):
        http = free_tcp_port()
    vm = operator_vm(shape.split('-')[0], disk=disk, http_port=http, **options)

    if vm.serial_file:
        def ready(s):
            return s.mem_ok >= 1 and (not disk or len(s.disk_records) >= 3) and (not http or s.http_port)
        boot = vm.wait_serial_file(ready, timeout=180)
        boot_id, last_before, mem_before = boot.boot_ids[0], boot.last_counter, boot.mem_ok
    else:
        boot_id, last_before = wait_booted_on_socket(vm)
    if http:
        assert vm.http_boot_id() == boot_id
    held = socket.create_connection(('127.0.0.1', http), timeout=10) if vm.passt else None

    result = update(ansible, vm)
    assert_updated(ansible, vm, result)
    new_pid = result['new']['pid']
    if held:
        with held:
            held.sendall(b'GET / HTTP/1.0\r\n\r\n')
            assert held.makefile('rb').read().rstrip().endswith(boot_id.encode())
        assert result['plan']['held_still'] == [vm.passt.pid] and process_state(vm.passt.pid) != 'T'

    if vm.serial_file:
        # The file gets everything, from both processes: no gap at all.
        after = vm.wait_serial_file(lambda s: s.last_counter >= last_before + AFTER and s.mem_ok > mem_before,
                                    timeout=60)
        assert after.boot_ids == [boot_id], after.boot_ids
        assert after.hb_gaps == [], after.hb_gaps
        assert after.mem_bad == 0 and not after.mem_md5_changed
        assert after.disk_gaps == [] and after.disk_errors == 0
        if disk:
            assert after.last_disk_record > boot.last_disk_record
            last = after.last_disk_record
            records = disk_records(disk, last)
            assert records == [['LU-REC', str(n), boot_id] for n in range(1, last + 1)]
    else:
        assert_console_goes_on(read_console_after_update(vm, boot_id, last_before), boot_id, last_before, shape)

    assert len(vm.qmp('query-cpus-fast')) == vm.smp
    if http:
        assert vm.http_boot_id() == boot_id
    if vm.qga_socket:
        assert peer_pid(vm.qga_socket) == new_pid
    if vm.vnc_socket:
        assert unix_greeting(vm.vnc_socket).startswith(b'RFB ')


# --- (a) the stalled console client (issue 13, item 1); last, so that -x runs the rest first ---

def test_stalled_console_client_console_works_after_update(ansible, operator_vm):
    """A console client connected but not reading at the moment of the update (a hung
    logger): after the reported success, a new console client must see the guest go on.
    Without a client on the destination's serial socket when the device state loads, the
    destination's UART waits for a chardev watch that a socket chardev without a client
    never creates (hw/char/serial.c serial_post_load), and the console is dead for good:
    failed 9 of 9 runs on the engine before 98621ab, passes with its chardev drain."""
    vm = operator_vm('stall', machine='q35')
    boot_id, booted_at = wait_booted_on_socket(vm)

    stalled = StalledClient(vm.serial_socket)
    try:
        queued = stalled.wait_full()
        result = update(ansible, vm)
        assert_updated(ansible, vm, result)
        before = guestlog.parse_text(stalled.drain().decode('utf-8', 'replace'), final=False)
    finally:
        stalled.close()
    assert queued > 0 and before.boot_ids == [boot_id], (queued, before.as_dict())
    last_before = max(before.last_counter or 0, booted_at)

    heartbeats = read_console_after_update(vm, boot_id, last_before)
    assert_console_goes_on(heartbeats, boot_id, last_before,
                           'stalled client had %d bytes queued; pause %s ms' % (queued, result['guest_pause_ms']))
