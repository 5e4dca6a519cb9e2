# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one exception family of this collection.

Every failure the module_utils raise is a LiveUpdateError; modules turn it
into fail_json in one place (_module.ModuleRunner.fail) with its details.
"""

from __future__ import annotations


class LiveUpdateError(Exception):
    """Base error. ``details`` are merged into the module's failure result."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def __str__(self):
        return self.msg


class InvalidInput(LiveUpdateError):
    """A parameter is wrong; nothing was changed."""
