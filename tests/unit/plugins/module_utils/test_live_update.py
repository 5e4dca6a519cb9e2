# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine's guard of the point of no return: Switch, the only way to resume the source."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._live_update import Switch

from fakes import FakeQMP


def _reaped_child(argv):
    child = subprocess.Popen(argv)
    child.wait()
    return child


@pytest.fixture
def sleeper():
    children = []

    def start():
        child = subprocess.Popen(['sleep', '30'])
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


# --- Switch: the only way to resume the source --------------------------------

def test_switch_refuses_after_commit(sleeper):
    switch = Switch()
    switch.commit()
    qmp = FakeQMP()
    for dest_pid in (None, _reaped_child(['true']).pid, sleeper().pid):
        with pytest.raises(LiveUpdateError, match='refusing to resume the source: the destination may have run'):
            switch.resume_source(qmp, dest_pid)
    assert qmp.calls == []


def test_switch_refuses_while_destination_exists(sleeper):
    dest = sleeper()
    qmp = FakeQMP()
    with pytest.raises(LiveUpdateError, match='refusing to resume the source while destination pid %d exists'
                       % dest.pid):
        Switch().resume_source(qmp, dest.pid)
    assert qmp.calls == []
    # once it is gone (killed, reaped) the source may run again
    dest.kill()
    dest.wait()
    Switch().resume_source(qmp, dest.pid)
    assert qmp.calls == [('cont', None)]


@pytest.mark.parametrize('dest', ['none', 'reaped', 'zombie'])
def test_switch_resumes_source(dest):
    child = None
    if dest == 'none':
        dest_pid = None
    elif dest == 'reaped':
        dest_pid = _reaped_child(['true']).pid
    else:
        child = subprocess.Popen(['true'])
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        dest_pid = child.pid
    qmp = FakeQMP()
    try:
        Switch().resume_source(qmp, dest_pid)
    finally:
        if child:
            child.wait()
    assert qmp.calls == [('cont', None)]
