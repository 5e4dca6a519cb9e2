# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""vm_info's report: every QEMU process on the host, what it runs, whether it
is outdated and whether it can be live-updated (the rules are _eligibility's;
a VM that libvirt runs is reported without a word to its monitor, see _libvirt)."""

from __future__ import annotations

import os
import shutil

from ansible_collections.liveupdate.qemu.plugins.module_utils._eligibility import (
    TRANSFER_MODES, eligibility, outdated_reasons, transfer_modes,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._journal import Journal
from ansible_collections.liveupdate.qemu.plugins.module_utils._libvirt import libvirt_domain, refusal
from ansible_collections.liveupdate.qemu.plugins.module_utils._locate import managed_paths, own_socket, qmp_socket_of
from ansible_collections.liveupdate.qemu.plugins.module_utils._lock import lock_path
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import qemu_processes
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import binary_version
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import query_vm
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._saved import template_of


def find_target(exe, target_binary):
    """The binary to compare with: the one given, else the installed binary of the same name."""
    if target_binary:
        return target_binary
    return shutil.which(os.path.basename(exe))


def ask_qemu(vm, proc, timeout):
    """Fill ``vm`` with what QEMU ``proc`` says over QMP, or say why it could not be asked."""
    if not vm['qmp_socket']:
        vm['qmp_error'] = 'no unix QMP socket on its command line'
        return
    try:
        with QMPSession(own_socket(proc, vm['qmp_socket']), timeout) as qmp:
            if qmp.peer_pid != proc.pid:
                raise QMPError('QMP socket %s is served by pid %s (an update of this VM is under way, or was '
                               'interrupted)' % (qmp.path, qmp.peer_pid))
            vm.update(query_vm(qmp, proc.pid))
    except QMPError as exc:
        vm['qmp_error'] = str(exc)


def inspect(proc, runtime_dir, target_binary=None, timeout=5.0, version_cache=None):
    """Everything vm_info reports about one QEMU process."""
    libvirt = libvirt_domain(proc)
    paths = None if libvirt else managed_paths(proc, runtime_dir)
    target_path = find_target(proc.exe, target_binary)
    binary_state = proc.binary_state()
    # libvirt's monitor is libvirt's alone: its socket is not reported as one to use.
    qmp_socket = None if libvirt else qmp_socket_of(proc, paths)
    vm = dict(pid=proc.pid, name=proc.cmdline.name(), argv=proc.argv, managed=paths is not None,
              runtime_dir=paths.root if paths else None, qmp_socket=qmp_socket, libvirt=libvirt,
              interrupted_update=bool(qmp_socket and runtime_dir
                                      and Journal(lock_path(runtime_dir, qmp_socket, '.journal')).read()),
              binary=dict(path=proc.exe, deleted=binary_state == 'deleted', replaced=binary_state == 'replaced'),
              target=binary_version(target_path, version_cache) if target_path else None,
              running=None, kvm=None, machine=None, status=None, migration=None, capabilities={}, memory_backends=[],
              ram_size=None, qmp_error=None)
    if not libvirt:
        ask_qemu(vm, proc, timeout)
    # A clone maps its template's memory file privately: its RAM is not that file.
    vm['clone_of'] = next((template_of(b['path']) for b in vm['memory_backends']
                           if not b['share'] and template_of(b['path'])), None)
    vm['outdated_reasons'] = outdated_reasons(vm)
    vm['outdated'] = bool(vm['outdated_reasons'])
    if libvirt or vm['qmp_error']:
        vm['transfer_modes'], vm['transfer_mode'] = {}, None
        vm['ineligible_reasons'] = [refusal(libvirt['domain']) if libvirt else 'QMP: %s' % vm['qmp_error']]
    else:
        # Against the target's version (its capabilities are only known to live_update's probe).
        modes = transfer_modes(vm, vm['target'] or vm['running'])
        vm['transfer_modes'] = modes
        vm['transfer_mode'] = next((m for m in TRANSFER_MODES[:2] if not modes[m]), None)
        vm['ineligible_reasons'] = eligibility(vm, modes)
    vm['eligible'] = not vm['ineligible_reasons']
    return vm


def discover(runtime_dir, target_binary=None, timeout=5.0):
    """vm_info's list: one entry per QEMU process on the host."""
    cache = {}
    return [inspect(p, runtime_dir, target_binary, timeout, cache) for p in qemu_processes()]
