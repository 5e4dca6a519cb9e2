# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The journal an update leaves for its successor."""

from __future__ import annotations

import os

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._journal import Journal


def test_write_update_read_clear(tmp_path):
    journal = Journal(str(tmp_path / 'vm.journal'))
    assert journal.read() is None
    journal.write(phase='spawning', source_pid=42, capabilities={'x-ignore-shared': False})
    assert (os.stat(journal.path).st_mode & 0o777) == 0o600
    journal.update(phase='switching', dest_pid=43)
    assert journal.read() == dict(phase='switching', source_pid=42, dest_pid=43,
                                  capabilities={'x-ignore-shared': False})
    assert os.listdir(tmp_path) == ['vm.journal']
    journal.clear()
    journal.clear()  # twice: nothing there is fine
    assert journal.read() is None


@pytest.mark.parametrize('content', ['', '{', '[]', '{"phase": "done"}', '{"source_pid": 1}'])
def test_unreadable_or_foreign_content_is_no_journal(tmp_path, content):
    (tmp_path / 'vm.journal').write_text(content)
    assert Journal(str(tmp_path / 'vm.journal')).read() is None


def test_failed_write_leaves_no_temporary(tmp_path):
    journal = Journal(str(tmp_path / 'missing-dir' / 'vm.journal'))
    with pytest.raises(OSError):
        journal.write(phase='spawning')
    assert not (tmp_path / 'missing-dir').exists()
