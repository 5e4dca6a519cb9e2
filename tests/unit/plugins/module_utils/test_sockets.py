# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_sockets on real sockets of this process and of a child: what /proc and ss tell."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils import _sockets
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import process_state


@pytest.mark.parametrize('hex_address, text', [
    ('0100007F:1F90', '127.0.0.1:8080'),
    ('00000000000000000000000001000000:0050', '[0:0:0:0:0:0:0:1]:80'),
])
def test_address(hex_address, text):
    assert _sockets._address(hex_address) == text


def test_tcp_connections_of_this_process():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            accepted, dummy = server.accept()
            with accepted:
                found = _sockets.tcp_connections(os.getpid())
                ends = ('%s:%d' % client.getsockname(), '%s:%d' % server.getsockname())
                assert dict(local=ends[0], remote=ends[1]) in found
                assert dict(local=ends[1], remote=ends[0]) in found


def test_stream_fd_and_its_peer_process(tmp_path):
    """A child listens on a unix socket (as passt does) and this process connects."""
    path = str(tmp_path / 'peer.sock')
    child = subprocess.Popen([sys.executable, '-c', 'import socket, time\n'
                              's = socket.socket(socket.AF_UNIX)\ns.bind(%r)\ns.listen()\n'
                              'c, a = s.accept()\ntime.sleep(30)\n' % path])
    try:
        while not os.path.exists(path):
            time.sleep(0.01)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            time.sleep(0.2)  # accepted
            assert _sockets.stream_fd_of(os.getpid(), path) == client.fileno()
            assert _sockets.stream_peers(os.getpid(), client.fileno()) == [child.pid]
            assert _sockets.stream_fd_of(os.getpid(), path + '.other') is None
            assert _sockets.unread_bytes(client.fileno()) == 0
    finally:
        child.kill()
        child.wait()


def test_freeze_and_thaw():
    child = subprocess.Popen(['sleep', '30'])
    try:
        _sockets.freeze([child.pid])
        time.sleep(0.05)
        assert process_state(child.pid) == 'T'
        _sockets.thaw([child.pid, 999999999])  # a pid that is gone is no error
        time.sleep(0.05)
        assert process_state(child.pid) == 'S'
    finally:
        child.kill()
        child.wait()
