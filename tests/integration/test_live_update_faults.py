# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""live_update when things go wrong. After each fault the guest runs on exactly
one QEMU (the same as before), with the same boot and its memory intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness import guest_log, qemu_pids_under

INSTALLED = '/usr/bin/qemu-system-x86_64'


@pytest.fixture(scope='module')
def fault_vm(ansible, guest_spec):
    result = ansible.module('vm', guest_spec('lut-fault'))
    assert result['changed'], result
    vm = result['vm']
    vm['log'] = guest_log(vm['serial_log'])
    vm['log'].wait(lambda s: s.mem_ok >= 1, timeout=180)
    yield vm
    ansible.module('vm', dict(name='lut-fault', state='stopped'))


def assert_untouched(ansible, vm, status='running'):
    """Still the same single QEMU, in its run state, capabilities as before, guest continuous."""
    assert qemu_pids_under(vm['memory_file']) == [vm['pid']]
    info = ansible.module('vm_info', {'query': "[?name=='%s']" % vm['name']})['vms'][0]
    assert info['status'] == status and info['migration'] in ('none', 'completed', 'failed', 'cancelled')
    assert info['capabilities']['x-ignore-shared'] is False and info['capabilities']['events'] is False
    before = vm['log'].summary()
    after = vm['log'].wait(lambda s: s.last_counter >= before.last_counter + 10 and s.mem_ok > before.mem_ok,
                           timeout=60)
    assert len(after.boot_ids) == 1 and after.hb_gaps == [] and after.mem_bad == 0
    leftovers = [f for f in os.listdir(vm['runtime_dir']) if '.lu-' in f]
    assert leftovers == []


@pytest.fixture
def wrapper(tmp_path):
    """A target 'binary': a script that runs the installed QEMU, but misbehaves when it is
    started as a live update's destination (-incoming)."""
    def make(incoming_body):
        path = tmp_path / 'qemu-wrapper'
        path.write_text('#!/bin/sh\ncase " $* " in *" -incoming "*) %s ;; esac\nexec %s "$@"\n'
                        % (incoming_body, INSTALLED))
        path.chmod(0o755)
        return str(path)
    return make


def update(ansible, vm, **args):
    return ansible.module('live_update', dict(name=vm['name'], force=True, **args))


def test_target_binary_missing(ansible, fault_vm):
    result = update(ansible, fault_vm, target_binary='/nonexistent/qemu-system-x86_64')
    assert result['failed'] and 'QEMU binary /nonexistent/qemu-system-x86_64 does not exist' in result['msg']
    assert_untouched(ansible, fault_vm)


def test_destination_exits_at_start(ansible, fault_vm, wrapper):
    target = wrapper('echo "injected start failure" >&2; exit 3')
    result = update(ansible, fault_vm, target_binary=target)
    assert result['failed'] and result['step'] == 'spawn' and result['rolled_back'] is True
    assert 'exited with code 3' in result['msg'] and 'injected start failure' in result['msg']
    assert_untouched(ansible, fault_vm)


FAKE_SILENT_QEMU = r'''
import os, socket, sys, time
args = sys.argv[1:]
qmp = next(a for i, a in enumerate(args) if i and args[i - 1] == '-qmp')[len('unix:'):].split(',')[0]
pidfile = args[args.index('-pidfile') + 1]
sock = socket.socket(socket.AF_UNIX)
sock.bind(qmp)
sock.listen(1)
with open(pidfile, 'w') as handle:
    handle.write('%d\n' % os.getpid())
held = []
end = time.time() + 120
while time.time() < end:
    sock.settimeout(1)
    try:
        held.append(sock.accept()[0])  # and never say a word
    except OSError:
        pass
'''


def test_destination_qmp_never_answers(ansible, fault_vm, wrapper, tmp_path):
    """A destination whose QMP never greets (real QEMU won't do this on demand: a stand-in process)."""
    fake = tmp_path / 'fake_qemu.py'
    fake.write_text(FAKE_SILENT_QEMU)
    target = wrapper('exec %s %s "$@"' % (sys.executable, fake))
    result = update(ansible, fault_vm, target_binary=target, timeout=2)
    assert result['failed'] and result['step'] == 'spawn' and result['rolled_back'] is True
    assert 'did not answer the QMP greeting' in result['msg']
    assert not [p for p in os.listdir('/proc') if p.isdigit() and _cmdline_has(p, str(fake))]
    assert_untouched(ansible, fault_vm)


