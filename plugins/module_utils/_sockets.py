# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a QEMU's sockets connect to, read from /proc and ``ss`` in the QEMU's own network
namespace: the process at the other end of a ``-netdev stream`` unix socket (a user-mode
network stack such as passt, which a live update holds still while the socket changes
hands), and the TCP connections the QEMU itself holds, which die with it (user-mode
networking's forwarded and outbound connections)."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import termios

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError

TCP_ESTABLISHED = '01'


def socket_inodes(pid):
    """{socket inode: fd number} of the sockets ``pid`` holds."""
    found = {}
    base = '/proc/%d/fd' % pid
    for entry in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, entry))
        except OSError:
            continue
        if target.startswith('socket:['):
            found[int(target[len('socket:['):-1])] = int(entry)
    return found


def unix_stream_links(pid):
    """[(local inode, local path or None, peer inode)] of the connected unix stream sockets in
    the network namespace of ``pid`` (``ss`` reads them over sock_diag: /proc/net/unix has no peers)."""
    argv = ['ss', '-xH', 'state', 'connected']
    if os.path.exists('/proc/%d/ns/net' % pid) and os.geteuid() == 0:
        argv = ['nsenter', '--net=/proc/%d/ns/net' % pid] + argv
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise LiveUpdateError('cannot list the unix sockets of pid %d (ss): %s' % (pid, exc), pid=pid)
    links = []
    for line in out.splitlines():
        fields = line.split()
        # u_str ESTAB RECV-Q SEND-Q LOCAL-PATH|* LOCAL-INODE PEER-PATH|* PEER-INODE
        if len(fields) < 8 or fields[0] != 'u_str' or not fields[5].isdigit() or not fields[7].isdigit():
            continue
        links.append((int(fields[5]), None if fields[4] == '*' else fields[4], int(fields[7])))
    return links


def stream_fd_of(pid, path, links=None):
    """The fd through which ``pid`` is connected to the unix socket listening at ``path``, or None."""
    clients = set(peer for dummy, local_path, peer in (links or unix_stream_links(pid)) if local_path == path)
    for inode, fd in socket_inodes(pid).items():
        if inode in clients:
            return fd
    return None


def holders_of(inode, exclude_pid=None):
    """Pids of the processes that hold socket ``inode`` open."""
    wanted = 'socket:[%d]' % inode
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == exclude_pid:
            continue
        base = '/proc/%s/fd' % entry
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(base, fd)) == wanted:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return pids


def stream_peers(pid, fd, links=None):
    """Pids of the processes at the other end of the unix stream socket ``fd`` of ``pid``."""
    inode = dict((fd_, inode) for inode, fd_ in socket_inodes(pid).items()).get(fd)
    peers = set(local for local, dummy, peer in (links or unix_stream_links(pid)) if peer == inode)
    return sorted(set(p for peer in peers for p in holders_of(peer, exclude_pid=pid)))


def freeze(pids):
    """Stop ``pids`` (SIGSTOP): a stopped user-mode network stack writes nothing to a socket
    that two QEMUs hold, and the host's kernel keeps its TCP connections meanwhile."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def thaw(pids):
    """Continue ``pids`` (SIGCONT; harmless on a process that runs, or is gone)."""
    for pid in pids or ():
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _address(hex_address):
    """'0100007F:1F90' -> '127.0.0.1:8080' (and IPv6 the same way)."""
    host, port = hex_address.split(':')
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        text = '.'.join(str(b) for b in reversed(raw))
    else:
        words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
        groups = b''.join(words)
        text = '[%s]' % ':'.join('%x' % int.from_bytes(groups[i:i + 2], 'big') for i in range(0, 16, 2))
    return '%s:%d' % (text, int(port, 16))


def tcp_connections(pid):
    """[dict(local, remote)] of the established TCP connections that ``pid`` holds itself (from
    /proc/PID/net/tcp*, the view of its own network namespace)."""
    mine = socket_inodes(pid)
    found = []
    for table in ('tcp', 'tcp6'):
        try:
            with open('/proc/%d/net/%s' % (pid, table)) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_ESTABLISHED and int(fields[9]) in mine:
                found.append(dict(local=_address(fields[1]), remote=_address(fields[2])))
    return found


def unread_bytes(fd):
    """Bytes waiting to be read on socket ``fd`` (FIONREAD): the same count for every
    process holding the socket."""
    count = array.array('i', [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]
