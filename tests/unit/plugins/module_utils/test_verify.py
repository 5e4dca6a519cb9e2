# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The checks after a switch, on real threads and commands (the QMP side is a stand-in)."""

from __future__ import annotations

import os
import threading
import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._verify import (
    check_health_command, thread_cpu_ns, verify_guest,
)

from fakes import FakeQMP


def _spin(stop):
    while not stop.is_set():
        sum(range(1000))


def _spinning_thread():
    stop = threading.Event()
    thread = threading.Thread(target=_spin, args=(stop,))
    thread.start()
    return thread, stop


def test_thread_cpu_ns():
    assert thread_cpu_ns(os.getpid(), threading.get_native_id()) > 0
    assert thread_cpu_ns(os.getpid(), 2 ** 22 + 1) is None


def test_running_vcpus_pass():
    thread, stop = _spinning_thread()
    try:
        qmp = FakeQMP(query_status={'status': 'running'}, query_cpus_fast=[{'thread-id': thread.native_id}])
        result = verify_guest(qmp, os.getpid(), 'running', 2)
    finally:
        stop.set()
        thread.join()
    assert result['ok'], result
    assert result['checks']['vcpus']['vcpu_ns'] > 0


def test_vcpus_that_do_not_run_fail():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    time.sleep(0.1)  # past its start-up, blocked for good
    try:
        qmp = FakeQMP(query_status={'status': 'running'}, query_cpus_fast=[{'thread-id': thread.native_id}])
        start = time.monotonic()
        result = verify_guest(qmp, os.getpid(), 'running', 0.3)
    finally:
        stop.set()
        thread.join()
    assert 0.3 <= time.monotonic() - start < 2
    assert not result['ok']
    assert result['checks']['vcpus'] == dict(ok=False, vcpu_ns=0)


def test_run_state_must_be_what_it_was():
    qmp = FakeQMP(query_status={'status': 'paused'})
    result = verify_guest(qmp, os.getpid(), 'running', 0.1)
    assert result == dict(ok=False, checks=dict(run_state=dict(ok=False, status='paused', expected='running')))
    assert verify_guest(qmp, os.getpid(), 'paused', 0.1)['ok']


def test_health_command():
    assert check_health_command('test "$LIVEUPDATE_VM" = web1', 5, dict(LIVEUPDATE_VM='web1')) == dict(
        ok=True, rc=0, output='')
    assert check_health_command('echo sick; exit 3', 5, {}) == dict(ok=False, rc=3, output='sick')
    assert check_health_command('sleep 5', 0.2, {}) == dict(ok=False, rc=None, output='did not finish within 0.2s')
