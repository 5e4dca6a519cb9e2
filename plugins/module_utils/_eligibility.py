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

UPDATABLE_STATES = ('running', 'paused')
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


def full_copy_risks(vm):
    """Why copying the RAM of ``vm`` (a full-copy migration) could corrupt its guest."""
    version = tuple(int(part) for part in vm['running']['version'].split('.')[:2])
    if vm['kvm'] or version >= TCG_FULL_COPY_SAFE_FROM:
        return []
    return ['a RAM copy from QEMU %s under TCG can lose guest writes (QEMU bug fixed in 9.0)'
            % vm['running']['version']]


def eligibility(vm):
    """Reasons why ``vm`` cannot get a device-state-only live update (empty: eligible)."""
    return state_reasons(vm) + memory_reasons(vm)


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


def update_refusals(vm, target, allow_full_copy=False, force=False):
    """(reasons the update of ``vm`` onto ``target`` is refused, whether it would copy RAM)."""
    reasons = state_reasons(vm)
    copy_reasons = memory_reasons(vm)
    full_copy = bool(copy_reasons)
    if full_copy and not allow_full_copy:
        reasons += copy_reasons
    elif full_copy and not force:
        reasons += ['%s; force: true copies anyway' % risk for risk in full_copy_risks(vm)]
    if not full_copy and 'x-ignore-shared' not in target['capabilities']:
        reasons.append('target binary %s has no x-ignore-shared migration capability' % target['path'])
    if vm['machine'] not in target['machines']:
        reasons.append('target binary %s does not know machine type %s' % (target['path'], vm['machine']))
    return reasons, full_copy
