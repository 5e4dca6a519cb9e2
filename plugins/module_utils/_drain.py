# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Clients on the destination's server-mode socket chardevs, from spawn until the
guest has gone on after the switch.

A device whose chardev was blocked on the source (a console logger that stopped
reading) migrates as "waiting to retry"; on the destination it retries only through
a watch that a socket chardev creates only while a client is connected (QEMU's
serial_post_load and its kin). With no client the device waits forever and the
guest's console is dead. A connected client that reads lets the retry happen; once
it has, QEMU drops output while no client is connected, as it always does."""

from __future__ import annotations

import selectors
import socket
import threading

from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import wait_for


class ChardevDrain:
    """Connect to every path in ``paths`` and read (discarding, counting bytes) until ``stop``;
    a path that takes no client counts None."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.received = dict((path, 0) for path in self.paths)
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        for path in self.paths:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()  # a chardev that takes no client now: nothing would wait on it
                self.received[path] = None
                continue
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, path)
        if self._selector.get_map():
            self._thread = threading.Thread(target=self._run, name='chardev-drain', daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            for key, dummy in self._selector.select(timeout=0.02):
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b''
                if data:
                    self.received[key.data] += len(data)
                else:  # the peer closed (the destination died): stop watching it
                    self._selector.unregister(key.fileobj)
                    key.fileobj.close()

    def wait_accepted(self, qmp, timeout):
        """Until QEMU (session ``qmp``) has accepted every client: connect() returns while a
        connection may still wait in the listen backlog, and a device migrated as waiting
        re-arms only on a chardev that has its client when the state loads."""
        paths = [path for path, count in self.received.items() if count is not None]

        def accepted():
            names = [c['filename'] for c in qmp.execute('query-chardev')]
            return all(any(path in name and not name.startswith('disconnected:') for name in names)
                       for path in paths)
        if paths:
            wait_for(accepted, timeout, 'QEMU to accept the console clients on %s' % ', '.join(paths), interval=0.005)

    def counts(self):
        """Bytes read so far per path."""
        return dict(self.received)

    def stop(self):
        """Close every client; returns counts(). A second call only returns them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._selector.get_map() is None:  # closed by an earlier stop()
            return self.counts()
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            key.fileobj.close()
        self._selector.close()
        return self.counts()
