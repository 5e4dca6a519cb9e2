# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a successor needs to finish or undo an update whose module process died:
written beside the VM's update lock before each step that changes something
outside this process, removed when the update has ended either way.

Phases, in order: ``spawning`` (a destination may exist; the source's
capabilities are recorded before anything changes them), ``switching`` (the
destination may run the guest from here on: the source must never run again).
"""

from __future__ import annotations

import json
import os

PHASES = ('spawning', 'switching')


class Journal:
    """The journal of the update of one VM (``path``: beside its lock file)."""

    def __init__(self, path):
        self.path = path

    def read(self):
        """The recorded dict, or None when no update of this VM is unfinished."""
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get('phase') in PHASES else None

    def write(self, **record):
        tmp = self.path + '.tmp'
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                json.dump(record, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self.path)
        except OSError:
            self._unlink(tmp)
            raise

    def update(self, **changes):
        record = self.read() or {}
        record.update(changes)
        self.write(**record)

    def clear(self):
        self._unlink(self.path)

    @staticmethod
    def _unlink(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
