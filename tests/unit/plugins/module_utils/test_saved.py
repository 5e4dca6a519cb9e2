# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_saved: what can be saved, the command line a restore starts, the record, moving memory files."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._saved import (
    SavedRecord, directories_of, move_file, restore_command, restore_refusals, template_of, uses_cpr_reboot,
)

QEMU = '/usr/bin/qemu-system-x86_64'
BASE = [QEMU, '-name', 'guest=web1', '-machine', 'pc,memory-backend=mem0', '-m', '256M',
        '-object', 'memory-backend-file,id=mem0,size=256M,mem-path=/dev/shm/web1.ram,share=on',
        '-qmp', 'unix:/run/vms/web1/qmp.sock,server=on,wait=off', '-pidfile', '/run/vms/web1/qemu.pid']


def shared_vm(**extra):
    vm = dict(status='running', migration='none', capabilities={'x-ignore-shared': False, 'events': False},
              ram_size=256 << 20,
              memory_backends=[dict(id='mem0', type='memory-backend-file', size=256 << 20, share=True,
                                    path='/dev/shm/web1.ram')])
    vm.update(extra)
    return vm


def test_a_vm_on_a_shared_memory_file_can_be_saved():
    assert restore_refusals(BASE, shared_vm()) == []


@pytest.mark.parametrize('extra, why', [
    (['-snapshot'], 'temporary files'),
    (['-drive', 'file=/x.qcow2,snapshot=on'], 'temporary files'),
    (['-serial', 'stdio'], 'stdio'),
    (['-chardev', 'stdio,id=c0'], 'stdio'),
    (['-nographic'], 'stdio'),
    (['-add-fd', 'fd=3,set=1'], 'file descriptors'),
    (['-netdev', 'tap,id=n0,fd=5'], 'tap passed by file descriptor'),
])
def test_what_a_new_process_cannot_reopen_is_refused(extra, why):
    reasons = restore_refusals(BASE + extra, shared_vm())
    assert len(reasons) == 1 and why in reasons[0], reasons


def test_private_or_anonymous_ram_is_refused():
    vm = shared_vm(memory_backends=[dict(id='mem0', type='memory-backend-memfd', size=256 << 20, share=True,
                                         path=None)])
    assert any('not a named file' in r for r in restore_refusals(BASE, vm))
    vm = shared_vm(memory_backends=[dict(id='mem0', type='memory-backend-file', size=256 << 20, share=False,
                                         path='/dev/shm/web1.ram')])
    assert any('share=off' in r for r in restore_refusals(BASE, vm))


def test_a_restore_starts_the_vm_paused_waiting_for_its_state_on_the_pinned_machine():
    argv = restore_command(BASE + ['-daemonize', '-S', '-incoming', 'defer', '-loadvm', 'x'], '/opt/q10', 'pc-i440fx-7.2')
    cmdline = QemuCommandLine.parse(argv)
    assert argv[0] == '/opt/q10'
    assert cmdline.values('machine') == ['pc-i440fx-7.2,memory-backend=mem0']
    assert not cmdline.has('daemonize') and not cmdline.has('loadvm')
    assert cmdline.values('incoming') == ['defer'] and argv.count('-S') == 1
    assert cmdline.values('pidfile') == ['/run/vms/web1/qemu.pid']  # its own names: the old QEMU is gone


def test_a_restore_appends_to_the_console_logs_of_the_vm():
    argv = restore_command(BASE + ['-serial', 'file:/var/log/web1.log',
                                   '-chardev', 'socket,id=s,path=/run/s.sock,server=on,logfile=/var/log/s.log'],
                           QEMU, 'pc-i440fx-7.2')
    cmdline = QemuCommandLine.parse(argv)
    assert cmdline.values('serial') == ['chardev:lu-serial0']
    assert 'file,id=lu-serial0,path=/var/log/web1.log,append=on' in cmdline.values('chardev')
    assert any('logappend=on' in c for c in cmdline.values('chardev'))


def test_a_machine_type_is_pinned_where_the_command_line_had_none():
    argv = [a for a in BASE if a not in ('-machine', 'pc,memory-backend=mem0')]
    assert QemuCommandLine.parse(restore_command(argv, QEMU, 'pc-i440fx-7.2')).values('machine') == ['pc-i440fx-7.2']


def test_the_directories_of_sockets_and_pidfile_are_remembered(tmp_path):
    run = tmp_path / 'vms'
    run.mkdir(mode=0o750)
    argv = [QEMU, '-qmp', 'unix:%s/qmp.sock,server=on,wait=off' % run, '-pidfile', '/nonexistent/dir/x.pid']
    assert directories_of(argv) == {str(run): 0o750}


def test_cpr_reboot_from_qemu_8_2():
    assert not uses_cpr_reboot('7.2.22') and not uses_cpr_reboot('8.1.0')
    assert uses_cpr_reboot('8.2.0') and uses_cpr_reboot('10.0.2')


