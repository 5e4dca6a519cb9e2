# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After the switch: the destination takes over what the source held. Built by
a normal update (``after_update``) and by the recovery of an interrupted one
(``after_interruption``); run the same way in both cases. Never rolls back."""

from __future__ import annotations

import os

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuOpts, canonical_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._destination import tap_downscripts
from ansible_collections.liveupdate.qemu.plugins.module_utils._faults import fault_point
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import kill_and_wait, shutdown_ladder
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import (
    host_forwards, qmp_version, restore_capabilities,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession


def temporaries(proc):
    """The PATH.lu-TOKEN files named on a destination's command line that still exist."""
    found = []
    for arg in proc.argv:
        for value in [arg] + [v for dummy, v in QemuOpts.parse(arg).items]:
            value = value[len('unix:'):] if value.startswith('unix:') else value
            if canonical_path(value) != value and os.path.exists(value) and value not in found:
                found.append(value)
    return found


def stop_source(src, source_pid, backends, downscripts, step_timeout):
    """End the source after the switch; returns how. A backend with discard-data=on would
    punch the guest's pages out of the shared memory file when the source exits: the
    destination runs on that file now. A source with tap ``downscripts`` is killed, so
    that they leave the destination's taps alone; others get the shutdown ladder."""
    for backend in backends:
        if backend['type'] == 'memory-backend-file':
            try:
                src.execute('qom-set', {'path': '/objects/%s' % backend['id'], 'property': 'discard-data',
                                        'value': False})
            except QMPError:
                pass  # past the switch, the source is ended whatever it answers
    if downscripts:
        # The guest state is on the destination already: nothing is lost by not quitting.
        kill_and_wait(source_pid)
        return 'SIGKILL'
    return shutdown_ladder(source_pid, lambda: src.execute('quit'), step_timeout)


class TakeOver:
    """End the source, give its names to the destination (``renames``: (temporary,
    canonical); ``stray``, a temporary file without a canonical twin, is removed), add
    the source's host forwards there, and record the new argv of a managed VM."""

    def __init__(self, source, dest_pid, dest_argv, dest_status, renames, stray, backends, downscripts, forwards,
                 capabilities=None):
        self.source = source
        self.dest_pid = dest_pid
        self.dest_argv = dest_argv
        self.dest_status = dest_status
        self.renames = renames
        self.stray = stray
        self.backends = backends
        self.downscripts = downscripts
        self.forwards = forwards
        self.capabilities = capabilities or {}  # the operator's migration capabilities, to give back

    @classmethod
    def after_update(cls, source, preflight, spawned, switched):
        plan = preflight.plan
        return cls(source, spawned.pid, spawned.argv, switched.dest_status, plan.renames, preflight.stray,
                   preflight.vm['memory_backends'], plan.downscripts, preflight.forwards, preflight.source_caps)

    @classmethod
    def after_interruption(cls, src, source, dest, backends, capabilities):
        """``dest``: the QemuProcess an interrupted update left running the guest;
        ``capabilities``: the operator's, as that update recorded them (or None)."""
        source_cmdline = source.proc.cmdline
        # A destination pidfile the source had no twin of is not renamed, but removed.
        stray = None if source_cmdline.has('pidfile') else (dest.cmdline.values('pidfile') or [None])[0]
        renames = [(t, canonical_path(t)) for t in temporaries(dest) if t != stray]
        forwards = host_forwards(src) if source_cmdline.has('netdev') else []
        return cls(source, dest.pid, dest.argv, 'running', renames, stray, backends,
                   tap_downscripts(source.proc.argv), forwards, capabilities)

    def run(self, src, timeout, step_timeout):
        """Returns dict(stop_method, new)."""
        stop_method = self.end_source(src, step_timeout)
        with QMPSession(self.source.qmp_socket, timeout) as dest:
            return dict(stop_method=stop_method, new=self.configure(dest))

    def end_source(self, src, step_timeout):
        """Stop the source and move its names to the destination; returns how it was stopped."""
        # Owner and mode of the source's files, given to the destination's (a
        # daemonized QEMU creates its sockets with umask 027).
        modes = {}
        for dummy, canonical in self.renames:
            try:
                modes[canonical] = os.stat(canonical)
            except OSError:
                pass
        stop_method = stop_source(src, self.source.proc.pid, self.backends, self.downscripts, step_timeout)
        fault_point('source-stopped', self.source.proc.pid, self.dest_pid)
        self.move_names(modes)
        return stop_method

    def move_names(self, modes=None):
        modes = modes or {}
        for temporary, canonical in self.renames:
            if os.path.exists(temporary):
                if canonical in modes:
                    os.chown(temporary, modes[canonical].st_uid, modes[canonical].st_gid)
                    os.chmod(temporary, modes[canonical].st_mode & 0o7777)
                os.rename(temporary, canonical)
        if self.stray and os.path.exists(self.stray):
            os.unlink(self.stray)

    def configure(self, dest):
        """Over the destination's (now canonical) QMP session: capabilities, host forwards, vm.json.
        Returns ``new``."""
        if self.capabilities:
            restore_capabilities(dest, self.capabilities)
        for netdev, rule in self.forwards:
            dest.execute('human-monitor-command', {'command-line': 'hostfwd_add %s %s' % (netdev, rule)})
        new = dict(pid=self.dest_pid, binary=self.dest_argv[0], status=self.dest_status, **qmp_version(dest))
        if self.source.paths:
            self.source.paths.record_argv(self.dest_argv)
        return new
