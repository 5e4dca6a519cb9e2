# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding a VM: by name (a VM of liveupdate.qemu.vm), by QMP socket or by pid;
the QMP socket to reach a QEMU process at; its runtime paths when it is ours;
the check that the process behind a socket is the one that was found; and the
refusal of a VM that libvirt runs, before anything connects to its monitor."""

from __future__ import annotations

import os

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._libvirt import in_libvirt_dir, libvirt_domain, refusal
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess, process_alive, qemu_processes
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import check_socket_path, socket_accepts
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths, Vm, runs_vm


def managed_paths(proc, runtime_dir):
    """The RuntimePaths of ``proc`` when liveupdate.qemu.vm launched it under ``runtime_dir``."""
    name = proc.cmdline.name()
    if not name or not runtime_dir:
        return None
    try:
        paths = RuntimePaths(runtime_dir, name)
    except InvalidInput:  # a -name that no VM of ours could have
        return None
    state = paths.read_state()
    if state and runs_vm(proc, paths, state):
        return paths
    return None


def qmp_socket_of(proc, paths):
    """The canonical QMP socket of ``proc``: its runtime directory's when managed (``paths``),
    else the first on its command line, under its canonical name (see canonical_path)."""
    if paths is not None:
        return paths.qmp_socket
    sockets = proc.cmdline.qmp_sockets()
    return canonical_path(sockets[0]) if sockets else None


def _twins(procs, canonical):
    """The temporary twins (PATH.lu-TOKEN) of QMP socket ``canonical`` that exist and that
    one of ``procs`` names on its command line: a destination not renamed yet."""
    return [path for proc in procs for path in proc.cmdline.qmp_sockets()
            if path != canonical and canonical_path(path) == canonical and os.path.exists(path)]


def own_socket(proc, canonical):
    """The socket ``proc`` itself listens on for ``canonical``: its temporary twin while it is
    the destination of an update that has not renamed it (and the source still holds
    ``canonical``), else ``canonical``."""
    return (_twins([proc], canonical) or [canonical])[0]


def reachable_socket(canonical, proc, procs=None):
    """``canonical``, unless a temporary twin that ``proc`` (or, when not known, any QEMU of
    ``procs``, by default all) listens on exists and nobody listens on ``canonical``: the
    destination of an update interrupted before it renamed its sockets (the source that left
    ``canonical`` may have quit, or been left behind)."""
    twins = _twins([proc] if proc is not None else (procs if procs is not None else qemu_processes()), canonical)
    if twins and not socket_accepts(canonical):
        return twins[0]
    return canonical


def _naming(canonical, procs):
    """The QEMUs of ``procs`` whose command line names QMP socket ``canonical``."""
    return [p for p in procs if canonical in map(canonical_path, p.cmdline.qmp_sockets())]


def refuse_libvirt(procs, socket=None):
    """InvalidInput when libvirt runs one of ``procs`` or ``socket`` lies in libvirt's directories
    (its monitor: with the monitor passed as a file descriptor no command line names it)."""
    for proc in procs:
        libvirt = libvirt_domain(proc)
        if libvirt:
            raise InvalidInput('QEMU pid %d is %s' % (proc.pid, refusal(libvirt['domain'])))
    if socket and in_libvirt_dir(socket):
        raise InvalidInput("QMP socket %s lies in libvirt's directories: its VM is %s" % (socket, refusal()))


def refuse_libvirt_socket(socket, procs=None):
    """InvalidInput when QMP socket ``socket`` is the monitor of a libvirt domain (one of
    ``procs``, by default of all QEMUs)."""
    refuse_libvirt(_naming(canonical_path(socket), procs if procs is not None else qemu_processes()), socket)


def locate(params):
    """(QMP socket to connect to, QemuProcess or None) of the VM named by ``name``,
    ``socket`` or ``pid``. The socket exists (nothing is locked for a bogus path)."""
    if params.get('name'):
        vm = Vm(params['runtime_dir'], params['name'])
        proc = vm.process()
        if proc is None:
            raise InvalidInput('VM %s is not running (no live QEMU for %s)' % (params['name'], vm.paths.root))
        qmp_socket = reachable_socket(vm.paths.qmp_socket, proc)
    elif params.get('socket'):
        proc = None
        procs = qemu_processes()  # one look at /proc for both
        refuse_libvirt_socket(params['socket'], procs)
        qmp_socket = reachable_socket(params['socket'], None, procs)
    else:
        proc = QemuProcess.from_pid(params['pid'])
        if proc is None:
            raise InvalidInput('pid %d is not a running QEMU' % params['pid'])
        refuse_libvirt([proc])
        qmp_socket = qmp_socket_of(proc, managed_paths(proc, params['runtime_dir']))
        if not qmp_socket:
            raise InvalidInput('QEMU pid %d has no unix QMP socket' % proc.pid)
        qmp_socket = reachable_socket(qmp_socket, proc)
    check_socket_path(qmp_socket)
    return qmp_socket, proc


def find_running(params):
    """(QMP socket, QemuProcess) of the running VM ``name`` (or ``socket`` / ``pid``), or (None, None).
    A name that is no VM of this collection may be the -name of an operator's QEMU."""
    if params.get('socket') or params.get('pid'):
        return locate(dict(params, name=None))
    vm = Vm(params['runtime_dir'], params['name'])
    if vm.state:
        return locate(params) if vm.process() else (None, None)
    named = [p for p in qemu_processes() if p.cmdline.name() == params['name']]
    if len(named) > 1:
        raise InvalidInput('%d QEMUs are named %s (pids %s): give socket or pid'
                           % (len(named), params['name'], ', '.join(str(p.pid) for p in named)))
    if not named:
        return None, None
    refuse_libvirt(named)
    return locate(dict(params, name=None, pid=named[0].pid))


def relocate(params, qmp_socket, proc):
    """The VM as it runs now, after waiting for its lock: an update that held the lock
    may have moved it to another process."""
    if params.get('name'):
        return locate(params)
    if proc is not None and not process_alive(proc.pid):
        return reachable_socket(canonical_path(qmp_socket), None), None
    return qmp_socket, proc


class Source:
    """A running VM found and connected: its process, canonical QMP socket and, when
    liveupdate.qemu.vm launched it, its runtime paths."""

    def __init__(self, proc, qmp_socket, paths):
        self.proc = proc
        self.qmp_socket = qmp_socket
        self.paths = paths
        self.name = proc.cmdline.name()


def connect_source(qmp, proc, runtime_dir):
    """The Source behind the connected session ``qmp``; the process listening on
    the socket must be the one that was located (``proc``, when known)."""
    if proc is None:
        proc = QemuProcess.from_pid(qmp.peer_pid)
        if proc is None:
            raise InvalidInput('the process listening on %s is not QEMU' % qmp.path)
        refuse_libvirt([proc])
    elif qmp.peer_pid != proc.pid:
        raise InvalidInput('QMP socket %s belongs to pid %d, not to QEMU pid %d' % (qmp.path, qmp.peer_pid, proc.pid))
    return Source(proc, qmp.path, managed_paths(proc, runtime_dir))
