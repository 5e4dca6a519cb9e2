# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QMPSession against small fake QMP peers on unix sockets.

These are the peers a real QEMU will not play on demand: garbage, silence,
a hang-up in the middle of a command. Each runs in a thread and serves one
connection; every test stays well under a second or two.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import threading
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import (
    QMPCommandError, QMPConnectError, QMPDisconnected, QMPError, QMPSession, QMPSocketError, QMPTimeout,
    check_socket_path,
)

GREETING = {'QMP': {'version': {'qemu': {'major': 7, 'minor': 2, 'micro': 19}, 'package': 'Debian 1:7.2+dfsg-7'},
                    'capabilities': []}}
TIMEOUT = 0.5


@pytest.fixture
def sock_dir(tmp_path):
    """tmp_path, unless it is too long for a unix socket path (108 bytes)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = tempfile.mkdtemp(prefix='qmp-')
    yield type(tmp_path)(short)
    for entry in os.listdir(short):
        os.unlink(os.path.join(short, entry))
    os.rmdir(short)


class FakePeer:
    """A listening unix socket whose single connection is handled by ``handler(conn, peer)``."""

    def __init__(self, path, handler):
        self.path = str(path)
        self.handler = handler
        self.received = []
        self.done = threading.Event()  # set at teardown: handlers that wait must stop
        self.error = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, dummy = self.listener.accept()
        except OSError:
            return
        with conn:
            try:
                self.handler(conn, self)
            except Exception as exc:  # pylint: disable=broad-except
                self.error = exc

    # helpers for handlers
    @staticmethod
    def send(conn, msg):
        conn.sendall(json.dumps(msg).encode() + b'\r\n')

    def commands(self, conn):
        """The messages the client sends, until it hangs up. Like QEMU, this
        reads a stream of JSON objects: the client ends them with no newline."""
        decoder, buf = json.JSONDecoder(), ''
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break  # incomplete: read more
                buf = buf.lstrip()[end:]
                self.received.append(msg)
                yield msg

    def stop(self):
        self.done.set()
        self.listener.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), 'fake QMP peer did not finish'
        if self.error is not None:
            raise self.error


@pytest.fixture
def peer(sock_dir):
    """peer(handler) -> a FakePeer listening on <sock_dir>/qmp.sock."""
    peers = []

    def start(handler):
        peers.append(FakePeer(sock_dir / 'qmp.sock', handler))
        return peers[-1]

    yield start
    for p in peers:
        p.stop()


def qmp_server(replies=None, events=()):
    """A minimal QMP server: greeting, capabilities negotiation, then ``replies[command]``.

    A reply is a dict (sent as is, with the command's id), a callable
    (msg -> dict), a tuple (reply, events sent after it) or the string
    'hangup' (close the connection without answering). ``events`` are sent
    right after negotiation.
    """
    replies = replies or {}

    def handler(conn, peer):
        peer.send(conn, GREETING)
        for msg in peer.commands(conn):
            command = msg.get('execute')
            if command in replies:
                reply = replies[command]
            elif command == 'qmp_capabilities':
                reply = {'return': {}}
            else:
                reply = {'error': {'class': 'CommandNotFound', 'desc': 'The command %s has not been found' % command}}
            if reply == 'hangup':
                return
            later = ()
            if isinstance(reply, tuple):
                reply, later = reply
            if callable(reply):
                reply = reply(msg)
            if 'id' in msg:
                reply = dict(reply, id=msg['id'])
            peer.send(conn, reply)
            if command == 'qmp_capabilities':
                later = events
            for event in later:
                time.sleep(0.05)
                peer.send(conn, dict(event, timestamp={'seconds': 1700000000, 'microseconds': 0}))
    return handler


# --- the socket path --------------------------------------------------------

def test_missing_path(sock_dir):
    path = str(sock_dir / 'nope.sock')
    with pytest.raises(QMPSocketError, match='does not exist') as info:
        QMPSession(path, TIMEOUT).connect()
    assert info.value.details['socket'] == path


def test_regular_file(sock_dir):
    path = sock_dir / 'file.sock'
    path.write_text('')
    with pytest.raises(QMPSocketError, match='is not a unix socket'):
        with QMPSession(str(path), TIMEOUT):
            pass


def test_directory(sock_dir):
    with pytest.raises(QMPSocketError, match='is not a unix socket'):
        check_socket_path(str(sock_dir))


def test_stale_socket_nobody_listens(sock_dir):
    path = str(sock_dir / 'stale.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # the socket file stays, nobody listens
    with pytest.raises(QMPConnectError, match='cannot connect to QMP socket'):
        QMPSession(path, TIMEOUT).connect()


def test_starting_peer_bound_before_it_listens(sock_dir):
    """A QEMU just started binds its socket before it listens: ``starting`` retries the
    refused connection; without it, refused is final at once."""
    path = str(sock_dir / 'starting.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    start = time.monotonic()
    with pytest.raises(QMPConnectError, match='Connection refused') as info:
        QMPSession(path, TIMEOUT).connect()
    assert time.monotonic() - start < 0.5
    assert info.value.details['errno'] == errno.ECONNREFUSED

    def listen_later():
        time.sleep(0.3)
        sock.listen(1)
        conn = sock.accept()[0]
        FakePeer.send(conn, GREETING)
        conn.recv(4096)
        FakePeer.send(conn, {'return': {}, 'id': '__qmp#00000'})
        time.sleep(0.5)
        conn.close()
    thread = threading.Thread(target=listen_later)
    thread.start()
    try:
        session = QMPSession(path, 5).connect(starting=True)
        session.close()
    finally:
        thread.join(5)
        sock.close()
    with pytest.raises(QMPConnectError, match='Connection refused'):
        refused = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other = str(sock_dir / 'never.sock')
        refused.bind(other)
        try:
            QMPSession(other, 0.3).connect(starting=True)
        finally:
            refused.close()


# --- peers that are not QMP servers -----------------------------------------

@pytest.mark.parametrize('garbage', [
    b'SSH-2.0-OpenSSH_9.2p1\r\n',
    b'RFB 003.008\n',
    b'{"hello": "world"}\r\n',
    b'[1, 2, 3]\n',
    b'\x00\xff\xfe not json\n',
])
def test_garbage_peer(peer, garbage):
    def handler(conn, peer):
        conn.sendall(garbage)
        peer.done.wait(5)

    fake = peer(handler)
    with pytest.raises(QMPConnectError, match='is not a QMP server') as info:
        QMPSession(fake.path, TIMEOUT).connect()
    assert info.value.details['socket'] == fake.path


def test_negotiation_refused(peer):
    fake = peer(qmp_server({'qmp_capabilities': {'error': {'class': 'GenericError', 'desc': 'no'}}}))
    with pytest.raises(QMPConnectError, match='is not a QMP server'):
        QMPSession(fake.path, TIMEOUT).connect()


def test_peer_hangs_up_before_greeting(peer):
    # Retried while time is left (a monitor may drop a connection while it tears down
    # the previous one), then reported as a connection error, not as a timeout.
    fake = peer(lambda conn, peer: None)
    start = time.monotonic()
    with pytest.raises(QMPConnectError):
        QMPSession(fake.path, TIMEOUT).connect()
    assert time.monotonic() - start < TIMEOUT + 1


def test_silent_peer_times_out(peer):
    fake = peer(lambda conn, peer: peer.done.wait(5))
    start = time.monotonic()
    with pytest.raises(QMPTimeout, match='did not answer the QMP greeting within 0.5s'):
        QMPSession(fake.path, TIMEOUT).connect()
    assert TIMEOUT <= time.monotonic() - start < TIMEOUT + 1.5


# --- a minimal QMP server ---------------------------------------------------

def test_execute(peer):
    status = {'status': 'running', 'running': True, 'singlestep': False}
    fake = peer(qmp_server({'query-status': {'return': status},
                            'qom-get': lambda msg: {'return': 'pc-i440fx-7.2-machine'
                                                    if msg['arguments']['path'] == '/machine' else None}}))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        assert qmp.execute('query-status') == status
        assert qmp.execute('qom-get', {'path': '/machine', 'property': 'type'}) == 'pc-i440fx-7.2-machine'
    sent = [(m['execute'], m.get('arguments')) for m in fake.received]
    assert sent == [('qmp_capabilities', {}), ('query-status', None),
                    ('qom-get', {'path': '/machine', 'property': 'type'})]


def test_command_error_fields():
    err = QMPCommandError('migrate', 'GenericError', 'no', socket='/run/q.sock')
    assert (err.command, err.error_class, err.desc) == ('migrate', 'GenericError', 'no')
    assert err.details == dict(command='migrate', error_class='GenericError', desc='no', socket='/run/q.sock')
    assert str(err) == 'QMP command migrate failed: GenericError: no'


def test_command_error(peer):
    fake = peer(qmp_server({'migrate-set-capabilities': {'error': {
        'class': 'GenericError', 'desc': 'Postcopy is not compatible with ignore-shared'}}}))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        with pytest.raises(QMPCommandError) as info:
            qmp.execute('migrate-set-capabilities', {'capabilities': []})
        err = info.value
        assert err.command == 'migrate-set-capabilities'
        assert err.error_class == 'GenericError'
        assert err.desc == 'Postcopy is not compatible with ignore-shared'
        assert err.details['socket'] == fake.path
        assert str(err) == ('QMP command migrate-set-capabilities failed: GenericError: '
                            'Postcopy is not compatible with ignore-shared')
        # the session is still usable after a refused command
        with pytest.raises(QMPCommandError, match='CommandNotFound'):
            qmp.execute('no-such-command')


def test_command_timeout(peer):
    def handler(conn, peer):
        peer.send(conn, GREETING)
        for msg in peer.commands(conn):
            if msg['execute'] == 'qmp_capabilities':
                peer.send(conn, {'return': {}})  # negotiation carries no id
            # anything else is never answered

    fake = peer(handler)
    with QMPSession(fake.path, 5) as qmp:
        start = time.monotonic()
        with pytest.raises(QMPTimeout, match='did not answer query-status within 0.2s'):
            qmp.execute('query-status', timeout=0.2)
        assert time.monotonic() - start < 1.5


def test_events(peer):
    events = [{'event': 'RESUME', 'data': {}},
              {'event': 'MIGRATION', 'data': {'status': 'setup'}},
              {'event': 'MIGRATION', 'data': {'status': 'completed'}}]
    fake = peer(qmp_server({'query-status': {'return': {'status': 'running'}}}, events=events))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        # the events arrived before this command's answer
        qmp.execute('query-status')
        event = qmp.wait_event('MIGRATION', match=lambda e: e['data']['status'] == 'completed')
        assert event['event'] == 'MIGRATION' and event['data'] == {'status': 'completed'}
        assert event['timestamp'] == {'seconds': 1700000000, 'microseconds': 0}
        start = time.monotonic()
        with pytest.raises(QMPTimeout):
            qmp.wait_event(['SHUTDOWN', 'STOP'], timeout=0.2)
        assert time.monotonic() - start < 1.5


def test_wait_for_any_event(peer):
    events = [{'event': 'RESUME', 'data': {}}, {'event': 'MIGRATION', 'data': {'status': 'completed'}}]
    fake = peer(qmp_server({'query-status': {'return': {'status': 'running'}}}, events=events))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        qmp.execute('query-status')
        assert [qmp.wait_event()['event'], qmp.wait_event(timeout=1)['event']] == ['RESUME', 'MIGRATION']
        with pytest.raises(QMPTimeout, match='no QMP event'):
            qmp.wait_event(timeout=0.1)


def test_event_after_command(peer):
    fake = peer(qmp_server({'stop': ({'return': {}}, [{'event': 'STOP'}])}))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        assert qmp.execute('stop') == {}
        assert qmp.wait_event(('STOP', 'SHUTDOWN'))['event'] == 'STOP'


def test_drain_events(peer):
    events = [{'event': 'STOP', 'data': {}}, {'event': 'RESUME', 'data': {}}]
    fake = peer(qmp_server({'query-status': {'return': {'status': 'running'}}}, events=events))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        qmp.execute('query-status')
        assert [e['event'] for e in qmp.drain_events()] == ['STOP', 'RESUME']
        with pytest.raises(QMPTimeout):
            qmp.wait_event('STOP', timeout=0.1)


def test_hangup_mid_command(peer):
    fake = peer(qmp_server({'query-status': 'hangup'}))
    with QMPSession(fake.path, TIMEOUT) as qmp:
        with pytest.raises(QMPDisconnected, match='went away during query-status') as info:
            qmp.execute('query-status')
        assert info.value.details['command'] == 'query-status'
        # and the next command does not hang either
        with pytest.raises(QMPDisconnected):
            qmp.execute('query-status')


def test_execute_not_connected():
    with pytest.raises(QMPDisconnected, match='not connected'):
        QMPSession('/nonexistent.sock').execute('query-status')


def test_errors_are_one_family():
    for cls in (QMPSocketError, QMPConnectError, QMPTimeout, QMPDisconnected, QMPCommandError):
        assert issubclass(cls, QMPError)


def test_close_is_idempotent(peer):
    fake = peer(qmp_server())
    qmp = QMPSession(fake.path, TIMEOUT).connect()
    qmp.close()
    qmp.close()
    with pytest.raises(QMPDisconnected):
        qmp.execute('query-status')
