# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real QEMU started the way libvirt starts a domain (issue 12): vm_info lists it under its
domain name, not eligible, with the libvirt reason, and live_update refuses it. Neither touches
the process or its monitor, on which a client stays connected as libvirt does. No guest boots:
the firmware finds nothing to boot and waits, which is all a running VM needs to be here."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

INSTALLED = '/usr/bin/qemu-system-x86_64'
DOMAIN = 'lut-libvirt'
MARKERS = ['name-debug-threads', 'master-key', 'charmonitor', 'libvirt-path']


class MonitorClient:
    """libvirt's side of the monitor: connected for the life of the domain, events kept."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile('rb')
        self.events = []
        self._reply()  # greeting
        self.execute('qmp_capabilities')

    def _reply(self):
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError('the monitor closed')
            msg = json.loads(line)
            if 'event' not in msg:
                return msg
            self.events.append(msg['event'])

    def execute(self, command):
        self.sock.sendall(json.dumps({'execute': command}).encode() + b'\n')
        msg = self._reply()
        assert 'error' not in msg, msg
        return msg['return']

    def close(self):
        self.reader.close()
        self.sock.close()


@pytest.fixture
def libvirt_vm():
    """A QEMU with libvirt's command line shape, files in a domain directory laid out like
    /var/lib/libvirt/qemu/domain-<id>-<name>/ (a short root: unix socket paths are limited),
    and a client on its monitor. Killed at teardown, whatever the test did."""
    root = tempfile.mkdtemp(prefix='lu-lv-', dir='/run')
    domain_dir = os.path.join(root, 'libvirt', 'qemu', 'domain-1-%s' % DOMAIN)
    os.makedirs(domain_dir, mode=0o700)
    key = os.path.join(domain_dir, 'master-key.aes')
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as handle:
        handle.write(secrets.token_bytes(32))
    monitor = os.path.join(domain_dir, 'monitor.sock')
    # As tests/qemuxmlconfdata/*.args of libvirt write it, the monitor by path as libvirt did before
    # it handed over a file descriptor.
    argv = [INSTALLED, '-name', 'guest=%s,debug-threads=on' % DOMAIN, '-S',
            '-object', 'secret,id=masterKey0,format=raw,file=%s' % key,
            '-machine', 'pc,usb=off,dump-guest-core=off', '-accel', 'tcg', '-m', '64', '-smp', '1',
            '-display', 'none', '-no-user-config', '-nodefaults',
            '-chardev', 'socket,id=charmonitor,path=%s,server=on,wait=off' % monitor,
            '-mon', 'chardev=charmonitor,id=monitor,mode=control',
            '-rtc', 'base=utc', '-no-shutdown', '-boot', 'strict=on', '-msg', 'timestamp=on']
    log = open(os.path.join(root, 'qemu.log'), 'wb')
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    client = None
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(monitor):
            assert qemu.poll() is None and time.monotonic() < deadline, 'QEMU did not start: %s' % argv
            time.sleep(0.05)
        client = MonitorClient(monitor)
        client.execute('cont')  # libvirt starts domains with -S and resumes them once set up
        assert client.execute('query-status')['status'] == 'running'
        client.events.clear()
        yield dict(pid=qemu.pid, monitor=monitor, client=client, qemu=qemu)
    finally:
        if client is not None:
            client.close()
        qemu.kill()
        qemu.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def assert_untouched(vm):
    """Still running, never paused, and its monitor still libvirt's (the client's)."""
    assert vm['qemu'].poll() is None
    assert vm['client'].execute('query-status')['status'] == 'running'
    assert not set(vm['client'].events) & {'STOP', 'SHUTDOWN', 'MIGRATION', 'RESUME'}, vm['client'].events


def test_vm_info_lists_a_libvirt_domain_as_ineligible(ansible, libvirt_vm):
    result = ansible.module('vm_info', {})
    assert result['changed'] is False and not result.get('failed'), result
    matches = [vm for vm in result['vms'] if vm['pid'] == libvirt_vm['pid']]
    assert len(matches) == 1, result['vms']
    vm = matches[0]
    assert vm['name'] == DOMAIN and vm['libvirt'] == {'domain': DOMAIN, 'markers': MARKERS}
    assert vm['eligible'] is False and len(vm['ineligible_reasons']) == 1, vm
    reason = vm['ineligible_reasons'][0]
    assert reason.startswith('managed by libvirt (domain %s): libvirt holds its QMP monitor' % DOMAIN), reason
    assert 'virsh migrate --live' in reason and 'virsh managedsave' in reason
    # Its monitor was not asked: no QMP facts, and no QMP error (a second client would have waited
    # on the connected one until the timeout).
    assert (vm['managed'], vm['qmp_socket'], vm['qmp_error'], vm['status'], vm['running']) == \
        (False, None, None, None, None)
    assert_untouched(libvirt_vm)

    selected = ansible.module('vm_info', {'query': '[?libvirt].libvirt.domain'})
    assert DOMAIN in selected['vms'], selected


def test_live_update_refuses_a_libvirt_domain(ansible, libvirt_vm):
    results = ansible.modules('live_update', [{'pid': libvirt_vm['pid']}, {'socket': libvirt_vm['monitor']}])
    for result in results:
        assert result.get('failed') and result['step'] == 'locate' and result['changed'] is False, result
        assert 'QEMU pid %d is managed by libvirt (domain %s)' % (libvirt_vm['pid'], DOMAIN) in result['msg'], result
    assert_untouched(libvirt_vm)


def test_qmp_modules_refuse_libvirts_monitor(ansible, libvirt_vm):
    results = ansible.modules('qmp_command', [{'socket': libvirt_vm['monitor'], 'command': 'stop'}])
    results += ansible.modules('migrate_capabilities', [{'socket': libvirt_vm['monitor'],
                                                         'capabilities': {'x-ignore-shared': True}}])
    for result in results:
        assert result.get('failed') and result['changed'] is False, result
        assert 'managed by libvirt (domain %s)' % DOMAIN in result['msg'], result
    assert_untouched(libvirt_vm)
