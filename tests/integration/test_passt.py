# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""User-mode networking through passt (-netdev stream): the VM module starts it, a live update
hands the stream socket to the new QEMU, and a client's connection through a forwarded port
survives the update; requests made during it all succeed."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import urllib.request

import pytest

from harness import guest_log, process_state, qemu_pids_under

INSTALLED = '/usr/bin/qemu-system-x86_64'
HTTP_PORT = 25881


@pytest.fixture(scope='module')
def passt_vm(ansible, guest_spec, old_qemu):
    assert shutil.which('passt'), 'passt is not installed (scripts/setup.sh installs it)'
    args = guest_spec('lut-passt', binary=old_qemu, append='console=ttyS0 quiet lu.fill_mb=8 lu.http=1',
                      nics=[{'type': 'user', 'hostfwd': ['tcp:127.0.0.1:%d-:80' % HTTP_PORT]}])  # backend: auto
    vm = ansible.module('vm', args)['vm']
    vm['log'] = guest_log(vm['serial_log'])
    vm['log'].wait(lambda s: s.mem_ok >= 1 and s.http_port, timeout=120)
    yield vm
    ansible.module('vm', dict(name='lut-passt', state='stopped'))
    assert passt_of(vm['runtime_dir']) == []


def passt_of(runtime_dir):
    """Pids of the passt processes whose command line names a file under ``runtime_dir``."""
    found = []
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = handle.read().decode(errors='replace').split('\0')
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith('passt') and any(a.startswith(runtime_dir) for a in argv):
            found.append(int(entry))
    return found


def get(timeout=10):
    with urllib.request.urlopen('http://127.0.0.1:%d/' % HTTP_PORT, timeout=timeout) as reply:
        return reply.read().decode().strip()


def test_vm_runs_user_networking_on_passt(passt_vm):
    assert any(a.startswith('stream,id=net0,server=off,addr.type=unix') for a in passt_vm['argv'])
    assert len(passt_of(passt_vm['runtime_dir'])) == 1
    assert get() == passt_vm['log'].summary().boot_ids[0]


def request(conn):
    conn.sendall(b'GET / HTTP/1.0\r\n\r\n')
    reply = b''
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return reply
        reply += chunk


def test_connection_survives_updates(ansible, passt_vm, old_qemu):
    """A connection opened before each update is served after it (busybox httpd answers one
    request per connection, and ends a connection idle for long); a client polling all along
    never fails. To the newer build and back."""
    boot_id = get()
    failures, done = [], []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                assert get(timeout=5) == boot_id
                done.append(time.monotonic())
            except Exception as exc:  # pylint: disable=broad-except
                failures.append(repr(exc))
            time.sleep(0.02)
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for target in (INSTALLED, old_qemu):
            with socket.create_connection(('127.0.0.1', HTTP_PORT), timeout=10) as held:
                result = ansible.module('live_update', {'name': 'lut-passt', 'target_binary': target, 'force': True})
                assert result['changed'] and not result.get('failed'), result
                reply = request(held)
            assert reply.startswith(b'HTTP/1.') and reply.rstrip().endswith(boot_id.encode()), reply
            assert result['connections'] == [] and 'connections_reset' not in result
            plan = result['plan']
            assert [s['netdev'] for s in plan['streams']] == ['net0'] and len(plan['held_still']) == 1
            assert process_state(plan['held_still'][0]) != 'T'  # passt goes on
            assert qemu_pids_under(passt_vm['memory_file']) == [result['new']['pid']]
    finally:
        stop.set()
        poller.join()
    assert failures == [] and len(done) > 10
    summary = passt_vm['log'].summary()
    assert summary.boot_ids == [boot_id] and summary.mem_bad == 0


@pytest.mark.parametrize('fault, settled_by_next_run', [
    ('spawned:kill-dest', False),    # rolled back: passt goes on at once
    ('migrated:stop-dest', False),   # rolled back after the migration
    ('migrated:kill-module', True),  # the module died with passt stopped: the next run continues it
    ('committed:kill-module', True),
])
def test_fault_never_leaves_passt_stopped(ansible, passt_vm, fault, settled_by_next_run):
    """A fault at a step boundary while passt is held still: passt is continued by the
    rollback, or, when the module process itself died, by the next run's recover step; the
    guest goes on serving on exactly one QEMU."""
    boot_id = get()
    [passt] = passt_of(passt_vm['runtime_dir'])
    task = {'liveupdate.qemu.live_update': dict(name='lut-passt', force=True, timeout=5),
            'environment': {'LIVEUPDATE_QEMU_FAULTS': fault}}
    failed = ansible.play([task]).results[0]
    assert failed.get('failed'), failed
    if settled_by_next_run:
        assert process_state(passt) == 'T'  # what a killed module leaves; its journal names passt
        again = ansible.module('live_update', dict(name='lut-passt', force=True))
        assert not again.get('failed'), again
    else:
        assert failed['rolled_back'] is True, failed
        for pid in qemu_pids_under(passt_vm['memory_file']):  # a stopped destination was ended
            assert process_state(pid) != 'T'
    assert process_state(passt) != 'T'
    assert len(qemu_pids_under(passt_vm['memory_file'])) == 1
    assert get() == boot_id
