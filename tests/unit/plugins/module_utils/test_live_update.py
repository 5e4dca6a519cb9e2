# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The live update engine's pieces that need no guest: host_forwards, the Switch
guard, UpdateLock, locating the source (peer pid of its QMP socket), and the
target binary probe. Real processes stand in for QEMU where the engine looks
at /proc or at a socket's peer."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._discovery import binary_version, probe_binary
from ansible_collections.liveupdate.qemu.plugins.module_utils import _live_update
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._live_update import (
    LiveUpdate, Switch, UpdateFailed, UpdateLock, connect_source, host_forwards, locate,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession

QEMU = '/usr/bin/qemu-system-x86_64'


class FakeQMP:
    """Records execute() calls; answers from ``replies`` (command -> value)."""

    def __init__(self, **replies):
        self.replies = replies
        self.calls = []

    def execute(self, command, arguments=None):
        self.calls.append((command, arguments))
        return self.replies.get(command.replace('-', '_'), {})


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


# --- host_forwards: 'info usernet' of QEMU 7.2 --------------------------------

# Real replies of QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18+b3) to human-monitor-command 'info usernet'.
# -netdev user,id=net0,hostfwd=tcp:127.0.0.1:25999-:80,hostfwd=udp::26000-:53
USERNET_ONE = (
    'Hub -1 (net0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   8       127.0.0.1 25999       10.0.2.15    80     0     0\r\n'
    '  UDP[HOST_FORWARD]   3               * 26000       10.0.2.15    53     0     0\r\n')
# -netdev user,id=net0,hostfwd=tcp:127.0.0.1:25999-:80 -device virtio-net-pci,netdev=net0
# -netdev user,id=lan1,hostfwd=tcp::26001-10.0.2.20:22,hostfwd=tcp:0.0.0.0:26002-:443 -device e1000,netdev=lan1
# -netdev user,id=nofwd -device e1000,netdev=nofwd
USERNET_THREE = (
    'Hub -1 (net0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   3       127.0.0.1 25999       10.0.2.15    80     0     0\r\n'
    'Hub -1 (lan1):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   9               * 26001       10.0.2.20    22     0     0\r\n'
    '  TCP[HOST_FORWARD]   8               * 26002       10.0.2.15   443     0     0\r\n'
    'Hub -1 (nofwd):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n')
# the same net0 while a host client connects through the forward (no guest answers)
USERNET_CONNECTING = (
    'Hub -1 (net0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[SYN_SENT]      12       127.0.0.1 25999       10.0.2.15    80     0     0\r\n'
    '  TCP[HOST_FORWARD]  11       127.0.0.1 25999       10.0.2.15    80     0     0\r\n')
# -netdev user,id=n0 (no forwards)
USERNET_NONE = (
    'Hub -1 (n0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n')
# -net nic -net user,hostfwd=tcp::26003-:22 (legacy: a hub port with a generated id)
USERNET_LEGACY = (
    'Hub 0 (#net132):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   3               * 26003       10.0.2.15    22     0     0\r\n')


@pytest.mark.parametrize('text, rules', [
    (USERNET_ONE, [('net0', 'tcp:127.0.0.1:25999-10.0.2.15:80'), ('net0', 'udp::26000-10.0.2.15:53')]),
    (USERNET_THREE, [('net0', 'tcp:127.0.0.1:25999-10.0.2.15:80'), ('lan1', 'tcp::26001-10.0.2.20:22'),
                     ('lan1', 'tcp::26002-10.0.2.15:443')]),
    (USERNET_CONNECTING, [('net0', 'tcp:127.0.0.1:25999-10.0.2.15:80')]),
    (USERNET_NONE, []),
    (USERNET_LEGACY, [('#net132', 'tcp::26003-10.0.2.15:22')]),
    ('', []),
], ids=['one-netdev', 'three-netdevs', 'connection-in-progress', 'no-forwards', 'legacy-net', 'no-user-netdev'])
def test_host_forwards(text, rules):
    qmp = FakeQMP(human_monitor_command=text)
    assert host_forwards(qmp) == rules
    assert qmp.calls == [('human-monitor-command', {'command-line': 'info usernet'})]


def test_host_forwards_rules_are_hostfwd_add_syntax():
    """Every rule reads back as 'hostfwd_add NETDEV RULE' takes it
    (PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT); measured: hostfwd_add of the
    rules of USERNET_ONE on a bare net0 gives the same 'info usernet' lines."""
    for dummy, rule in host_forwards(FakeQMP(human_monitor_command=USERNET_THREE + USERNET_ONE)):
        proto, rest = rule.split(':', 1)
        host, guest = rest.split('-')
        assert proto in ('tcp', 'udp')
        assert host.rsplit(':', 1)[1].isdigit() and guest.rsplit(':', 1)[1].isdigit()
        assert '*' not in host and '0.0.0.0' not in host


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


# --- UpdateLock -------------------------------------------------------------

SOCKET = '/run/liveupdate-qemu/web1/qmp.sock'


def _hold_lock(runtime_dir, qmp_socket, ready, release):
    with UpdateLock(runtime_dir, qmp_socket, 0):
        ready.set()
        release.wait(10)


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding the lock of SOCKET until release is set."""
    ctx = multiprocessing.get_context('fork')
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), SOCKET, ready, release))
    holder.start()
    assert ready.wait(5)
    yield holder, release
    release.set()
    holder.join(5)


def test_lock_path(tmp_path):
    lock = UpdateLock(str(tmp_path), SOCKET, 0)
    assert lock.path == str(tmp_path / '.locks' / 'run%liveupdate-qemu%web1%qmp.sock.lock')
    assert (os.stat(tmp_path / '.locks').st_mode & 0o777) == 0o700
    with lock:
        with open(lock.path) as handle:
            assert handle.read() == str(os.getpid())
        assert (os.stat(lock.path).st_mode & 0o777) == 0o600
    # released: taken again at once
    with UpdateLock(str(tmp_path), SOCKET, 0):
        pass


def test_lock_held_elsewhere_fails_at_once(tmp_path, lock_holder):
    holder, dummy = lock_holder
    start = time.monotonic()
    with pytest.raises(UpdateFailed) as caught:
        with UpdateLock(str(tmp_path), SOCKET, 0):
            pytest.fail('took a lock that another process holds')
    assert time.monotonic() - start < 0.2
    exc = caught.value
    assert str(exc).startswith('another live update of this VM is in progress (pid %d); lock ' % holder.pid)
    assert (exc.details['step'], exc.details['rolled_back']) == ('lock', True)


def test_lock_of_another_vm_is_free(tmp_path, lock_holder):
    with UpdateLock(str(tmp_path), '/run/liveupdate-qemu/web2/qmp.sock', 0):
        pass


def test_lock_timeout_waits_for_the_holder(tmp_path, lock_holder):
    dummy, release = lock_holder
    timer = threading.Timer(0.3, release.set)
    timer.start()
    start = time.monotonic()
    try:
        with UpdateLock(str(tmp_path), SOCKET, 5) as lock:
            waited = time.monotonic() - start
            with open(lock.path) as handle:
                assert handle.read() == str(os.getpid())
    finally:
        timer.cancel()
    assert 0.25 <= waited < 1.5


def test_lock_timeout_expires(tmp_path, lock_holder):
    holder, dummy = lock_holder
    start = time.monotonic()
    with pytest.raises(UpdateFailed, match=r'in progress \(pid %d\)' % holder.pid):
        with UpdateLock(str(tmp_path), SOCKET, 0.2):
            pass
    assert 0.2 <= time.monotonic() - start < 0.6


@pytest.mark.parametrize('spelling', ['/run/liveupdate-qemu//web1/qmp.sock', '/run/liveupdate-qemu/./web1/qmp.sock',
                                      '/run/liveupdate-qemu/web1/../web1/qmp.sock'])
def test_bug_lock_depends_on_spelling(tmp_path, spelling):
    assert UpdateLock(str(tmp_path), spelling, 0).path == UpdateLock(str(tmp_path), SOCKET, 0).path


# --- locating the source: the peer of its QMP socket ------------------------

FAKE_QMP_SERVER = r'''
import json, socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen()
print('ready', flush=True)
decoder = json.JSONDecoder()
while True:
    conn, dummy = srv.accept()
    conn.sendall(json.dumps({'QMP': {'version': {'qemu': {'micro': 22, 'minor': 2, 'major': 7},
                                                 'package': 'Debian 1:7.2+dfsg-7+deb12u18+b3'},
                                     'capabilities': []}}).encode() + b'\r\n')
    buf = ''
    while True:
        data = conn.recv(4096)
        if not data:
            break
        buf += data.decode()
        while buf.strip():  # commands are not newline-terminated
            try:
                msg, end = decoder.raw_decode(buf.lstrip())
            except ValueError:
                break
            buf = buf.lstrip()[end:]
            reply = {'return': {}}
            if 'id' in msg:
                reply['id'] = msg['id']
            conn.sendall(json.dumps(reply).encode() + b'\r\n')
    conn.close()
'''


@pytest.fixture
def qmp_server(tmp_path):
    """start(path, *args, qemu=True): a process serving a minimal QMP on ``path``;
    with qemu=True it looks like QEMU in /proc (argv[0] named qemu-system-x86_64)
    and ``args`` follow in its argv, where QemuCommandLine reads them as options."""
    link = tmp_path / 'qemu-system-x86_64'
    os.symlink(os.path.realpath(sys.executable), link)
    children = []

    def start(path, *args, qemu=True):
        argv0 = str(link) if qemu else os.path.realpath(sys.executable)
        child = subprocess.Popen([argv0, '-c', FAKE_QMP_SERVER, path] + list(args), stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout.readline() == b'ready\n'
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def params(runtime_dir, **kw):
    return dict(dict(runtime_dir=str(runtime_dir), timeout=2, name=None, socket=None, pid=None), **kw)


def test_peer_pid_is_the_listener(tmp_path, qmp_server):
    path = str(tmp_path / 'qmp.sock')
    child = qmp_server(path, qemu=False)
    with QMPSession(path, 2) as qmp:
        assert qmp.peer_pid == child.pid
        assert qmp.execute('query-status') == {}


@pytest.mark.parametrize('kind, message', [
    ('missing', 'does not exist'),
    ('regular-file', 'is not a unix socket'),
    ('nobody-listens', 'Connection refused'),
])
def test_peer_pid_unreachable(tmp_path, kind, message):
    path = str(tmp_path / 'qmp.sock')
    if kind == 'regular-file':
        open(path, 'w').close()
    elif kind == 'nobody-listens':
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    start = time.monotonic()
    with pytest.raises(QMPError, match=message):
        QMPSession(path, 0.5).connect()
    assert time.monotonic() - start < 0.6


def test_locate_by_socket(tmp_path, qmp_server):
    path = str(tmp_path / 'qmp.sock')
    child = qmp_server(path, '-name', 'guest=db', '-qmp', 'unix:%s,server=on,wait=off' % path)
    qmp_socket, proc = locate(params(tmp_path, socket=path))
    assert (qmp_socket, proc) == (path, None)
    with QMPSession(qmp_socket, 2) as qmp:
        source = connect_source(qmp, proc, str(tmp_path))
    assert (source.proc.pid, source.qmp_socket, source.name, source.paths) == (child.pid, path, 'db', None)


def test_locate_by_pid_after_an_earlier_update(tmp_path, qmp_server):
    """The QEMU of an earlier update has the temporary name in its argv; its socket
    was renamed to the canonical path, which is where it is reached."""
    path = str(tmp_path / 'qmp.sock')
    child = qmp_server(path, '-name', 'guest=db', '-qmp', 'unix:%s.lu-0123abcd,server=on,wait=off' % path,
                       '-S', '-incoming', 'defer')
    qmp_socket, proc = locate(params(tmp_path, pid=child.pid))
    assert (qmp_socket, proc.pid) == (path, child.pid)
    with QMPSession(qmp_socket, 2) as qmp:
        assert connect_source(qmp, proc, str(tmp_path)).proc is proc


def test_locate_by_name(tmp_path, qmp_server):
    root = tmp_path / 'db'
    root.mkdir()
    memory_file = '/dev/shm/liveupdate-qemu-unit-db.ram'  # only named, never opened
    path = str(root / 'qmp.sock')
    child = qmp_server(path, '-name', 'guest=db', '-object',
                       'memory-backend-file,id=mem0,size=64M,mem-path=%s,share=on' % memory_file,
                       '-qmp', 'unix:%s,server=on,wait=off' % path, '-pidfile', str(root / 'qemu.pid'))
    (root / 'vm.json').write_text(json.dumps(dict(memory_file=memory_file)))
    (root / 'qemu.pid').write_text('%d\n' % child.pid)
    qmp_socket, proc = locate(params(tmp_path, name='db'))
    assert (qmp_socket, proc.pid) == (path, child.pid)
    with QMPSession(qmp_socket, 2) as qmp:
        source = connect_source(qmp, proc, str(tmp_path))
    assert source.paths is not None and source.paths.root == str(root)


def test_socket_of_another_process(tmp_path, qmp_server):
    path = str(tmp_path / 'qmp.sock')
    located = qmp_server(str(tmp_path / 'other.sock'), '-qmp', 'unix:%s,server=on,wait=off' % path)
    listener = qmp_server(path, '-qmp', 'unix:%s,server=on,wait=off' % path)
    qmp_socket, proc = locate(params(tmp_path, pid=located.pid))
    with QMPSession(qmp_socket, 2) as qmp:
        with pytest.raises(InvalidInput, match='QMP socket %s belongs to pid %d, not to QEMU pid %d'
                           % (re.escape(path), listener.pid, located.pid)):
            connect_source(qmp, proc, str(tmp_path))


def test_socket_not_served_by_qemu(tmp_path, qmp_server):
    path = str(tmp_path / 'qmp.sock')
    qmp_server(path, qemu=False)
    qmp_socket, proc = locate(params(tmp_path, socket=path))
    with QMPSession(qmp_socket, 2) as qmp:
        with pytest.raises(InvalidInput, match='the process listening on %s is not QEMU' % re.escape(path)):
            connect_source(qmp, proc, str(tmp_path))


def test_locate_refusals(tmp_path, qmp_server):
    no_qmp = qmp_server(str(tmp_path / 'x.sock'), '-name', 'guest=db', '-qmp', 'tcp:127.0.0.1:4444,server=on')
    with pytest.raises(InvalidInput, match='QEMU pid %d has no unix QMP socket' % no_qmp.pid):
        locate(params(tmp_path, pid=no_qmp.pid))
    with pytest.raises(InvalidInput, match='pid %d is not a running QEMU' % os.getpid()):
        locate(params(tmp_path, pid=os.getpid()))
    with pytest.raises(InvalidInput, match='VM db is not running'):
        locate(params(tmp_path, name='db'))


# --- the target binary ------------------------------------------------------

@pytest.fixture(scope='module')
def probed():
    if not os.access(QEMU, os.X_OK):
        pytest.skip('%s is not installed' % QEMU)
    return probe_binary(QEMU)


def test_probe_binary(probed):
    installed = binary_version(QEMU)
    assert probed['path'] == QEMU
    assert (probed['version'], probed['package']) == (installed['version'], installed['package'])
    assert probed['version'].startswith('7.2.')
    assert 'x-ignore-shared' in probed['capabilities']
    assert {'pc', 'q35', 'pc-i440fx-7.2', 'pc-q35-7.2', 'pc-i440fx-7.1', 'none'} <= set(probed['machines'])
    assert probed['capabilities'] == sorted(probed['capabilities'])


@pytest.mark.parametrize('kind, message', [
    ('true', r'did not answer QMP queries \(exit 0\)'),
    ('false', r'did not answer QMP queries \(exit 1\)'),
    ('script', r'did not answer QMP queries \(exit 1\): qemu-system-x86_64: -machine none: unsupported'),
    ('missing', 'cannot run: .*No such file'),
    ('not-executable', 'cannot run: .*Permission denied'),
])
def test_probe_binary_not_qemu(tmp_path, kind, message):
    path = tmp_path / 'qemu-system-x86_64'
    if kind in ('true', 'false'):
        path = '/bin/' + kind
    elif kind == 'script':
        path.write_text('#!/bin/sh\necho "qemu-system-x86_64: -machine none: unsupported" >&2\nexit 1\n')
        path.chmod(0o755)
    elif kind == 'not-executable':
        path.write_text('#!/bin/sh\n')
        path.chmod(0o644)
    with pytest.raises(InvalidInput, match='target binary %s %s' % (re.escape(str(path)), message)):
        probe_binary(str(path))


def test_probe_binary_timeout(tmp_path):
    path = tmp_path / 'qemu-system-x86_64'
    path.write_text('#!/bin/sh\nexec sleep 10\n')
    path.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(InvalidInput, match='target binary %s cannot run: .*timed out' % re.escape(str(path))):
        probe_binary(str(path), timeout=0.2)
    assert time.monotonic() - start < 1


# --- the source is stopped without punching out the shared RAM -------------

def test_stop_source_turns_discard_data_off_first(monkeypatch):
    """A memory-backend-file with discard-data=on would free the guest's pages of the shared
    file when the source exits; the destination runs on that file by then."""
    ladder = []
    monkeypatch.setattr(_live_update, 'shutdown_ladder',
                        lambda pid, request_quit, step: ladder.append((pid, step)) or request_quit() or 'quit')
    engine = LiveUpdate({'timeout': 1, 'shutdown_timeout': 3}, check_mode=False)
    engine.source = types.SimpleNamespace(proc=types.SimpleNamespace(pid=4242))
    backends = [{'id': 'mem0', 'type': 'memory-backend-file'}, {'id': 'pc.ram', 'type': 'memory-backend-ram'}]
    qmp = FakeQMP()
    assert engine._stop_source(qmp, backends, []) == 'quit'
    assert qmp.calls == [('qom-set', {'path': '/objects/mem0', 'property': 'discard-data', 'value': False}),
                         ('quit', None)]
    assert ladder == [(4242, 3)]


def test_stop_source_with_a_tap_downscript_is_killed(monkeypatch):
    """quit would run the tap's downscript on the interface the destination now uses."""
    killed = []
    monkeypatch.setattr(_live_update, 'shutdown_ladder', lambda *args: pytest.fail('quit would run the downscript'))
    monkeypatch.setattr(_live_update, 'kill_and_wait', killed.append)
    engine = LiveUpdate({'timeout': 1, 'shutdown_timeout': 3}, check_mode=False)
    engine.source = types.SimpleNamespace(proc=types.SimpleNamespace(pid=4242))
    qmp = FakeQMP()
    backends = [{'id': 'mem0', 'type': 'memory-backend-file'}]
    assert engine._stop_source(qmp, backends, [('net0', 'default')]) == 'SIGKILL'
    assert killed == [4242]
    assert qmp.calls == [('qom-set', {'path': '/objects/mem0', 'property': 'discard-data', 'value': False})]
