# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""UpdateLock: one live update (or stop) per VM at a time, across processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._lock import UpdateLock


# --- UpdateLock -------------------------------------------------------------

SOCKET = '/run/liveupdate-qemu/web1/qmp.sock'


def _hold_lock(runtime_dir, qmp_socket, ready, release):
    with UpdateLock(runtime_dir, qmp_socket, 0):
        ready.set()
        release.wait(10)


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding the lock of SOCKET until release is set."""
    ctx = multiprocessing.get_context('fork')
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), SOCKET, ready, release))
    holder.start()
    assert ready.wait(5)
    yield holder, release
    release.set()
    holder.join(5)


def test_lock_path(tmp_path):
    lock = UpdateLock(str(tmp_path), SOCKET, 0)
    assert lock.path == str(tmp_path / '.locks' / 'run%liveupdate-qemu%web1%qmp.sock.lock')
    assert (os.stat(tmp_path / '.locks').st_mode & 0o777) == 0o700
    with lock:
        with open(lock.path) as handle:
            assert handle.read() == str(os.getpid())
        assert (os.stat(lock.path).st_mode & 0o777) == 0o600
    # released: taken again at once
    with UpdateLock(str(tmp_path), SOCKET, 0):
        pass


def test_lock_held_elsewhere_fails_at_once(tmp_path, lock_holder):
    holder, dummy = lock_holder
    start = time.monotonic()
    with pytest.raises(UpdateFailed) as caught:
        with UpdateLock(str(tmp_path), SOCKET, 0):
            pytest.fail('took a lock that another process holds')
    assert time.monotonic() - start < 0.2
    exc = caught.value
    assert str(exc).startswith('another live update of this VM is in progress (pid %d); lock ' % holder.pid)
    assert (exc.details['step'], exc.details['rolled_back']) == ('lock', True)


def test_lock_of_another_vm_is_free(tmp_path, lock_holder):
    with UpdateLock(str(tmp_path), '/run/liveupdate-qemu/web2/qmp.sock', 0):
        pass


def test_lock_timeout_waits_for_the_holder(tmp_path, lock_holder):
    dummy, release = lock_holder
    timer = threading.Timer(0.3, release.set)
    timer.start()
    start = time.monotonic()
    try:
        with UpdateLock(str(tmp_path), SOCKET, 5) as lock:
            waited = time.monotonic() - start
            with open(lock.path) as handle:
                assert handle.read() == str(os.getpid())
    finally:
        timer.cancel()
    assert 0.25 <= waited < 1.5


def test_lock_timeout_expires(tmp_path, lock_holder):
    holder, dummy = lock_holder
    start = time.monotonic()
    with pytest.raises(UpdateFailed, match=r'in progress \(pid %d\)' % holder.pid):
        with UpdateLock(str(tmp_path), SOCKET, 0.2):
            pass
    assert 0.2 <= time.monotonic() - start < 0.6


@pytest.mark.parametrize('spelling', ['/run/liveupdate-qemu//web1/qmp.sock', '/run/liveupdate-qemu/./web1/qmp.sock',
                                      '/run/liveupdate-qemu/web1/../web1/qmp.sock'])
def test_bug_lock_depends_on_spelling(tmp_path, spelling):
    assert UpdateLock(str(tmp_path), spelling, 0).path == UpdateLock(str(tmp_path), SOCKET, 0).path
