# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU processes: as /proc shows them (argv, binary deleted or replaced,
liveness, the filesystem a path lives on), launched daemonized, stopped by a
ladder, and a file descriptor taken from one of them."""

from __future__ import annotations

import array
import ctypes
import fcntl
import os
import signal
import subprocess
import threading
import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts, is_on
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for

DELETED_SUFFIX = ' (deleted)'
LAUNCH_TIMEOUT = 120
# A process sent SIGKILL is gone once the kernel has torn it down; only a task stuck in the
# kernel (state D, e.g. on a hung filesystem) takes longer than this.
SIGKILL_TIMEOUT = 30
SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 share the generic number


class LaunchError(LiveUpdateError):
    """QEMU exited non-zero at start; ``rc``, ``argv`` and its output are in the details."""


IFF_PERSIST = 0x0800


def is_qemu_argv0(path):
    base = os.path.basename(path)
    return base.startswith('qemu-system-') or base == 'qemu-kvm'


class QemuProcess:
    """One running QEMU: pid, argv (as a QemuCommandLine) and its binary."""

    def __init__(self, pid, argv, exe):
        self.pid = pid
        self.argv = argv
        self.cmdline = QemuCommandLine.parse(argv)
        self.exe_deleted = exe.endswith(DELETED_SUFFIX)
        self.exe = exe[:-len(DELETED_SUFFIX)] if self.exe_deleted else exe

    @classmethod
    def from_pid(cls, pid):
        """The QemuProcess for ``pid``, or None when it is gone or is not QEMU."""
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as handle:
                raw = handle.read()
            exe = os.readlink('/proc/%d/exe' % pid)
        except OSError:
            return None
        argv = [a.decode('utf-8', 'surrogateescape') for a in raw.split(b'\0')[:-1]]
        if not argv or not (is_qemu_argv0(argv[0]) or is_qemu_argv0(exe)):
            return None
        return cls(pid, argv, exe)

    def binary_state(self):
        """'current', 'replaced' (another file now sits at the path: what a package
        upgrade does, renaming a new file over the running one) or 'deleted'."""
        try:
            on_disk = os.stat(self.exe)
        except OSError:
            return 'deleted'
        if self.exe_deleted:
            return 'replaced'
        try:
            running = os.stat('/proc/%d/exe' % self.pid)
        except OSError:
            return 'current'
        return 'current' if (running.st_dev, running.st_ino) == (on_disk.st_dev, on_disk.st_ino) else 'replaced'

    def uses_file(self, path):
        """True when the command line names ``path`` (a memory file, a socket) as
        an argument or as the value of an option key."""
        for arg in self.argv:
            if arg == path or any(value == path for dummy, value in QemuOpts.parse(arg).items):
                return True
        return False

    def maps_privately(self, path):
        """True when ``path`` is on the command line only as the mem-path of ``share=off`` memory
        backends: a clone's copy-on-write mapping of a template's memory file, not its user."""
        private = [b for b in self.cmdline.memory_backends() if b.get('mem-path') == path]
        if not private or any(is_on(b.get('share', 'off')) for b in private):
            return False
        return sum(1 for arg in self.argv if path in arg) == len(private)

    def shares_file(self, path):
        """True when the command line names ``path`` other than as a private mapping: this QEMU
        uses the file itself (guest RAM mapped shared, a socket), not a copy-on-write view of it."""
        return self.uses_file(path) and not self.maps_privately(path)

    def alive(self):
        return process_alive(self.pid)

    def cwd(self):
        """Its working directory (what relative paths on its command line are relative to), or '/'."""
        try:
            path = os.readlink('/proc/%d/cwd' % self.pid)
        except OSError:
            return '/'
        return path if os.path.isdir(path) else '/'


def qemu_processes():
    """Every QEMU process on this host, by pid."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            proc = QemuProcess.from_pid(int(entry))
            if proc is not None:
                found.append(proc)
    return sorted(found, key=lambda p: p.pid)


def users_of(memory_file, exclude_pid=None):
    """QEMU processes whose command line names ``memory_file``, other than as a private mapping."""
    return [p for p in qemu_processes() if p.pid != exclude_pid and p.shares_file(memory_file)]


