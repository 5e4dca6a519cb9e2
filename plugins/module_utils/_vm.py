# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM launched by this collection: its runtime directory, start and stop.

Runtime directory (mode 0700), one per VM: ``qmp.sock``, ``qemu.pid``,
``vm.json`` (spec and argv), ``serial.sock`` + ``serial.log``, ``qemu.log``
(QEMU's stderr) and ``vnc.sock`` when VNC is on a unix socket.
The process is found again through its memory file, which no other QEMU
may map shared: that is also what keeps two processes off the same guest RAM.
A clone (_template) maps its template's memory file privately and is found by
its QMP socket, like a VM with memfd RAM.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    LaunchError, QemuProcess, kill_and_wait, launch_daemonized, launch_detached, process_name, qemu_processes,
    shutdown_ladder, users_of,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for

DEFAULT_RUNTIME_DIR = '/run/liveupdate-qemu'
NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')


class VmStartError(LiveUpdateError):
    pass


def validate_name(name):
    """``name`` if it is a valid VM name (it names a directory), else InvalidInput."""
    if not isinstance(name, str) or '..' in name or not NAME_RE.fullmatch(name):
        raise InvalidInput("VM name %r is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit (no '/', no '..')" % (name,))
    return name


class RuntimePaths:
    """Where the files of VM ``name`` live under ``runtime_dir``."""

    def __init__(self, runtime_dir, name):
        validate_name(name)
        self.root = os.path.join(runtime_dir, name)
        self.qmp_socket = os.path.join(self.root, 'qmp.sock')
        self.pidfile = os.path.join(self.root, 'qemu.pid')
        self.state_file = os.path.join(self.root, 'vm.json')
        self.serial_socket = os.path.join(self.root, 'serial.sock')
        self.serial_log = os.path.join(self.root, 'serial.log')
        self.qemu_log = os.path.join(self.root, 'qemu.log')
        self.vnc_socket = os.path.join(self.root, 'vnc.sock')

    def passt_socket(self, index):
        return os.path.join(self.root, 'net%d.passt.sock' % index)

    def passt_pidfile(self, index):
        return os.path.join(self.root, 'net%d.passt.pid' % index)

    def read_state(self):
        try:
            with open(self.state_file) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def write_state(self, state):
        tmp = self.state_file + '.tmp'
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                json.dump(state, handle, indent=1, sort_keys=True)
            os.rename(tmp, self.state_file)
        except OSError:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def record_argv(self, argv):
        """Record that the VM now runs ``argv`` (after a live update)."""
        state = self.read_state() or {}
        if state.get('argv') == argv:
            return False
        state['argv'] = argv
        state['binary'] = argv[0]
        state.setdefault('spec', {})['binary'] = argv[0]
        self.write_state(state)
        return True

    def read_pid(self):
        return read_pidfile(self.pidfile)


def read_pidfile(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def runs_vm(proc, paths, state):
    """Whether QEMU ``proc`` runs the managed VM of ``paths`` (its recorded ``state``): it maps the
    VM's memory file or, for memfd RAM, serves the VM's QMP socket (under a temporary name while
    an update is under way)."""
    if state.get('memory_file') and state.get('memory_shared', True):
        return proc.shares_file(state['memory_file'])
    return paths.qmp_socket in [canonical_path(s) for s in proc.cmdline.qmp_sockets()]


class Vm:
    """A VM under ``runtime_dir``: what is recorded about it and whether it runs."""

    def __init__(self, runtime_dir, name):
        self.paths = RuntimePaths(runtime_dir, name)
        self.name = name
        self.state = self.paths.read_state()

    @property
    def memory_file(self):
        """The VM's own memory file (None for memfd RAM, and for a clone, which maps its template's)."""
        if not self.state or not self.state.get('memory_shared', True):
            return None
        return self.state.get('memory_file')

    def process(self):
        """The live QEMU of this VM, or None. Identified by its memory file, which
        survives a live update (or, with memfd RAM, its QMP socket), and cross-checked
        against the pidfile when present."""
        if not self.state:
            return None
        pid = self.paths.read_pid()
        proc = QemuProcess.from_pid(pid) if pid else None
        if proc is not None and proc.alive() and runs_vm(proc, self.paths, self.state):
            return proc
        if self.memory_file:
            holders = users_of(self.memory_file)
        else:
            holders = [p for p in qemu_processes() if runs_vm(p, self.paths, self.state)]
        return holders[0] if holders else None

    def leftovers(self):
        """True when files of a VM that no longer runs are still there."""
        return os.path.exists(self.paths.root) or bool(self.memory_file and os.path.exists(self.memory_file))

    def info(self, proc=None, status=None):
        paths = self.paths
        state = self.state or {}
        return dict(name=self.name, pid=proc.pid if proc else None, status=status,
                    runtime_dir=paths.root, qmp_socket=paths.qmp_socket, pidfile=paths.pidfile,
                    serial_socket=paths.serial_socket if state.get('spec', {}).get('serial') else None,
                    serial_log=paths.serial_log if state.get('spec', {}).get('serial') else None,
                    memory_file=state.get('memory_file'), binary=proc.exe if proc else state.get('binary'),
                    argv=proc.argv if proc else state.get('argv'))

    def run_status(self, timeout):
        """QEMU's run state ('running', 'paused', ...) over QMP."""
        with QMPSession(self.paths.qmp_socket, timeout) as qmp:
            return qmp.execute('query-status')['status']

    # --- start ---

    def start(self, spec, timeout):
        """Create the memory file and runtime directory, launch QEMU daemonized,
        wait for QMP. Any failure removes what was created."""
        os.makedirs(os.path.dirname(self.paths.root), mode=0o755, exist_ok=True)
        os.mkdir(self.paths.root, 0o700)
        if spec.memory_file:
            try:
                fd = os.open(spec.memory_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                os.rmdir(self.paths.root)
                raise InvalidInput('memory file %s already exists' % spec.memory_file)
            os.close(fd)
        argv = spec.argv(self.paths)
        self.state = dict(spec=spec.as_dict(), argv=argv, binary=spec.binary, memory_file=spec.memory_file)
        try:
            self.paths.write_state(self.state)
            for socket, passt in spec.passt_commands(self.paths):
                launch_detached(passt, self.paths.qemu_log, lambda socket=socket: os.path.exists(socket), timeout=timeout)
            self._launch(argv, timeout)
            return self.process()
        except BaseException:
            self._kill_launched()
            self.remove_files()
            raise

    def _kill_launched(self):
        """After a failed start: end the QEMU that the pidfile names, if it is ours."""
        proc = self.process()
        if proc is not None:
            kill_and_wait(proc.pid)

    def _launch(self, argv, timeout):
        # Created first so that QEMU appends to a file that is already 0600.
        os.close(os.open(self.paths.serial_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        try:
            launch_daemonized(argv, self.paths.qemu_log)
        except LaunchError as exc:
            raise VmStartError('VM %s: %s' % (self.name, exc), **exc.details)
        # A daemonized QEMU sets umask 027 for itself; sockets are for root alone.
        for path in (self.paths.qmp_socket, self.paths.serial_socket, self.paths.vnc_socket):
            if os.path.exists(path):
                os.chmod(path, 0o600)

        def status():
            try:
                return self.run_status(timeout)
            except QMPError as exc:
                errors.append(exc)
                return None
        errors = []
        try:
            return wait_for(status, timeout, 'the QMP socket of VM %s' % self.name, interval=0.05)
        except WaitTimeout:
            raise VmStartError('QEMU for VM %s started but its QMP socket did not answer: %s'
                               % (self.name, errors[-1]), argv=argv)

    # --- stop ---

    def stop(self, proc, timeout, step_timeout):
        """The shutdown ladder; returns the step that ended QEMU."""
        def request_quit():
            with QMPSession(self.paths.qmp_socket, timeout) as qmp:
                qmp.execute('quit')
        return shutdown_ladder(proc.pid, request_quit, step_timeout)

    def remove_files(self):
        """Remove the memory file and the runtime directory; QEMU must be gone. A passt that
        never had its QEMU (it ends with it otherwise) is ended."""
        for entry in os.listdir(self.paths.root) if os.path.isdir(self.paths.root) else ():
            if entry.endswith('.passt.pid'):
                pid = read_pidfile(os.path.join(self.paths.root, entry))
                if pid and (process_name(pid) or '').startswith('passt'):  # passt runs as passt.avx2
                    kill_and_wait(pid)
        if self.memory_file and os.path.exists(self.memory_file):
            if users_of(self.memory_file):
                raise LiveUpdateError('refusing to remove %s: a QEMU still uses it' % self.memory_file)
            os.unlink(self.memory_file)
        if os.path.isdir(self.paths.root):
            for entry in os.listdir(self.paths.root):
                os.unlink(os.path.join(self.paths.root, entry))
            os.rmdir(self.paths.root)
