# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    QemuProcess, filesystem_of, is_qemu_argv0, mapped_file_state, process_alive, qemu_processes, wait_gone,
)


def _mounts():
    """{mount point: fstype} from /proc/self/mounts (the last mount on a point wins)."""
    found = {}
    with open('/proc/self/mounts') as handle:
        for line in handle:
            fields = line.split()
            found[fields[1].replace('\\040', ' ')] = fields[2]
    return found


# --- filesystem_of ----------------------------------------------------------

@pytest.fixture
def shm_is_tmpfs():
    if _mounts().get('/dev/shm') != 'tmpfs':
        pytest.skip('/dev/shm is not a tmpfs mount here')


@pytest.mark.parametrize('path', ['/dev/shm', '/dev/shm/', '/dev/shm/liveupdate-qemu-web-1.ram',
                                  '/dev/shm/no/such/dir/x', '/dev/./shm'])
def test_filesystem_of_dev_shm(shm_is_tmpfs, path):
    assert filesystem_of(path) == 'tmpfs'


def test_filesystem_of_prefix_is_a_path_component(shm_is_tmpfs):
    # /dev/shmx is not under /dev/shm: it is on whatever /dev is on
    assert filesystem_of('/dev/shmx') == filesystem_of('/dev')


def test_filesystem_of_root():
    assert filesystem_of('/') == _mounts()['/']


def test_filesystem_of_proc():
    assert filesystem_of('/proc/self/status') == 'proc'


def test_filesystem_of_other_pid(shm_is_tmpfs):
    assert filesystem_of('/dev/shm/x', pid=os.getpid()) == 'tmpfs'


def test_filesystem_of_gone_pid():
    assert filesystem_of('/dev/shm', pid=_reaped_pid()) is None


# --- process_alive / wait_gone ----------------------------------------------

def _reaped_pid():
    child = subprocess.Popen(['true'])
    child.wait()
    return child.pid


def test_process_alive_self():
    assert process_alive(os.getpid())


def test_process_alive_reaped_child():
    assert not process_alive(_reaped_pid())


def test_process_alive_zombie():
    child = subprocess.Popen(['true'])
    try:
        # wait for the exit without reaping: the child stays a zombie
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not process_alive(child.pid)
    finally:
        child.wait()


def test_process_alive_running_child():
    child = subprocess.Popen(['sleep', '10'])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_wait_gone():
    child = subprocess.Popen(['sleep', '0.1'])
    start = time.monotonic()
    # the zombie counts as gone: wait_gone does not need the parent to reap
    assert wait_gone(child.pid, 5)
    assert time.monotonic() - start < 2
    child.wait()
    start = time.monotonic()
    assert not wait_gone(os.getpid(), 0.1)
    assert 0.1 <= time.monotonic() - start < 1


# --- QemuProcess ------------------------------------------------------------

@pytest.mark.parametrize('path, expected', [
    ('/usr/bin/qemu-system-x86_64', True),
    ('qemu-system-aarch64', True),
    ('/usr/libexec/qemu-kvm', True),
    ('/usr/bin/qemu-img', False),
    ('/usr/bin/python3', False),
    ('/opt/qemu-system-x86_64/bin/sh', False),
])
def test_is_qemu_argv0(path, expected):
    assert is_qemu_argv0(path) is expected


MEMORY_FILE = '/dev/shm/liveupdate-qemu-web.ram'


@pytest.fixture
def fake_qemu(tmp_path):
    """A process that looks like QEMU in /proc: a copy of sh named qemu-system-x86_64
    (sleep is not its last command, so sh does not exec into it)."""
    exe = tmp_path / 'qemu-system-x86_64'
    shutil.copy2(shutil.which('sh'), exe)
    argv = [str(exe), '-c', 'sleep 30; exit 0', 'sh',
            '-name', 'guest=web', '-object', 'memory-backend-file,id=mem0,size=64M,mem-path=%s,share=on' % MEMORY_FILE,
            '-qmp', 'unix:/run/liveupdate-qemu/web/qmp.sock,server=on,wait=off']
    child = subprocess.Popen(argv)
    # right after exec, /proc/PID/cmdline can still read empty for a moment
    deadline = time.monotonic() + 5
    while QemuProcess.from_pid(child.pid) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    yield child, exe, argv
    child.kill()
    child.wait()


def test_from_pid(fake_qemu):
    child, exe, argv = fake_qemu
    proc = QemuProcess.from_pid(child.pid)
    assert proc is not None
    assert (proc.pid, proc.argv, proc.exe, proc.exe_deleted) == (child.pid, argv, str(exe), False)
    assert proc.cmdline.name() == 'web'
    assert proc.cmdline.qmp_sockets() == ['/run/liveupdate-qemu/web/qmp.sock']
    assert proc.alive()
    assert proc.uses_file(MEMORY_FILE)
    assert not proc.uses_file('/dev/shm/liveupdate-qemu-db.ram')
    assert proc.binary_state() == 'current'
    assert child.pid in [p.pid for p in qemu_processes()]