def _cmdline_has(pid, text):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as handle:
            return text.encode() in handle.read()
    except OSError:
        return False


def test_migration_fails_on_the_destination(ansible, fault_vm, wrapper):
    # Another machine type than the source's: the destination rejects the migration stream.
    target = wrapper('exec %s "$@" -machine pc-i440fx-7.1' % INSTALLED)
    result = update(ansible, fault_vm, target_binary=target)
    assert result['failed'] and result['step'] == 'migrate' and result['rolled_back'] is True, result
    # a failure still says which VM, from which process, and how far it got
    assert result['vm']['name'] == fault_vm['name'] and result['old']['pid'] == fault_vm['pid'], result
    assert {'locate', 'preflight', 'spawn', 'migrate'} <= set(result['timings']), result['timings']
    assert_untouched(ansible, fault_vm)


def test_source_qmp_times_out(ansible, fault_vm):
    os.kill(fault_vm['pid'], signal.SIGSTOP)
    try:
        result = update(ansible, fault_vm, timeout=2)
    finally:
        os.kill(fault_vm['pid'], signal.SIGCONT)
    assert result['failed'] and 'did not answer the QMP greeting within 2.0s' in result['msg'], result
    assert_untouched(ansible, fault_vm)


def overlapping_updates(ansible, vm, wrapper, second):
    """(first, second) results: ``second()`` runs while a first update of ``vm`` holds its
    lock (its destination starts slowly, so the second one certainly overlaps it)."""
    slow = wrapper('sleep 3; exec %s "$@"' % INSTALLED)
    results = {}

    def first():
        results['first'] = update(ansible, vm, target_binary=slow)
    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(2.5)
    results['second'] = second()
    thread.join()
    return results


def test_concurrent_updates_of_one_vm(ansible, fault_vm, wrapper):
    results = overlapping_updates(ansible, fault_vm, wrapper, lambda: update(ansible, fault_vm))
    assert results['first']['changed'] is True and not results['first'].get('failed'), results['first']
    assert results['second']['failed'] and 'another live update of this VM is in progress' in results['second']['msg']
    pids = qemu_pids_under(fault_vm['memory_file'])
    assert pids == [results['first']['new']['pid']]
    fault_vm['pid'] = pids[0]
    assert_untouched(ansible, fault_vm)


def test_update_waiting_for_the_lock_updates_what_runs_then(ansible, fault_vm, wrapper):
    """The second update waits (lock_timeout) while the first moves the VM to another process;
    it then locates the VM again instead of failing on the pid it found before."""
    pid = fault_vm['pid']
    results = overlapping_updates(ansible, fault_vm, wrapper, lambda: ansible.module(
        'live_update', dict(pid=pid, force=True, lock_timeout=120)))
    assert results['first']['changed'] is True and not results['first'].get('failed'), results['first']
    second = results['second']
    assert second['changed'] is True and not second.get('failed'), second
    assert second['old']['pid'] == results['first']['new']['pid'], second
    pids = qemu_pids_under(fault_vm['memory_file'])
    assert pids == [second['new']['pid']]
    fault_vm['pid'] = pids[0]
    assert_untouched(ansible, fault_vm)


def test_postcopy_is_refused(ansible, fault_vm):
    ansible.module('migrate_capabilities', {'name': 'lut-fault', 'capabilities': {'postcopy-ram': True}})
    try:
        result = update(ansible, fault_vm)
        assert result['failed'] and result['step'] == 'preflight'
        assert any('postcopy-ram is on' in r for r in result['reasons'])
    finally:
        ansible.module('migrate_capabilities', {'name': 'lut-fault', 'capabilities': {'postcopy-ram': False}})
    assert_untouched(ansible, fault_vm)


