# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A client's view of live updates, on a real distribution guest: Debian 12 with systemd and
nginx (tools/build-debian-guest.sh), its user-mode networking on passt as liveupdate.qemu.vm
starts it, an HTTP/1.1 load generator on the host (benchmarks/httpload.py) holding keep-alive
connections through the forwarded port across three live updates (to the newer build, back,
and again). No request fails, no connection is opened again, the guest is the same boot with
the same nginx. benchmarks/connections.py measures the same on tap, slirp and passt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))
from httpload import LoadGenerator  # noqa: E402  pylint: disable=wrong-import-position

INSTALLED = '/usr/bin/qemu-system-x86_64'
HTTP_PORT = 25882
HEARTBEAT_RE = re.compile(r'LU-HEARTBEAT (\d+) (\S+)')


def get(path):
    with urllib.request.urlopen('http://127.0.0.1:%d%s' % (HTTP_PORT, path), timeout=10) as reply:
        return reply.read().decode().strip()


def heartbeats(serial_log):
    with open(serial_log, errors='replace') as handle:
        return [(int(n), boot) for n, boot in HEARTBEAT_RE.findall(handle.read())]


@pytest.fixture(scope='module')
def debian_vm(ansible, debian_guest, old_qemu, tmp_path_factory):
    overlay = str(tmp_path_factory.mktemp('debian') / 'root.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b',
                    os.path.join(debian_guest['dir'], debian_guest['rootfs']), overlay], check=True)
    args = dict(name='lut-debian', binary=old_qemu, memory='512M', accel=['tcg'],
                kernel=os.path.join(debian_guest['dir'], debian_guest['vmlinux']),
                initrd=os.path.join(debian_guest['dir'], debian_guest['initrd']), append=debian_guest['append'],
                disks=[{'path': overlay}], nics=[{'type': 'user', 'hostfwd': ['tcp:127.0.0.1:%d-:80' % HTTP_PORT]}])
    vm = ansible.module('vm', args)['vm']
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and 'LU-READY' not in open(vm['serial_log'], errors='replace').read():
        time.sleep(0.5)
    assert 'LU-READY' in open(vm['serial_log'], errors='replace').read(), 'the Debian guest did not get ready'
    yield vm
    ansible.module('vm', dict(name='lut-debian', state='stopped'))


def test_keep_alive_clients_go_on_across_updates(ansible, debian_vm, old_qemu):
    assert any(a.startswith('stream,') for a in debian_vm['argv']), 'user-mode networking is not on passt'
    boot_id = get('/boot_id')
    load = LoadGenerator('127.0.0.1', HTTP_PORT, path='/', connections=4, think=0.01)
    load.start()
    switches = []
    try:
        time.sleep(3)
        for target in (INSTALLED, old_qemu, INSTALLED):
            begin = time.time()
            result = ansible.module('live_update', dict(name='lut-debian', target_binary=target, force=True))
            assert result['changed'] and not result.get('failed'), result
            switches.append((begin, time.time(), result.get('guest_pause_ms')))
            time.sleep(2)
    finally:
        results = load.stop()
    assert results.failed == 0, results.errors()
    assert results.reconnects == 0
    assert results.requests > 100
    for begin, end, pause in switches:  # seen, not judged: the benchmark judges latency
        print('switch: worst request %.0f ms, guest pause %s ms' % (results.worst(begin, end + 1) * 1000, pause))
    assert get('/boot_id') == boot_id
    beats = heartbeats(debian_vm['serial_log'])
    assert set(boot for dummy, boot in beats) == {boot_id}
    assert beats[-1][0] > beats[0][0] and len(beats) == beats[-1][0] - beats[0][0] + 1, 'heartbeat gap'
