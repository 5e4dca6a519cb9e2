# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""live_update of a VM on a tap NIC: the open tap is handed to the new QEMU.

All traffic stays in a network namespace this test makes (its tap and the
guest's address live there and nowhere else)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from harness import guest_log, qemu_pids_under

INSTALLED = '/usr/bin/qemu-system-x86_64'
GUEST_IP = '10.0.3.15'


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope='module')
def netns():
    name = 'lut-ns-%d' % os.getpid()
    run('ip', 'netns', 'add', name)
    try:
        for argv in (['ip', 'link', 'set', 'lo', 'up'],
                     ['ip', 'tuntap', 'add', 'dev', 'luttap0', 'mode', 'tap'],
                     ['ip', 'addr', 'add', '10.0.3.1/24', 'dev', 'luttap0'],
                     ['ip', 'link', 'set', 'luttap0', 'up']):
            run('ip', 'netns', 'exec', name, *argv)
        yield name
    finally:
        run('ip', 'netns', 'del', name)


def http_get_in(netns, timeout=20):
    """GET / of the guest from inside the namespace; returns the body (the guest's boot id)."""
    code = ('import sys, urllib.request; '
            'print(urllib.request.urlopen("http://%s/", timeout=%d).read().decode().strip())' % (GUEST_IP, timeout))
    proc = subprocess.run(['ip', 'netns', 'exec', netns, 'python3', '-c', code],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope='module')
def tap_vm(netns, guest_dir, tmp_path_factory, old_qemu):
    """A guest on the older build, started by hand inside the namespace on tap luttap0."""
    tmp = tmp_path_factory.mktemp('tapvm')
    vm = dict(qmp_socket=str(tmp / 'qmp.sock'), serial_log=str(tmp / 'serial.log'),
              memory_file='/dev/shm/lut-tap-%d.ram' % os.getpid(), downscript_log=str(tmp / 'downscript.log'))
    # A downscript that takes the interface down, as a bridge teardown would: run by the old
    # QEMU at its exit, it would cut the guest off on the new one.
    downscript = tmp / 'ifdown.sh'
    downscript.write_text('#!/bin/sh\necho "$1" >> %s\nip link set "$1" down\n' % vm['downscript_log'])
    downscript.chmod(0o755)
    vm['downscript'] = str(downscript)
    subprocess.run(['ip', 'netns', 'exec', netns, old_qemu, '-name', 'lut-tap', '-accel', 'tcg', '-nodefaults',
                    '-display', 'none', '-m', '256M', '-machine', 'pc,memory-backend=m0',
                    '-object', 'memory-backend-file,id=m0,size=256M,mem-path=%s,share=on' % vm['memory_file'],
                    '-kernel', os.path.join(guest_dir, 'vmlinux'), '-initrd', os.path.join(guest_dir, 'initramfs.gz'),
                    '-append', 'console=ttyS0 quiet lu.ip=%s/24 lu.http=1' % GUEST_IP,
                    '-netdev', 'tap,id=net0,ifname=luttap0,script=no,downscript=%s' % downscript,
                    '-device', 'virtio-net-pci,netdev=net0',
                    '-serial', 'file:%s' % vm['serial_log'], '-qmp', 'unix:%s,server=on,wait=off' % vm['qmp_socket'],
                    '-pidfile', str(tmp / 'pid'), '-daemonize'], check=True, timeout=60)
    vm['log'] = guest_log(vm['serial_log'])
    vm['log'].wait(lambda s: s.http_port and s.mem_ok >= 1, timeout=180)
    yield vm
    for pid in qemu_pids_under(vm['memory_file']):
        os.kill(pid, signal.SIGKILL)
    if os.path.exists(vm['memory_file']):
        os.unlink(vm['memory_file'])


def test_tap_vm_reachable_after_update_and_back(ansible, tap_vm, netns, old_qemu):
    boot_id = tap_vm['log'].summary().boot_ids[0]
    assert http_get_in(netns) == boot_id
    for target in (INSTALLED, old_qemu):
        before = tap_vm['log'].summary()
        result = ansible.module('live_update', {'socket': tap_vm['qmp_socket'], 'target_binary': target})
        assert result['changed'] is True and not result.get('failed'), result
        # First from the name on the command line, then from the fd the previous update passed down.
        tap, = result['plan']['taps']
        if target == INSTALLED:
            assert tap == {'netdev': 'net0', 'ifname': 'luttap0', 'source_fd': None}
            assert result['plan']['downscripts'] == [['net0', tap_vm['downscript']]]
            assert result['stop_method'] == 'SIGKILL'
        else:
            assert tap['netdev'] == 'net0' and tap['ifname'] is None and tap['source_fd'] >= 3
            assert result['plan']['downscripts'] == [] and result['stop_method'] == 'quit'
        assert not os.path.exists(tap_vm['downscript_log']), 'the old QEMU ran the downscript'
        assert qemu_pids_under(tap_vm['memory_file']) == [result['new']['pid']]
        assert http_get_in(netns) == boot_id
        after = tap_vm['log'].wait(lambda s: s.last_counter >= before.last_counter + 10, timeout=60)
        assert after.boot_ids == [boot_id] and after.hb_gaps == [] and after.mem_bad == 0