@pytest.fixture(scope='module')
def private_ram_vm(guest_dir, tmp_path_factory):
    """A guest started by hand with share=off RAM: what live_update must refuse (or copy)."""
    tmp = tmp_path_factory.mktemp('private')
    vm = dict(qmp_socket=str(tmp / 'qmp.sock'), serial_log=str(tmp / 'serial.log'),
              memory_file=str(tmp / 'private.ram'), name='lut-private')
    subprocess.run([INSTALLED, '-name', 'lut-private', '-accel', 'tcg', '-nodefaults', '-display', 'none',
                    '-m', '256M', '-machine', 'pc,memory-backend=m0',
                    '-object', 'memory-backend-file,id=m0,size=256M,mem-path=%s,share=off' % vm['memory_file'],
                    '-kernel', os.path.join(guest_dir, 'vmlinux'), '-initrd', os.path.join(guest_dir, 'initramfs.gz'),
                    '-append', 'console=ttyS0 quiet lu.fill_mb=64', '-serial', 'file:%s' % vm['serial_log'],
                    '-qmp', 'unix:%s,server=on,wait=off' % vm['qmp_socket'], '-daemonize',
                    '-pidfile', str(tmp / 'pid')], check=True, timeout=60)
    with open(str(tmp / 'pid')) as handle:
        vm['pid'] = int(handle.read())
    vm['log'] = guest_log(vm['serial_log'])
    vm['log'].wait(lambda s: s.mem_ok >= 1, timeout=180)
    yield vm
    for pid in qemu_pids_under(vm['memory_file']):
        os.kill(pid, signal.SIGKILL)


def test_share_off_is_refused(ansible, private_ram_vm):
    result = ansible.module('live_update', {'socket': private_ram_vm['qmp_socket'], 'force': True})
    assert result['failed'] and result['step'] == 'preflight' and result['rolled_back'] is True
    assert any('share=off' in r for r in result['reasons']), result['reasons']
    assert qemu_pids_under(private_ram_vm['memory_file']) == [private_ram_vm['pid']]


def test_tcg_full_copy_needs_force(ansible, private_ram_vm, old_qemu):
    """The test guests run under TCG: a RAM copy from QEMU < 9.0 could corrupt them."""
    result = ansible.module('live_update', {'socket': private_ram_vm['qmp_socket'], 'allow_full_copy': True,
                                            'target_binary': old_qemu}, check=True)
    risky = tuple(int(p) for p in result['old']['version'].split('.')[:2]) < (9, 0)
    if risky:
        assert result['failed'] and result['step'] == 'preflight', result
        assert any('under TCG can lose guest writes' in r for r in result['reasons']), result['reasons']
    else:
        assert not result.get('failed') and result['changed'], result
    assert qemu_pids_under(private_ram_vm['memory_file']) == [private_ram_vm['pid']]


def test_destination_killed_during_migration(ansible, private_ram_vm):
    """A full RAM copy at 20 MB/s lasts long enough to kill the destination half-way."""
    vm = private_ram_vm
    ansible.module('migrate_parameters', {'socket': vm['qmp_socket'], 'parameters': {'max-bandwidth': 20000000}})
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in qemu_pids_under(vm['memory_file']):
                if pid != vm['pid'] and _cmdline_has(str(pid), '-incoming'):
                    time.sleep(1.0)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
    thread = threading.Thread(target=killer)
    thread.start()
    result = ansible.module('live_update', {'socket': vm['qmp_socket'], 'force': True, 'allow_full_copy': True})
    thread.join()
    assert killed, ('the destination was not killed', result)
    assert result['failed'] and result['step'] == 'migrate' and result['rolled_back'] is True, result
    assert qemu_pids_under(vm['memory_file']) == [vm['pid']]
    status = ansible.module('qmp_command', {'socket': vm['qmp_socket'], 'command': 'query-status'})
    assert status['result']['status'] == 'running'
    before = vm['log'].summary()
    after = vm['log'].wait(lambda s: s.last_counter >= before.last_counter + 10 and s.mem_ok > before.mem_ok,
                           timeout=60)
    assert len(after.boot_ids) == 1 and after.hb_gaps == [] and after.mem_bad == 0