def remove_files(paths):
    """Remove those of ``paths`` that exist (files a QEMU left, or was to create)."""
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)


def process_state(pid):
    """The state letter of ``pid`` in /proc (R, S, D, T, ...), or None when it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def process_name(pid):
    """The command name of ``pid`` (/proc/PID/comm), or None when it is gone."""
    try:
        with open('/proc/%d/comm' % pid) as handle:
            return handle.read().strip()
    except OSError:
        return None


def process_alive(pid):
    """True while ``pid`` exists and is not a zombie."""
    return process_state(pid) not in (None, 'Z', 'X')


def wait_gone(pid, timeout):
    """Wait until ``pid`` has exited; return True if it did within ``timeout``."""
    try:
        return wait_for(lambda: not process_alive(pid), timeout, 'pid %d to exit' % pid)
    except WaitTimeout:
        return False


def mapped_file_state(pid, path):
    """Whether the file now at ``path`` is one that process ``pid`` maps: 'mapped', 'replaced'
    (another file sits at ``path``), 'deleted' (nothing there), or None (``pid`` unreadable)."""
    try:
        with open('/proc/%s/maps' % pid) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return 'deleted'
    wanted = ('%02x:%02x' % (os.major(st.st_dev), os.minor(st.st_dev)), str(st.st_ino))
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) == 6 and (fields[3], fields[4]) == wanted:
            return 'mapped'
    return 'replaced'


def filesystem_of(path, pid='self'):
    """The filesystem type of ``path`` as process ``pid`` sees it (longest mount prefix)."""
    best, fstype = '', None
    try:
        with open('/proc/%s/mountinfo' % pid) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    path = os.path.normpath(path)
    for line in lines:
        fields = line.split()
        try:
            mount_point = fields[4].replace('\\040', ' ')
            fstype_here = fields[fields.index('-') + 1]
        except (IndexError, ValueError):
            continue
        inside = path == mount_point or path.startswith(mount_point.rstrip('/') + '/')
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, fstype_here
    return fstype


def launch_daemonized(argv, log_path, pass_fds=()):
    """Run a QEMU command line that has -daemonize: QEMU reports start-up errors
    through its exit code and detaches once the machine is built. Its output
    is appended to ``log_path`` (created 0600)."""
    os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    with open(log_path, 'ab') as log:
        start = log.tell()
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False,
                                timeout=LAUNCH_TIMEOUT, pass_fds=tuple(pass_fds)).returncode
        except subprocess.TimeoutExpired:
            rc = None
    if rc != 0:
        raise _launch_failure(argv, log_path, start, rc, LAUNCH_TIMEOUT)


def launch_detached(argv, log_path, ready, timeout=LAUNCH_TIMEOUT, pass_fds=(), cwd='/'):
    """Start a QEMU command line without -daemonize in a session of its own, its output
    appended to ``log_path`` for its whole life (a daemonized QEMU sends it to /dev/null
    once started, and with it the reason a migration fails). Returns once ``ready()``;
    a QEMU that exits first, or is not ready within ``timeout``, is a LaunchError."""
    os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    with open(log_path, 'ab') as log:
        start = log.tell()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,
                                 pass_fds=tuple(pass_fds), start_new_session=True)
    try:
        wait_for(lambda: child.poll() is not None or ready(), timeout, 'QEMU to start', interval=0.005)
    except WaitTimeout:
        child.kill()
        child.wait()
        raise _launch_failure(argv, log_path, start, None, timeout)
    if child.returncode is not None:
        raise _launch_failure(argv, log_path, start, child.returncode, timeout)
    return child


def _launch_failure(argv, log_path, start, rc, timeout):
    with open(log_path, 'rb') as log:
        log.seek(start)
        output = log.read().decode('utf-8', 'replace').strip()[-2000:] or _silent_failure(argv, log_path)
    what = 'did not start within %gs' % timeout if rc is None else 'exited with code %d at start' % rc
    return LaunchError('QEMU %s: %s' % (what, output), argv=argv, rc=rc, output=output)


def _silent_failure(argv, log_path):
    """Why a QEMU may have failed without a word: a full filesystem it writes to."""
    cmdline = QemuCommandLine.parse(argv)
    for path in [log_path] + cmdline.values('pidfile'):
        directory = os.path.dirname(os.path.abspath(path))
        try:
            stat = os.statvfs(directory)
        except OSError:
            continue
        if stat.f_bavail == 0 or stat.f_favail == 0:
            return '(no output: the filesystem of %s is full)' % directory
    return '(no output)'


def shutdown_ladder(pid, request_quit, step_timeout):
    """QMP quit (``request_quit()``, which may raise), then SIGTERM, each given
    ``step_timeout`` seconds, then SIGKILL. Returns the step that ended the process."""
    try:
        request_quit()
        if wait_gone(pid, step_timeout):
            return 'quit'
    except LiveUpdateError:
        pass
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 'SIGTERM'
    if wait_gone(pid, step_timeout):
        return 'SIGTERM'
    kill_and_wait(pid)
    return 'SIGKILL'


def kill_and_wait(pid, timeout=SIGKILL_TIMEOUT):
    """SIGKILL ``pid`` and return once it is gone (or raise)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not wait_gone(pid, timeout):
        raise LiveUpdateError('QEMU pid %d did not exit within %ds of SIGKILL (stuck in the kernel?)'
                              % (pid, timeout), pid=pid)