def test_a_record_is_written_whole_and_read_back(tmp_path):
    record = SavedRecord.of(str(tmp_path), 'web1')
    assert record.read() is None
    record.write(dict(name='web1'))
    assert record.read()['name'] == 'web1'
    with open(record.state_file, 'w') as handle:
        handle.write('state')
    record.remove()
    assert not os.path.exists(record.dir)


def test_a_record_of_another_format_is_refused(tmp_path):
    record = SavedRecord.of(str(tmp_path), 'web1')
    os.makedirs(record.dir)
    with open(record.path, 'w') as handle:
        json.dump(dict(format=99), handle)
    with pytest.raises(InvalidInput, match='not a record of format 1'):
        record.read()


def test_a_record_names_a_valid_vm():
    with pytest.raises(InvalidInput):
        SavedRecord.of('/var/lib/x', '../etc')


def test_moving_a_memory_file_keeps_its_holes_and_contents(tmp_path, monkeypatch):
    src = tmp_path / 'a.ram'
    with open(src, 'wb') as handle:
        handle.truncate(64 << 20)
        handle.seek(8 << 20)
        handle.write(b'guest' * 1000)
    dst = tmp_path / 'b' / 'a.ram'
    dst.parent.mkdir()
    # Another filesystem: rename is refused with EXDEV and the data is copied.
    real_rename = os.rename

    def rename(a, b):
        if str(a) == str(src):
            raise OSError(18, 'Invalid cross-device link')
        return real_rename(a, b)
    monkeypatch.setattr(os, 'rename', rename)
    assert move_file(str(src), str(dst)) == 'copied'
    assert not src.exists()
    assert os.path.getsize(dst) == 64 << 20
    assert os.stat(dst).st_blocks * 512 < 1 << 20, 'the holes were written out'
    with open(dst, 'rb') as handle:
        handle.seek(8 << 20)
        assert handle.read(5000) == b'guest' * 1000


def test_a_move_never_overwrites(tmp_path):
    (tmp_path / 'a').write_text('a')
    (tmp_path / 'b').write_text('b')
    with pytest.raises(InvalidInput, match='already exists'):
        move_file(str(tmp_path / 'a'), str(tmp_path / 'b'))


def test_a_template_memory_file_is_recognised(tmp_path):
    (tmp_path / 'web').mkdir()
    (tmp_path / 'web' / 'memory.ram').write_text('')
    assert template_of(str(tmp_path / 'web' / 'memory.ram')) is None
    (tmp_path / 'web' / 'template.json').write_text('{}')
    assert template_of(str(tmp_path / 'web' / 'memory.ram')) == 'web'
    assert template_of(None) is None


def test_a_live_updated_vm_is_saved_under_its_canonical_names(monkeypatch):
    """After a live update the QEMU's argv keeps the temporary names it was started with, and its
    taps as inherited fds: the save records the names the VM has."""
    from ansible_collections.liveupdate.qemu.plugins.module_utils import _saved
    from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess
    argv = [QEMU, '-qmp', 'unix:/run/vms/web1/qmp.sock.lu-5ecccfd7,server=on,wait=off',
            '-pidfile', '/run/vms/web1/qemu.pid.lu-5ecccfd7',
            '-chardev', 'socket,id=s0,path=/run/vms/web1/serial.sock.lu-5ecccfd7,server=on,wait=off',
            '-netdev', 'tap,id=n0,fd=23,vhost=off', '-netdev', 'tap,id=n1,fd=24', '-S', '-incoming', 'defer']
    monkeypatch.setattr(_saved, 'tap_name_of', lambda pid, fd: {23: 'tap-web1', 24: 'tap-tmp'}[fd])
    monkeypatch.setattr(_saved, 'tap_is_persistent', lambda name: name == 'tap-web1')
    saved = QemuCommandLine.parse(_saved.saved_command(QemuProcess(7, argv, QEMU)))
    assert saved.qmp_sockets() == ['/run/vms/web1/qmp.sock']
    assert saved.values('pidfile') == ['/run/vms/web1/qemu.pid']
    assert saved.chardev_sockets() == {'s0': '/run/vms/web1/serial.sock'}
    assert saved.values('netdev') == ['tap,id=n0,vhost=off,ifname=tap-web1,script=no,downscript=no',
                                      'tap,id=n1,fd=24']
    reasons = restore_refusals(saved.argv(), shared_vm())
    assert len(reasons) == 1 and 'not a persistent interface' in reasons[0], reasons


def test_a_vm_that_is_not_running_or_paused_or_migrating_is_refused():
    assert any('run state is inmigrate' in r for r in restore_refusals(BASE, shared_vm(status='inmigrate')))
    assert any('migration is in progress' in r for r in restore_refusals(BASE, shared_vm(migration='active')))