def test_from_pid_deleted_binary(fake_qemu):
    child, exe, dummy = fake_qemu
    exe.unlink()
    proc = QemuProcess.from_pid(child.pid)
    assert (proc.exe, proc.exe_deleted) == (str(exe), True)
    assert proc.binary_state() == 'deleted'


def test_from_pid_binary_upgraded(fake_qemu):
    child, exe, dummy = fake_qemu
    # a package upgrade renames the new file over the old path: the running
    # inode is unlinked, so the kernel reports the exe as deleted
    new = exe.with_name('qemu-system-x86_64.new')
    shutil.copy2(exe, new)
    os.rename(new, exe)
    proc = QemuProcess.from_pid(child.pid)
    assert (proc.exe, proc.exe_deleted) == (str(exe), True)
    assert proc.binary_state() == 'replaced'


def test_from_pid_not_qemu():
    assert QemuProcess.from_pid(os.getpid()) is None  # python
    assert QemuProcess.from_pid(_reaped_pid()) is None


def test_process_exe_deleted_suffix():
    proc = QemuProcess(1, ['/usr/bin/qemu-system-x86_64', '-S'], '/usr/bin/qemu-system-x86_64 (deleted)')
    assert (proc.exe, proc.exe_deleted) == ('/usr/bin/qemu-system-x86_64', True)
    # /usr/bin/qemu-system-x86_64 exists here: a new file sits where the deleted one was
    assert proc.binary_state() == ('replaced' if os.path.exists('/usr/bin/qemu-system-x86_64') else 'deleted')


def test_binary_state_compares_running_exe():
    # pid = this python: its /proc exe is sys.executable
    assert QemuProcess(os.getpid(), ['qemu-system-x86_64'], os.path.realpath(sys.executable)).binary_state() == 'current'
    assert QemuProcess(os.getpid(), ['qemu-system-x86_64'], shutil.which('sh')).binary_state() == 'replaced'
    assert QemuProcess(os.getpid(), ['qemu-system-x86_64'], '/nonexistent/qemu').binary_state() == 'deleted'


@pytest.mark.parametrize('other_argv', [
    # VM 'web.ram' next to VM 'web': its memory file name starts with web's
    ['qemu-system-x86_64', '-object',
     'memory-backend-file,id=mem0,size=64M,mem-path=/dev/shm/liveupdate-qemu-web.ram.ram,share=on'],
    # VM 'web' of another runtime/memory directory
    ['qemu-system-x86_64', '-object',
     'memory-backend-file,id=mem0,size=64M,mem-path=/srv/dev/shm/liveupdate-qemu-web.ram,share=on'],
])
def test_uses_file_is_exact(other_argv):
    other = QemuProcess(12345, other_argv, '/usr/bin/qemu-system-x86_64')
    assert not other.uses_file(MEMORY_FILE)


# --- mapped_file_state: is the memory file at its path the one QEMU maps? -------

MAPPER = r'''
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
print('ready', flush=True)
sys.stdin.read()
'''


@pytest.fixture
def mapper(tmp_path):
    """A process that maps tmp_path/ram shared, as QEMU maps a memory file."""
    path = tmp_path / 'ram'
    path.write_bytes(b'\0' * 4096)
    child = subprocess.Popen([sys.executable, '-c', MAPPER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    assert child.stdout.readline() == b'ready\n'
    yield child, str(path)
    child.kill()
    child.wait()


def test_mapped_file_state(mapper, tmp_path):
    child, path = mapper
    assert mapped_file_state(child.pid, path) == 'mapped'
    assert mapped_file_state(child.pid, str(tmp_path / 'other')) == 'deleted'
    (tmp_path / 'other').write_bytes(b'x')
    assert mapped_file_state(child.pid, str(tmp_path / 'other')) == 'replaced'
    os.symlink(path, str(tmp_path / 'link'))
    assert mapped_file_state(child.pid, str(tmp_path / 'link')) == 'mapped'
    os.rename(path, path + '.moved')
    (tmp_path / 'ram').write_bytes(b'\0' * 4096)
    assert mapped_file_state(child.pid, path) == 'replaced'
    os.unlink(path)
    assert mapped_file_state(child.pid, path) == 'deleted'


def test_mapped_file_state_unlinked(mapper):
    child, path = mapper
    os.unlink(path)
    assert mapped_file_state(child.pid, path) == 'deleted'
    assert mapped_file_state(2 ** 22 + 1, path) is None
