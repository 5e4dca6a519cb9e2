# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ending the source after the switch (stop_source)."""

from __future__ import annotations

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils import _takeover
from ansible_collections.liveupdate.qemu.plugins.module_utils._takeover import stop_source

from fakes import FakeQMP


# --- the source is stopped without punching out the shared RAM -------------

def test_stop_source_turns_discard_data_off_first(monkeypatch):
    """A memory-backend-file with discard-data=on would free the guest's pages of the shared
    file when the source exits; the destination runs on that file by then."""
    ladder = []
    monkeypatch.setattr(_takeover, 'shutdown_ladder',
                        lambda pid, request_quit, step: ladder.append((pid, step)) or request_quit() or 'quit')
    backends = [{'id': 'mem0', 'type': 'memory-backend-file'}, {'id': 'pc.ram', 'type': 'memory-backend-ram'}]
    qmp = FakeQMP()
    assert stop_source(qmp, 4242, backends, [], 3) == 'quit'
    assert qmp.calls == [('qom-set', {'path': '/objects/mem0', 'property': 'discard-data', 'value': False}),
                         ('quit', None)]
    assert ladder == [(4242, 3)]


def test_stop_source_with_a_tap_downscript_is_killed(monkeypatch):
    """quit would run the tap's downscript on the interface the destination now uses."""
    killed = []
    monkeypatch.setattr(_takeover, 'shutdown_ladder', lambda *args: pytest.fail('quit would run the downscript'))
    monkeypatch.setattr(_takeover, 'kill_and_wait', killed.append)
    qmp = FakeQMP()
    backends = [{'id': 'mem0', 'type': 'memory-backend-file'}]
    assert stop_source(qmp, 4242, backends, [('net0', 'default')], 3) == 'SIGKILL'
    assert killed == [4242]
    assert qmp.calls == [('qom-set', {'path': '/objects/mem0', 'property': 'discard-data', 'value': False})]
