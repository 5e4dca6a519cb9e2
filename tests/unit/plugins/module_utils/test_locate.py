# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Locating a VM and checking the peer of its QMP socket. Real processes stand in
for QEMU where the code looks at /proc or at a socket's peer."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._locate import connect_source, locate
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._recovery import serves_twin
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths, runs_vm


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


def test_locate_a_memfd_vm_by_name(tmp_path, qmp_server):
    """memfd RAM has no path: the VM's process is the one that serves its QMP socket (or a
    temporary twin of it, during an update)."""
    root = tmp_path / 'mf'
    root.mkdir()
    path = str(root / 'qmp.sock')
    child = qmp_server(path, '-name', 'guest=mf', '-object', 'memory-backend-memfd,id=mem0,size=64M,share=on',
                       '-qmp', 'unix:%s,server=on,wait=off' % path)
    (root / 'vm.json').write_text(json.dumps(dict(memory_file=None)))
    qmp_socket, proc = locate(params(tmp_path, name='mf'))  # no pidfile: found by its QMP socket
    assert (qmp_socket, proc.pid) == (path, child.pid)


def test_runs_vm_and_serves_twin():
    paths = RuntimePaths('/run/lu', 'mf')
    source = QemuProcess(1, ['qemu', '-qmp', 'unix:/run/lu/mf/qmp.sock,server=on,wait=off'], '/usr/bin/qemu')
    dest = QemuProcess(2, ['qemu', '-qmp', 'unix:/run/lu/mf/qmp.sock.lu-0123abcd,server=on,wait=off'], '/q/qemu')
    other = QemuProcess(3, ['qemu', '-qmp', 'unix:/run/lu/web/qmp.sock,server=on,wait=off'], '/usr/bin/qemu')
    assert [runs_vm(p, paths, {'memory_file': None}) for p in (source, dest, other)] == [True, True, False]
    assert [serves_twin(p, paths.qmp_socket) for p in (source, dest, other)] == [False, True, False]


# --- a VM that libvirt runs: refused before anything connects to its monitor --

def libvirt_args(domain_dir, monitor):
    """The marks of a libvirt command line (see test_libvirt); ``monitor``: its socket, path=... or fd=..."""
    return ['-name', 'guest=db,debug-threads=on',
            '-object', 'secret,id=masterKey0,format=raw,file=%s/master-key.aes' % domain_dir,
            '-chardev', 'socket,id=charmonitor,%s,server=on,wait=off' % monitor,
            '-mon', 'chardev=charmonitor,id=monitor,mode=control']


def test_locate_refuses_libvirt(tmp_path, qmp_server):
    domain_dir = tmp_path / 'domain-1-db'
    domain_dir.mkdir()
    path = str(domain_dir / 'monitor.sock')
    child = qmp_server(path, *libvirt_args(domain_dir, 'path=' + path))
    refused = r'QEMU pid %d is managed by libvirt \(domain db\): libvirt holds its QMP monitor' % child.pid
    with pytest.raises(InvalidInput, match=refused):
        locate(params(tmp_path, pid=child.pid))
    with pytest.raises(InvalidInput, match=refused):
        locate(params(tmp_path, socket=path))


def test_locate_refuses_a_socket_in_libvirts_directories(tmp_path):
    """libvirt passes its monitor to QEMU as a file descriptor: no command line names the socket."""
    path = str(tmp_path / 'libvirt' / 'qemu' / 'domain-1-db' / 'monitor.sock')
    with pytest.raises(InvalidInput, match="QMP socket %s lies in libvirt's directories: its VM is managed by "
                                           "libvirt: " % re.escape(path)):
        locate(params(tmp_path, socket=path))


def test_connect_source_refuses_libvirt(tmp_path, qmp_server):
    """A socket outside libvirt's directories that a QEMU of libvirt's serves (a monitor handed over
    as a file descriptor, found through the socket's peer)."""
    path = str(tmp_path / 'monitor.sock')
    child = qmp_server(path, *libvirt_args(tmp_path / 'domain-1-db', 'fd=30'))
    with QMPSession(path, 2) as qmp:
        with pytest.raises(InvalidInput, match=r'QEMU pid %d is managed by libvirt \(domain db\)' % child.pid):
            connect_source(qmp, None, str(tmp_path))
