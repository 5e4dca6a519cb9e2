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
        self._next = None  # the changes prepare() wrote to PATH.next

    def read(self):
        """The recorded dict, or None when no update of this VM is unfinished."""
        data = self._read(self.path)
        return data if isinstance(data, dict) and data.get('phase') in PHASES else None

    def write(self, **record):
        self._discard_next()
        self._store(self.path + '.tmp', record)
        os.rename(self.path + '.tmp', self.path)

    def update(self, **changes):
        """Record ``changes``: a single rename when prepare() wrote them already."""
        if self._next is not None and self._next == changes:
            os.rename(self.path + '.next', self.path)
            self._next = None
            return
        record = self.read() or {}
        record.update(changes)
        self.write(**record)

    def prepare(self, **changes):
        """Write what update(**changes) will record, so that it is then one rename: for the
        update made while the guest is paused (the switch)."""
        record = self.read() or {}
        record.update(changes)
        self._store(self.path + '.next', record)
        self._next = changes

    def clear(self):
        self._discard_next()
        self._unlink(self.path)

    def _discard_next(self):
        self._next = None
        self._unlink(self.path + '.next')

    @staticmethod
    def _read(path):
        try:
            with open(path) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def _store(self, path, record):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                json.dump(record, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            self._unlink(path)
            raise

    @staticmethod
    def _unlink(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
