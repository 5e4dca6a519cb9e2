# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The order of QMP commands of each transfer mode (the real runs are in tests/integration)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._transfer import (
    CprTransfer, FullCopy, IgnoreShared, transfer_for,
)

from fakes import FakeQMP

SOCK = '/run/lu/web/qmp.sock.lu-0123abcd'


class Session(FakeQMP):
    """A FakeQMP whose MIGRATION event ends with ``status``, recording into a shared log."""

    def __init__(self, name, log, status='completed'):
        super().__init__()
        self.name, self.log, self.status = name, log, status

    def execute(self, command, arguments=None):
        self.log.append((self.name, command, arguments))
        return super().execute(command, arguments)

    def drain_events(self):
        pass

    def wait_event(self, name, timeout, predicate=None):
        self.log.append((self.name, 'wait ' + name, None))
        return {'event': name, 'data': {'status': self.status}}


class Dest:
    """The Spawned of the engine: a monitor to connect (connect() logs when)."""

    def __init__(self, log, status='completed'):
        self.log = log
        self.qmp = Session('dest', log, status)

    def connect(self, timeout):
        self.log.append(('dest', 'connect', None))

    def output(self):
        return 'qemu-system-x86_64: load of migration failed'


def _commands(log):
    return [(who, command) for who, command, dummy in log]


def test_cpr_transfer_sends_migrate_before_touching_the_destination():
    log = []
    src = Session('src', log)
    CprTransfer().run(src, Dest(log), SOCK, 5, started=lambda: log.append(('engine', 'started', None)))
    assert _commands(log) == [
        ('src', 'migrate-set-capabilities'), ('src', 'migrate-set-parameters'), ('src', 'migrate'),
        ('engine', 'started'), ('dest', 'connect'), ('dest', 'migrate-set-capabilities'),
        ('dest', 'migrate-incoming'), ('dest', 'wait MIGRATION')]
    assert log[1][2] == {'mode': 'cpr-transfer'}
    main = {'channel-type': 'main', 'addr': {'transport': 'socket', 'type': 'unix', 'path': SOCK + '.migrate'}}
    cpr = {'channel-type': 'cpr', 'addr': {'transport': 'socket', 'type': 'unix', 'path': SOCK + '.cpr'}}
    assert log[2][2] == {'channels': [main, cpr]}
    assert log[6][2] == {'channels': [main]}


def test_cpr_transfer_destination_command_line():
    mode = CprTransfer()
    options = mode.incoming_options(SOCK)
    assert options[0] == ('incoming', 'defer')
    assert json.loads(options[1][1]) == {'channel-type': 'cpr', 'addr': {'transport': 'socket', 'type': 'unix',
                                                                         'path': SOCK + '.cpr'}}
    # the destination has no monitor before the source's migrate: spawn waits for the cpr socket
    assert mode.ready_path(SOCK) == SOCK + '.cpr' and not mode.monitor_before_migrate
    assert mode.temporaries(SOCK) == [SOCK + '.migrate', SOCK + '.cpr']


@pytest.mark.parametrize('before, restored', [('normal', [('migrate-set-parameters', {'mode': 'normal'})]),
                                              ('cpr-reboot', [('migrate-set-parameters', {'mode': 'cpr-reboot'})]),
                                              (None, [])])
def test_cpr_transfer_gives_the_source_its_mode_back(before, restored):
    src = FakeQMP()
    CprTransfer().restore_source(src, {'migration_mode': before})
    assert src.calls == restored


def test_ignore_shared_migrates_over_a_ready_monitor():
    log = []
    mode = IgnoreShared()
    mode.run(Session('src', log), Dest(log), SOCK, 5)
    assert _commands(log) == [('dest', 'migrate-set-capabilities'), ('dest', 'migrate-incoming'),
                              ('src', 'migrate-set-capabilities'), ('src', 'migrate'), ('dest', 'wait MIGRATION')]
    assert log[0][2]['capabilities'] == [{'capability': 'events', 'state': True},
                                         {'capability': 'x-ignore-shared', 'state': True}]
    assert mode.incoming_options(SOCK) == [('incoming', 'defer')] and mode.ready_path(SOCK) == SOCK


def test_a_failed_migration_says_why():
    log = []
    with pytest.raises(UpdateFailed, match='reports the migration failed: qemu-system-x86_64: load of migration'):
        CprTransfer().run(Session('src', log), Dest(log, status='failed'), SOCK, 5)


def test_transfer_for():
    assert [type(transfer_for(m)) for m in ('cpr-transfer', 'x-ignore-shared', 'full-copy')] == [
        CprTransfer, IgnoreShared, FullCopy]
    assert transfer_for('full-copy').full_copy and not transfer_for('cpr-transfer').full_copy