def take_fd(pid, fd):
    """A duplicate of file descriptor ``fd`` of process ``pid`` (pidfd_getfd, Linux 5.6+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        new = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if new < 0:
            err = ctypes.get_errno()
            raise LiveUpdateError('cannot take fd %d of pid %d: %s' % (fd, pid, os.strerror(err)), pid=pid)
        return new
    finally:
        os.close(pidfd)


class TapHeaderGuard:
    """Keeps the vnet header size of taps as it is while a second QEMU starts on them.

    The size (TUNSETVNETHDRSZ) belongs to the tap device, shared by every fd. A QEMU that
    starts on a tap sets it to 10 bytes (net/tap.c net_tap_fd_init, virtio-net realize and
    reset), until a migration loads its device state; a running QEMU whose guest negotiated
    12 then misframes every packet, both ways. Polled every 0.1 ms: the destination changes it
    three times within a few hundred milliseconds, and nothing else is told of it."""

    GET = 0x800454d7  # TUNGETVNETHDRSZ
    SET = 0x400454d8  # TUNSETVNETHDRSZ

    def __init__(self, fds):
        self.watched = []
        for fd in fds:
            own = os.dup(fd)
            try:
                self.watched.append((own, self._size(own)))
            except OSError:  # not a tap with vnet headers: nothing to keep
                os.close(own)
        self.restored = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='tap-header-guard', daemon=True)

    @classmethod
    def _size(cls, fd):
        value = array.array('i', [0])
        fcntl.ioctl(fd, cls.GET, value)
        return value[0]

    def _restore(self):
        for fd, size in self.watched:
            if self._size(fd) != size:
                fcntl.ioctl(fd, self.SET, array.array('i', [size]))
                self.restored += 1

    def _run(self):
        while not self._stop.is_set():
            self._restore()
            time.sleep(0.0001)

    def start(self):
        if self.watched:
            self._thread.start()
        return self

    def stop(self):
        """Stop watching, after one last restore."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self._restore()
        finally:
            for fd, dummy in self.watched:
                os.close(fd)
            self.watched = []


def tap_fd_of(pid, ifname):
    """The fd number through which ``pid`` holds tap interface ``ifname``, or None."""
    fdinfo = '/proc/%d/fdinfo' % pid
    for entry in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, entry)) as handle:
                if 'iff:\t%s\n' % ifname in handle.read():
                    return int(entry)
        except OSError:
            continue
    return None


def tap_name_of(pid, fd):
    """The tap interface that ``pid`` holds open as ``fd``, or None."""
    try:
        with open('/proc/%d/fdinfo/%d' % (pid, fd)) as handle:
            for line in handle:
                if line.startswith('iff:'):
                    return line.split(None, 1)[1].strip()
    except OSError:
        pass
    return None


def tap_is_persistent(ifname):
    """Whether tap ``ifname`` outlives the processes that hold it (IFF_TUN_PERSIST)."""
    try:
        with open('/sys/class/net/%s/tun_flags' % ifname) as handle:
            return bool(int(handle.read().strip(), 16) & IFF_PERSIST)
    except (OSError, ValueError):
        return False
