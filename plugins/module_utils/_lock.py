# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One live update (or stop) per VM at a time: an flock on a file named after
the VM's canonical QMP socket, under ``runtime_dir/.locks``."""

from __future__ import annotations

import fcntl
import os

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for


def _lock_failed(msg):
    return UpdateFailed(msg, step='lock', rolled_back=True)


def lock_path(runtime_dir, qmp_socket, suffix='.lock'):
    """The lock file (or, with another ``suffix``, a file beside it: the update's journal, the
    destination's log) of the VM whose canonical QMP socket is ``qmp_socket``."""
    key = os.path.normpath(canonical_path(os.path.abspath(qmp_socket)))
    return os.path.join(runtime_dir, '.locks', key.strip('/').replace('/', '%') + suffix)


class UpdateLock:
    """Held while a VM is updated or stopped; waits up to ``wait`` seconds for another holder."""

    def __init__(self, runtime_dir, qmp_socket, wait):
        self.path = lock_path(runtime_dir, qmp_socket)
        self.runtime_dir = runtime_dir
        self.qmp_socket = qmp_socket
        self.wait = wait
        self.fd = None
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise self._unusable(exc)

    def sibling(self, suffix):
        """A file of the same VM beside the lock (see lock_path)."""
        return lock_path(self.runtime_dir, self.qmp_socket, suffix)

    def _unusable(self, exc):
        return _lock_failed('cannot use the update lock %s: %s' % (self.path, exc))

    def _try_lock(self):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._unusable(exc)
        try:
            wait_for(self._try_lock, self.wait, 'the update lock %s' % self.path, interval=0.05)
        except WaitTimeout:
            holder = os.pread(self.fd, 64, 0).decode('ascii', 'replace').strip()
            os.close(self.fd)
            raise _lock_failed('another live update of this VM is in progress (pid %s); lock %s'
                               % (holder or '?', self.path))
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
