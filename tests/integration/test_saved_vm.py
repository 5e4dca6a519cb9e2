# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11: saved_vm saves a running guest's device state to a file and restores it on the
same RAM: the guest goes on (same boot, heartbeat continuing, memory checksum intact), on the
same binary or another, for VMs of liveupdate.qemu.vm and VMs launched by hand; every bad input
is refused with nothing changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import process_alive
from harness import guest_log, guestlog
from operator_vm import peer_pid

INSTALLED = '/usr/bin/qemu-system-x86_64'


@pytest.fixture
def save_dir(tmp_path):
    return str(tmp_path / 'saved')


@pytest.fixture
def disk_dir():
    """Persistent storage (not tmpfs) for memory files that must survive a reboot."""
    path = '/var/tmp/lu-saved-mem-%d' % os.getpid()
    os.makedirs(path, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def saved_vm(ansible, name, state, save_dir, **extra):
    return ansible.module('saved_vm', dict(name=name, state=state, save_dir=save_dir, **extra))


def assert_goes_on(log_path, boot_id, counter, timeout=60):
    """The guest of ``log_path`` printed 20 heartbeats after ``counter`` of the same boot, and
    re-verified its memory after that."""
    summary = guestlog.wait_for(log_path, lambda s: s.last_counter >= counter + 20 and s.mem_ok >= 1, timeout)
    assert summary.boot_ids == [boot_id], summary.boot_ids
    assert summary.mem_bad == 0
    after = [hb for hb in summary.heartbeats if hb[0] > counter]
    assert after and after[0][0] <= counter + 3, 'the guest lost heartbeats or rebooted: %s' % after[:3]


@pytest.fixture
def booted(ansible, guest_spec):
    """A booted test guest of liveupdate.qemu.vm; stopped at the end."""
    names = []

    def boot(name, **extra):
        result = ansible.module('vm', guest_spec(name, **extra))
        assert result['changed'], result
        vm = result['vm']
        guest_log(vm['serial_log']).wait(lambda s: s.mem_ok >= 1, timeout=120)
        names.append(name)
        return vm
    yield boot
    for name in names:
        ansible.module('vm', dict(name=name, state='stopped'))


def test_save_and_restore_go_on_with_the_guest(ansible, booted, save_dir, disk_dir, new_qemu):
    vm = booted('lut-save')
    before = guestlog.parse_file(vm['serial_log'])
    # Live-updated first: its QEMU's command line has the update's temporary names, the VM has not.
    updated = ansible.module('live_update', dict(name='lut-save', target_binary=INSTALLED, force=True))
    assert updated['changed'] and not updated.get('failed'), updated
    saved = saved_vm(ansible, 'lut-save', 'saved', save_dir)
    assert saved['changed'] and not saved.get('failed'), saved
    assert saved['saved']['transfer'] == 'x-ignore-shared'
    assert saved['saved']['state_bytes'] < 2 << 20, 'more than device state was written: %s' % saved['saved']
    assert not process_alive(vm['pid'])
    assert not saved['saved']['synced']  # tmpfs: nothing to flush
    stopped_at = guestlog.parse_file(vm['serial_log']).last_counter

    again = saved_vm(ansible, 'lut-save', 'saved', save_dir)
    assert again['changed'] is False, again
    refused = ansible.module('vm', dict(name='lut-save', state='stopped'))
    assert refused.get('failed') and 'is saved' in refused['msg'], refused
    check = ansible.module('saved_vm', dict(name='lut-save', state='running', save_dir=save_dir), check=True)
    assert check['changed'] and os.path.exists(saved['saved']['state_file']), check

    restored = saved_vm(ansible, 'lut-save', 'running', save_dir)
    assert restored['changed'] and not restored.get('failed'), restored
    assert restored['verified']['ok'], restored
    assert restored['guest_pause_ms'] > 0
    assert not os.path.exists(saved['saved']['dir']), 'the saved state outlived its restore'
    pid = restored['vm']['pid']
    assert peer_pid(vm['qmp_socket']) == pid
    with open(vm['pidfile']) as handle:
        assert int(handle.read()) == pid
    assert_goes_on(vm['serial_log'], before.boot_ids[0], stopped_at)
    caps = ansible.module('qmp_command', dict(name='lut-save', command='query-migrate-capabilities'))
    assert {c['capability']: c['state'] for c in caps['result']}['x-ignore-shared'] is False, \
        'the VM did not get its own capabilities back'
    assert saved_vm(ansible, 'lut-save', 'running', save_dir)['changed'] is False

    # Across a "reboot": memory file on disk, the runtime directory gone, restored onto QEMU 10.0.
    stopped = saved_vm(ansible, 'lut-save', 'saved', save_dir, memory_dir=disk_dir)
    assert stopped['changed'] and not stopped.get('failed'), stopped
    assert stopped['saved']['stored_memory_file'].startswith(disk_dir) and stopped['saved']['synced'], stopped
    assert not os.path.exists(stopped['saved']['memory_file'])
    counter = guestlog.parse_file(vm['serial_log']).last_counter
    shutil.rmtree(os.path.dirname(vm['qmp_socket']))
    # A save whose memory file on disk was not flushed is refused after a host restart.
    record = os.path.join(stopped['saved']['dir'], 'saved.json')
    with open(record) as handle:
        kept = handle.read()
    with open(record, 'w') as handle:
        json.dump(dict(json.loads(kept), synced=False, boot_id='another-boot'), handle)
    unsynced = saved_vm(ansible, 'lut-save', 'running', save_dir)
    assert unsynced.get('failed') and 'not flushed' in unsynced['msg'], unsynced
    with open(record, 'w') as handle:
        handle.write(kept)
    onto = saved_vm(ansible, 'lut-save', 'running', save_dir, binary=new_qemu)
    assert onto['changed'] and not onto.get('failed'), onto
    # (the staged build's bin/ wrapper runs its usr/bin binary)
    assert os.path.realpath('/proc/%d/exe' % onto['vm']['pid']).startswith(os.path.dirname(os.path.dirname(new_qemu)))
    assert os.path.exists(stopped['saved']['memory_file']) and not os.listdir(disk_dir)
    assert_goes_on(vm['serial_log'], before.boot_ids[0], counter)


def test_bad_restores_are_refused_and_change_nothing(ansible, booted, save_dir, bare_spec, new_qemu, tmp_path):
    vm = booted('lut-save-bad')
    saved = saved_vm(ansible, 'lut-save-bad', 'saved', save_dir)['saved']
    record = os.path.join(saved['dir'], 'saved.json')

    def refused(expected, **extra):
        with open(record, 'rb') as handle:
            kept = handle.read()
        result = saved_vm(ansible, 'lut-save-bad', 'running', save_dir, **extra)
        assert result.get('failed') and expected in result['msg'], result
        with open(record, 'rb') as handle:
            assert handle.read() == kept, 'a refused restore changed the record'
        assert not [p for p in os.listdir('/proc') if p.isdigit() and _maps(p, saved['memory_file'])]
        return result

    # A state file that is not the one recorded.
    with open(saved['state_file'], 'rb') as handle:
        state = handle.read()
    with open(saved['state_file'], 'wb') as handle:
        handle.write(state[:-1] + bytes([state[-1] ^ 1]))
    refused('does not match its record')
    with open(saved['state_file'], 'wb') as handle:
        handle.write(state)
    # A binary that cannot take it: cpr-reboot is not needed here, but the machine type must exist.
    with open(record) as handle:
        data = json.load(handle)
    data['machine'] = 'pc-q35-99.0'
    with open(record, 'w') as handle:
        json.dump(data, handle)
    refused('no machine type pc-q35-99.0')
    data['machine'] = saved['machine']
    with open(record, 'w') as handle:
        json.dump(data, handle)
    # Memory written after the save (another process, a stray restore, a copy over it).
    stat = os.stat(saved['memory_file'])
    os.utime(saved['memory_file'], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    refused('changed after the save')
    os.utime(saved['memory_file'], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # The same VM running again (here: started by hand on its memory file).
    os.rename(saved['memory_file'], saved['memory_file'] + '.away')
    refused('is missing')
    os.rename(saved['memory_file'] + '.away', saved['memory_file'])
    # The VM's configuration changed after the save.
    vm_json = os.path.join(os.path.dirname(vm['qmp_socket']), 'vm.json')
    with open(vm_json) as handle:
        kept_state = handle.read()
    with open(vm_json, 'w') as handle:
        json.dump(dict(json.loads(kept_state), argv=['qemu', '-m', '1G']), handle)
    refused('was reconfigured after its save')
    with open(vm_json, 'w') as handle:
        handle.write(kept_state)

    restored = saved_vm(ansible, 'lut-save-bad', 'running', save_dir)
    assert restored['changed'] and restored['verified']['ok'], restored

    # A save that cannot write its state (a full filesystem) leaves the VM running as it was.
    full = tmp_path / 'full'
    full.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', str(full)], check=True)
    try:
        failed = saved_vm(ansible, 'lut-save-bad', 'saved', str(full))
        assert failed.get('failed') and 'saving the device state failed' in failed['msg'], failed
        assert os.listdir(full / 'lut-save-bad') == []
    finally:
        subprocess.run(['umount', str(full)], check=True)
    assert ansible.module('qmp_command', dict(name='lut-save-bad', command='query-status'))['result']['status'] \
        == 'running'
    caps = ansible.module('qmp_command', dict(name='lut-save-bad', command='query-migrate-capabilities'))
    assert {c['capability']: c['state'] for c in caps['result']}['x-ignore-shared'] is False

    # Saving what cannot be restored: RAM that is not a named shared file (memfd, QEMU 10).
    memfd = ansible.module('vm', bare_spec('lut-save-memfd', binary=new_qemu, memory_backend='memfd'))
    try:
        result = saved_vm(ansible, 'lut-save-memfd', 'saved', save_dir)
        assert result.get('failed') and 'not a named file' in result['msg'], result
        assert process_alive(memfd['vm']['pid'])
        assert ansible.module('qmp_command', dict(name='lut-save-memfd', command='query-status'))['result']['status'] \
            == 'running'
    finally:
        ansible.module('vm', dict(name='lut-save-memfd', state='stopped'))
    missing = saved_vm(ansible, 'lut-no-such-vm', 'running', save_dir)
    assert missing.get('failed') and 'not running and has no saved state' in missing['msg'], missing


def _maps(pid, path):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as handle:
            return path.encode() in handle.read()
    except OSError:
        return False


def test_a_vm_launched_by_hand_is_saved_and_restored(ansible, operator_vm, save_dir):
    vm = operator_vm('lu-save-op', serial='file')
    summary = vm.wait_serial_file(lambda s: s.mem_ok >= 1, 120)
    saved = saved_vm(ansible, 'lu-save-op', 'saved', save_dir, socket=vm.qmp_socket)
    assert saved['changed'] and not saved.get('failed'), saved
    assert vm.pids() == []
    counter = vm.serial_summary().last_counter
    restored = saved_vm(ansible, 'lu-save-op', 'running', save_dir)
    assert restored['changed'] and restored['verified']['ok'], restored
    vm.pid = restored['vm']['pid']
    assert vm.pids() == [vm.pid] and vm.pidfile_pid() == vm.pid and vm.status() == 'running'
    assert_goes_on(vm.serial_file, summary.boot_ids[0], counter)
    assert vm.serial_summary().heartbeats[0][0] == 1, 'the console log was truncated by the restore'


def test_qemu_10_saves_in_cpr_reboot_mode(ansible, booted, save_dir, new_qemu):
    vm = booted('lut-save-cpr', binary=new_qemu)
    boot_id = guestlog.parse_file(vm['serial_log']).boot_ids[0]
    saved = saved_vm(ansible, 'lut-save-cpr', 'saved', save_dir)
    assert saved['changed'] and saved['saved']['transfer'] == 'cpr-reboot', saved
    assert saved['saved']['state_bytes'] < 2 << 20
    counter = guestlog.parse_file(vm['serial_log']).last_counter
    # A state saved in cpr-reboot mode needs a QEMU that has the mode.
    older = saved_vm(ansible, 'lut-save-cpr', 'running', save_dir, binary=INSTALLED)
    assert older.get('failed') and 'cpr-reboot' in older['msg'], older
    restored = saved_vm(ansible, 'lut-save-cpr', 'running', save_dir)
    assert restored['changed'] and restored['verified']['ok'], restored
    assert_goes_on(vm['serial_log'], boot_id, counter)
    params = ansible.module('qmp_command', dict(name='lut-save-cpr', command='query-migrate-parameters'))
    assert params['result']['mode'] == 'normal', 'the VM did not get its migration mode back'
