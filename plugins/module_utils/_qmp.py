# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A synchronous QMP session over qemu.qmp's asynchronous QMPClient.

Only ``qemu.qmp.QMPClient`` (LGPL-2.0-or-later) is used; ``qemu.qmp.legacy``
is GPL-2.0-only and must not be imported by this GPL-3.0-or-later collection.

Every call has a deadline. Errors:

    QMPError (LiveUpdateError)
     +-- QMPSocketError      the path is missing or is not a unix socket
     +-- QMPConnectError     nobody listens, or the peer does not speak QMP
     +-- QMPTimeout          the peer did not answer in time
     +-- QMPDisconnected     the peer went away during a call
     +-- QMPCommandError     QEMU answered with an error (class, desc)
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import struct
import time
import traceback

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import Deadline

try:
    from qemu.qmp import ConnectError, EventListener, ExecInterruptedError, ExecuteError, QMPClient, Runstate, StateError
    from qemu.qmp.qmp_client import GreetingError, NegotiationError
    HAS_QEMU_QMP = True
    QEMU_QMP_IMPORT_ERROR = None
except ImportError:
    HAS_QEMU_QMP = False
    QEMU_QMP_IMPORT_ERROR = traceback.format_exc()

# The version the collection is tested with; the library's API is alpha.
QEMU_QMP_REQUIREMENT = 'qemu.qmp==0.0.6'

DEFAULT_TIMEOUT = 10.0


class QMPError(LiveUpdateError):
    """Base of the QMP errors; ``socket`` names the peer."""


class QMPSocketError(QMPError):
    pass


class QMPConnectError(QMPError):
    pass


class QMPTimeout(QMPError):
    pass


class QMPDisconnected(QMPError):
    pass


class QMPCommandError(QMPError):
    """QEMU refused a command; ``error_class`` and ``desc`` are QEMU's words."""

    def __init__(self, command, error_class, desc, socket=None):
        super().__init__(
            'QMP command %s failed: %s: %s' % (command, error_class, desc),
            command=command, error_class=error_class, desc=desc, socket=socket)
        self.command = command
        self.error_class = error_class
        self.desc = desc


