# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU processes as /proc shows them: argv, binary (deleted or replaced),
liveness, and the filesystem a path lives on."""

from __future__ import annotations

import os
import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts

DELETED_SUFFIX = ' (deleted)'


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

    def alive(self):
        return process_alive(self.pid)


def qemu_processes():
    """Every QEMU process on this host, by pid."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            proc = QemuProcess.from_pid(int(entry))
            if proc is not None:
                found.append(proc)
    return sorted(found, key=lambda p: p.pid)


def process_alive(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            state = handle.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def wait_gone(pid, timeout, interval=0.02):
    """Wait until ``pid`` has exited; return True if it did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


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
