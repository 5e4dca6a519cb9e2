# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stand-ins shared by the unit tests: a QMP session that records calls."""

from __future__ import annotations


class FakeQMP:
    """Records execute() calls; answers from ``replies`` (command -> value)."""

    def __init__(self, **replies):
        self.replies = replies
        self.calls = []

    def execute(self, command, arguments=None):
        self.calls.append((command, arguments))
        return self.replies.get(command.replace('-', '_'), {})