def check_socket_path(path):
    """Raise QMPSocketError unless ``path`` is an existing unix socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise QMPSocketError('QMP socket %s does not exist' % path, socket=path)
    except OSError as exc:
        raise QMPSocketError('QMP socket %s cannot be read: %s' % (path, exc.strerror), socket=path)
    if not stat.S_ISSOCK(mode):
        raise QMPSocketError('%s is not a unix socket' % path, socket=path)


def socket_accepts(path):
    """True when a process listens on the unix socket ``path`` (a socket file whose
    process is gone refuses connections)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class QMPSession:
    """One QMP connection to one QEMU, used synchronously.

    Use as a context manager; events received after ``connect`` are kept
    and can be waited for with ``wait_event``.
    """

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = float(timeout)
        self.peer_pid = None  # the pid of the QEMU at the other end, once connected
        self._loop = None
        self._client = None
        self._listener = None

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def _run(self, coro, timeout, what):
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))
        except asyncio.TimeoutError:
            raise QMPTimeout('QMP peer %s did not answer %s within %.1fs' % (self.path, what, timeout),
                             socket=self.path, timeout=timeout)

    def connect(self, starting=False):
        """Connect and negotiate. ``starting``: the peer is a QEMU just started, whose socket
        may exist before it listens (connection refused is then retried while time is left)."""
        check_socket_path(self.path)
        deadline = Deadline(self.timeout)
        dropped = None  # why the previous attempt failed, when it is retried
        while True:
            self._loop = asyncio.new_event_loop()
            try:
                self._run(self._connect(), max(deadline.remaining(), 0.01), 'the QMP greeting')
                return self
            except QMPConnectError as exc:
                self.close()
                if not (starting and exc.details.get('errno') == errno.ECONNREFUSED and deadline.remaining() > 0.01):
                    raise
                time.sleep(0.005)
            except QMPTimeout:
                self.close()
                if dropped is None:
                    raise
                raise QMPConnectError('QMP peer %s closed the connection before its greeting: %s'
                                      % (self.path, dropped), socket=self.path)
            except ConnectError as exc:
                self.close()
                cause = exc.exc
                if isinstance(cause, (GreetingError, NegotiationError, ValueError)):
                    raise QMPConnectError('%s is not a QMP server: %s' % (self.path, cause), socket=self.path)
                # A monitor still tearing down its previous client may drop a new
                # connection before the greeting: try again while time is left.
                if isinstance(cause, (EOFError, ConnectionResetError)) or getattr(cause, 'errno', None) == errno.EINVAL:
                    dropped = cause or 'end of file'
                    if deadline.remaining() > 0.05:
                        time.sleep(0.05)
                        continue
                raise QMPConnectError('cannot connect to QMP socket %s: %s' % (self.path, cause), socket=self.path)
            except BaseException:
                self.close()
                raise

    async def _connect(self):
        # Our own socket, so that the peer's pid is known (SO_PEERCRED) without a second connection.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await self._loop.sock_connect(sock, self.path)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
        except OSError as exc:
            sock.close()
            raise QMPConnectError('cannot connect to QMP socket %s: %s' % (self.path, exc.strerror or exc),
                                  socket=self.path, errno=exc.errno)
        self.peer_pid = struct.unpack('3i', creds)[0]
        self._client = QMPClient(os.path.basename(self.path))
        self._listener = EventListener()
        self._client.register_listener(self._listener)
        await self._client.connect(sock)

    def execute(self, command, arguments=None, timeout=None):
        """Run one command; return its result or raise a QMPError."""
        if self._client is None:
            raise QMPDisconnected('QMP session to %s is not connected' % self.path, socket=self.path)
        timeout = self.timeout if timeout is None else timeout
        try:
            return self._run(self._client.execute(command, arguments or None), timeout, command)
        except ExecuteError as exc:
            raise QMPCommandError(command, exc.error_class, exc.error.error.desc, socket=self.path)
        except (ExecInterruptedError, StateError, EOFError, ConnectionError) as exc:
            raise QMPDisconnected('QMP peer %s went away during %s: %s' % (self.path, command, exc),
                                  socket=self.path, command=command)

    def pass_fd(self, fd, name):
        """Hand file descriptor ``fd`` to QEMU under ``name`` (SCM_RIGHTS, then getfd), for a
        migration URI ``fd:NAME``."""
        if self._client is None:
            raise QMPDisconnected('QMP session to %s is not connected' % self.path, socket=self.path)
        self._client.send_fd_scm(fd)
        self.execute('getfd', {'fdname': name})

    def wait_event(self, names=None, timeout=None, match=None):
        """Return the next event whose name is in ``names`` (any name when None) and that
        ``match`` accepts; events before it are dropped."""
        names = {names} if isinstance(names, str) else None if names is None else set(names)
        wanted = 'QMP' if names is None else '/'.join(sorted(names))
        deadline = Deadline(self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise QMPTimeout('no %s event from %s in time' % (wanted, self.path), socket=self.path)
            try:
                # Short slices, so that a peer that goes away is noticed at once.
                event = self._loop.run_until_complete(asyncio.wait_for(self._listener.get(), min(remaining, 0.05)))
            except asyncio.TimeoutError:
                if self._client.runstate != Runstate.RUNNING:
                    raise QMPDisconnected('QMP peer %s went away while waiting for %s event'
                                          % (self.path, wanted), socket=self.path)
                continue
            event = dict(event)
            if (names is None or event.get('event') in names) and (match is None or match(event)):
                return event

    def drain_events(self):
        """Forget the events received so far and return them."""
        self._loop.run_until_complete(asyncio.sleep(0))
        return [dict(e) for e in self._listener.clear()]

    def close(self):
        if self._loop is None:
            return
        if self._client is not None:
            try:
                self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 5))
            except Exception:  # pylint: disable=broad-except
                # The peer may already be gone (e.g. after 'quit'); nothing to release.
                pass
        self._loop.close()
        self._loop = None
        self._client = None
