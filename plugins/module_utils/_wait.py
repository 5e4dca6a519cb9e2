# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one way this collection waits: a monotonic deadline, a predicate polled
at an interval, and a typed timeout that says what was awaited and for how long."""

from __future__ import annotations

import math
import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError


class WaitTimeout(LiveUpdateError):
    """``what`` did not happen within ``timeout`` seconds; ``last`` is the predicate's last value."""

    def __init__(self, what, timeout, last=None):
        super().__init__('timed out after %gs waiting for %s' % (timeout, what), waited_for=what, timeout=timeout)
        self.what = what
        self.timeout = timeout
        self.last = last


class Deadline:
    """A point ``timeout`` seconds from now on the monotonic clock."""

    def __init__(self, timeout):
        if timeout is None or math.isnan(timeout) or timeout < 0:
            raise ValueError('a wait needs a timeout of zero or more seconds, got %r' % (timeout,))
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def remaining(self):
        return max(self.at - time.monotonic(), 0.0)

    def expired(self):
        return time.monotonic() >= self.at


def wait_for(predicate, timeout, what, interval=0.02):
    """Poll ``predicate()`` until it returns a true value, and return that value.
    It is called at least once, even with ``timeout`` 0. Raises WaitTimeout."""
    deadline = Deadline(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if deadline.expired():
            raise WaitTimeout(what, timeout, value)
        time.sleep(min(interval, deadline.remaining()))
