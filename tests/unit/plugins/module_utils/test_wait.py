# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one waiter: a predicate polled against a monotonic deadline."""

from __future__ import annotations

import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import Deadline, WaitTimeout, wait_for


def test_returns_the_predicates_value():
    calls = iter([None, 0, 'ready'])
    assert wait_for(lambda: next(calls), 5, 'something', interval=0.001) == 'ready'


def test_zero_timeout_polls_once():
    calls = []
    assert wait_for(lambda: calls.append(1) or True, 0, 'something')
    assert calls == [1]
    with pytest.raises(WaitTimeout):
        wait_for(lambda: False, 0, 'something')


def test_timeout_says_what_and_how_long():
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        wait_for(lambda: [], 0.2, 'pid 42 to exit', interval=0.01)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 1
    exc = caught.value
    assert isinstance(exc, LiveUpdateError)
    assert str(exc) == 'timed out after 0.2s waiting for pid 42 to exit'
    assert (exc.what, exc.timeout, exc.last) == ('pid 42 to exit', 0.2, [])
    assert exc.details == dict(waited_for='pid 42 to exit', timeout=0.2)


def test_predicate_errors_pass_through():
    def boom():
        raise LiveUpdateError('peer went away')
    with pytest.raises(LiveUpdateError, match='peer went away'):
        wait_for(boom, 1, 'something')


@pytest.mark.parametrize('timeout', [-1, float('nan'), None])
def test_nonsense_timeouts_are_refused(timeout):
    with pytest.raises(ValueError, match='zero or more seconds'):
        wait_for(lambda: True, timeout, 'something')


def test_deadline():
    deadline = Deadline(0.05)
    assert not deadline.expired()
    assert 0 < deadline.remaining() <= 0.05
    time.sleep(0.06)
    assert deadline.expired()
    assert deadline.remaining() == 0.0
