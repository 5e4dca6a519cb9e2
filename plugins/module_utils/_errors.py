# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one exception family of this collection.

    LiveUpdateError          base; ``details`` go into the module's failure result
     +-- InvalidInput        a parameter is wrong; nothing was changed
     +-- UpdateFailed        a live update stopped at ``step`` (``rolled_back``: the source runs as before)
     +-- QMPError ...        _qmp.py
     +-- WaitTimeout         _wait.py
     +-- LaunchError         _proc.py

Modules turn every one of them (and OSError) into fail_json in one place,
_module.LiveUpdateModule.run.
"""

from __future__ import annotations

MAX_MESSAGE = 2000


def shorten(text, limit=MAX_MESSAGE):
    """``text`` cut to ``limit`` characters: a message quotes peers and inputs, which may be huge."""
    text = str(text)
    if len(text) <= limit:
        return text
    return '%s... (%d more characters)' % (text[:limit], len(text) - limit)


class LiveUpdateError(Exception):
    """Base error. ``details`` are merged into the module's failure result."""

    def __init__(self, msg, **details):
        msg = shorten(msg)
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def __str__(self):
        return self.msg


class InvalidInput(LiveUpdateError):
    """A parameter is wrong; nothing was changed."""


class UpdateFailed(LiveUpdateError):
    """The update stopped at ``step``; ``rolled_back`` tells whether the source runs as before."""
