# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rules: is a VM outdated, can it be live-updated by moving device state
only, and what refuses an update onto a given target binary. Each rule is
written once; vm_info reports them and the engine's preflight enforces them.

A ``vm`` here is the dict of _qemu_state.query_vm (plus ``binary`` and
``target`` in vm_info's report); a ``target`` is _qemu_binary.probe_binary's."""

from __future__ import annotations

import re

UPDATABLE_STATES = ('running', 'paused')
# The transfer modes, in the order 'auto' prefers them: QEMU's own CheckPoint-Restart (RAM stays
# mapped, handed to the new process as file descriptors), then x-ignore-shared (RAM stays in its
# named shared file), then a full copy of the RAM (only when asked).
TRANSFER_MODES = ('cpr-transfer', 'x-ignore-shared', 'full-copy')
CPR_TRANSFER_FROM = (10, 0)
CPR_BACKENDS = ('memory-backend-file', 'memory-backend-memfd')
MACHINE_VERSION_RE = re.compile(r'-\d+\.\d+(\.\d+)?$')
IDLE_MIGRATION_STATES = ('none', 'completed', 'failed', 'cancelled')
# Before 9.0 a source under TCG can lose guest writes while it copies RAM (QEMU commit "physmem: Fix
# migration dirty bitmap coherency with TCG memory access"); seen here as guests corrupted by full copies.
TCG_FULL_COPY_SAFE_FROM = (9, 0)


def state_reasons(vm):
    """Why ``vm`` cannot be live-updated at all right now."""
    reasons = []
    if vm['status'] not in UPDATABLE_STATES:
        reasons.append('run state is %s, not running or paused' % vm['status'])
    if vm['migration'] not in IDLE_MIGRATION_STATES:
        reasons.append('a migration is in progress (%s)' % vm['migration'])
    if vm['capabilities'].get('postcopy-ram'):
        reasons.append('postcopy-ram is on; QEMU refuses it with x-ignore-shared: turn it off before a live update')
    for b in vm['memory_backends']:
        if b.get('mapped') in ('deleted', 'replaced'):
            # A new QEMU would create (or map) another file at the path, not the guest's RAM.
            reasons.append('memory file %s of backend %s was %s while the VM runs: its RAM is no longer at that '
                           'path' % (b['path'], b['id'], b['mapped']))
    return reasons


def memory_reasons(vm):
    """Why a migration of ``vm`` would copy guest RAM instead of leaving it in place."""
    reasons = []
    if 'x-ignore-shared' not in vm['capabilities']:
        reasons.append('this QEMU has no x-ignore-shared migration capability')
    backends = vm['memory_backends']
    for b in backends:
        if b['type'] != 'memory-backend-file' or not b['path']:
            reasons.append('memory backend %s is %s, not a named file: its RAM would be copied' % (b['id'], b['type']))
        elif not b['share']:
            reasons.append('memory backend %s is share=off: x-ignore-shared would copy all its RAM' % b['id'])
    backed = sum(b['size'] for b in backends)
    if backed < vm['ram_size']:
        reasons.append('%d MiB of guest RAM is anonymous memory, not a memory backend' % ((vm['ram_size'] - backed) >> 20))
    return reasons


def version_tuple(version):
    return tuple(int(part) for part in version.split('.')[:2])


def cpr_transfer_reasons(vm, target_version):
    """Why ``vm`` cannot move onto a QEMU of ``target_version`` with cpr-transfer."""
    reasons = []
    for who, version in (('this VM', vm['running']['version']), ('the target', target_version)):
        if version_tuple(version) < CPR_TRANSFER_FROM:
            reasons.append('%s runs QEMU %s; cpr-transfer needs %d.%d or later' % ((who, version) + CPR_TRANSFER_FROM))
    backends = vm['memory_backends']
    for b in backends:
        if b['type'] not in CPR_BACKENDS or not b['share']:
            reasons.append('memory backend %s is %s%s; cpr-transfer needs share=on memfd or file backends'
                           % (b['id'], b['type'], '' if b['share'] else ',share=off'))
    if sum(b['size'] for b in backends) < vm['ram_size']:
        reasons.append('part of guest RAM is anonymous memory, not a memory backend')
    if vm.get('aux_ram_share') is False:
        reasons.append('-machine aux-ram-share is off: ROM and video RAM would not be shared')
    return reasons


def transfer_modes(vm, target):
    """{mode: reasons it cannot be used} for moving ``vm`` onto ``target`` (a probe, or vm_info's
    {'version', ...} of the target binary: capabilities unknown are assumed present)."""
    caps = target.get('capabilities')
    ignore_shared = memory_reasons(vm)
    if caps is not None and 'x-ignore-shared' not in caps:  # then a probe, with a path
        ignore_shared.append('target binary %s has no x-ignore-shared migration capability' % target['path'])
    return {'cpr-transfer': cpr_transfer_reasons(vm, target['version']), 'x-ignore-shared': ignore_shared,
            'full-copy': full_copy_risks(vm)}


def full_copy_risks(vm):
    """Why copying the RAM of ``vm`` (a full-copy migration) could corrupt its guest."""
    if vm['kvm'] or version_tuple(vm['running']['version']) >= TCG_FULL_COPY_SAFE_FROM:
        return []
    return ['a RAM copy from QEMU %s under TCG can lose guest writes (QEMU bug fixed in 9.0)'
            % vm['running']['version']]


def eligibility(vm, modes=None):
    """Reasons why ``vm`` cannot get a device-state-only live update (empty: eligible);
    ``modes``: transfer_modes() for its target (by default vm_info's ``target``, else itself)."""
    modes = modes or transfer_modes(vm, vm.get('target') or vm['running'])
    reasons = state_reasons(vm)
    if modes['cpr-transfer'] and modes['x-ignore-shared']:
        reasons += modes['x-ignore-shared']
    return reasons


def outdated_reasons(vm):
    """Why ``vm`` (vm_info's report) does not run its target binary's QEMU."""
    reasons = []
    if vm['binary']['deleted']:
        reasons.append('binary %s was deleted' % vm['binary']['path'])
    elif vm['binary']['replaced']:
        reasons.append('binary %s was replaced on disk' % vm['binary']['path'])
    target, running = vm['target'], vm['running']
    if target and running and (target['version'], target['package']) != (running['version'], running['package']):
        reasons.append('runs QEMU %s (%s), target %s is %s (%s)' % (
            running['version'], running['package'], target['path'], target['version'], target['package']))
    return reasons


def runs_target(vm, binary_state, target):
    """True when ``vm`` already runs ``target``'s QEMU from a binary still on disk."""
    return (binary_state == 'current'
            and (vm['running']['version'], vm['running']['package']) == (target['version'], target['package']))


def compatibility_reasons(vm, target, missing_types=()):
    """What of ``vm`` the ``target`` binary (a probe) would not load: its machine type, the device
    and object types of its command line that the target lacks (``missing_types``) and the
    migration capabilities its operator turned on. Across major versions these are what differ."""
    reasons = []
    if vm['machine'] not in target['machines']:
        hint = ''
        if version_tuple(target['version']) < version_tuple(vm['running']['version']):
            older = '%s-%d.%d' % ((MACHINE_VERSION_RE.sub('', vm['machine']),) + version_tuple(target['version']))
            hint = ('; a downgrade needs a machine type both builds have: start VMs with the machine type of the '
                    'oldest QEMU they may go back to (e.g. -machine %s)' % older)
        reasons.append('target binary %s (QEMU %s) does not know machine type %s%s'
                       % (target['path'], target['version'], vm['machine'], hint))
    if missing_types:
        reasons.append('target binary %s (QEMU %s) has no device or object type %s'
                       % (target['path'], target['version'], ', '.join(missing_types)))
    lost = sorted(name for name, on in vm['capabilities'].items() if on and name not in target['capabilities'])
    if lost:
        reasons.append('target binary %s (QEMU %s) has no migration capability %s, which this VM has on'
                       % (target['path'], target['version'], ', '.join(lost)))
    return reasons


def choose_mode(vm, target, requested='auto', allow_full_copy=False, force=False):
    """(reasons the update of ``vm`` onto ``target`` is refused, the transfer mode to use).
    ``requested``: a mode of TRANSFER_MODES, or 'auto' (the first that is possible; a full copy
    only with ``allow_full_copy``)."""
    modes = transfer_modes(vm, target)
    if requested == 'auto':
        mode = next((m for m in TRANSFER_MODES[:2] if not modes[m]), None)
        if mode is None and allow_full_copy:
            mode = 'full-copy'
        if mode is None:
            cpr = [] if version_tuple(vm['running']['version']) < CPR_TRANSFER_FROM else modes['cpr-transfer']
            return modes['x-ignore-shared'] + ['cpr-transfer: %s' % r for r in cpr], None
    else:
        mode = requested
    reasons = list(modes[mode])
    if mode == 'full-copy' and force:
        reasons = []
    elif mode == 'full-copy':
        reasons = ['%s; force: true copies anyway' % risk for risk in reasons]
    return reasons, mode


def update_refusals(vm, target, missing_types=(), requested='auto', allow_full_copy=False, force=False):
    """(reasons the update of ``vm`` onto ``target`` is refused, the transfer mode)."""
    reasons, mode = choose_mode(vm, target, requested, allow_full_copy, force)
    return state_reasons(vm) + reasons + compatibility_reasons(vm, target, missing_types), mode
