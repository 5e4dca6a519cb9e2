# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ChardevDrain on real unix sockets standing in for QEMU's server-mode chardevs."""

from __future__ import annotations

import socket
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._drain import ChardevDrain
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for


def _server(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    return srv


def test_reads_and_counts_until_stopped(tmp_path):
    a, b, missing = str(tmp_path / 'a.sock'), str(tmp_path / 'b.sock'), str(tmp_path / 'gone.sock')
    servers = [_server(a), _server(b)]
    drain = ChardevDrain([a, b, missing]).start()
    conn_a, conn_b = servers[0].accept()[0], servers[1].accept()[0]
    # more than a socket buffer holds: only a reader lets the writer go on
    conn_a.settimeout(5)
    conn_a.sendall(b'x' * (4 << 20))
    conn_b.sendall(b'hello')
    wait_for(lambda: drain.counts()[a] == 4 << 20 and drain.counts()[b] == 5, 5, 'the bytes to be read')
    conn_b.close()  # a peer that goes away is let go
    time.sleep(0.1)
    assert drain.stop() == {a: 4 << 20, b: 5, missing: None}
    # stopped: the client is gone
    assert conn_a.recv(1) == b''
    for sock in servers + [conn_a]:
        sock.close()


def test_nothing_to_drain():
    assert ChardevDrain([]).start().stop() == {}


class ChardevQMP:
    """query-chardev as QEMU answers it: a server socket reads 'disconnected:' until it accepts."""

    def __init__(self, answers):
        self.answers = list(answers)

    def execute(self, command, arguments=None):
        assert command == 'query-chardev'
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_wait_accepted(tmp_path):
    path = str(tmp_path / 'ser.sock')
    srv = _server(path)
    drain = ChardevDrain([path, str(tmp_path / 'gone.sock')]).start()
    try:
        waiting = [{'label': 'ser0', 'filename': 'disconnected:unix:%s,server=on' % path}]
        accepted = [{'label': 'ser0', 'filename': 'unix:%s,server=on' % path}]
        qmp = ChardevQMP([waiting, waiting, accepted])
        drain.wait_accepted(qmp, 5)
        assert qmp.answers == [accepted]
        with pytest.raises(WaitTimeout, match='QEMU to accept the console clients on %s' % path):
            drain.wait_accepted(ChardevQMP([waiting]), 0.1)
    finally:
        drain.stop()
        srv.close()
