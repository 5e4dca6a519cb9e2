# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the rolling_update role: growing batches and report rows.

Jinja loops that build lists render to strings in ansible-core 2.19, and a set_fact looping over
N VMs costs N templatings of the whole list: these filters do each job in one call. The docs of
each filter are in the YAML file of its name beside this one."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError


def rollout_batches(vms, sizes):
    """``vms`` (vm_info entries) cut into batches of the ``sizes`` in turn, the last size
    repeating (as a play's ``serial`` list); each batch {'vms', 'targets', 'first', 'last'}."""
    if isinstance(sizes, int):
        sizes = [sizes]
    elif isinstance(sizes, str):  # "25" or "1,5,25", as role argument validation accepts them
        sizes = sizes.split(',')
    try:
        sizes = [int(size) for size in sizes]
    except (TypeError, ValueError):
        raise AnsibleFilterError('rollout_batches: sizes must be a list of integers, got %r' % (sizes,))
    if not sizes or min(sizes) < 1:
        raise AnsibleFilterError('rollout_batches: every batch size must be at least 1, got %r' % (sizes,))
    vms = list(vms)
    batches, start = [], 0
    while start < len(vms):
        size = sizes[min(len(batches), len(sizes) - 1)]
        chunk = vms[start:start + size]
        batches.append({'vms': chunk, 'targets': [{'socket': vm['qmp_socket']} for vm in chunk],
                        'first': start + 1, 'last': start + len(chunk)})
        start += len(chunk)
    return batches


def _version(side):
    side = side or {}
    return side.get('version') or '', side.get('package') or ''


def _upstream_version(package):
    """QEMU's version in a Debian package version: 10.0.2 of 1:10.0.2+ds-2+deb13u1~bpo12+1 (or of
    'Debian 1:10.0.2+ds-2+deb13u1~bpo12+1', as QEMU and qemu_build write it)."""
    match = re.search(r'(?:^|\s)(?:\d+:)?(\d+\.\d+(?:\.\d+)*)', package or '')
    return match.group(1) if match else ''


def _name(vm):
    """A vm_info entry's name; a QEMU started without -name goes by its pid."""
    return vm.get('name') or 'pid %s' % vm.get('pid')


def _row(base, **fields):
    row = dict(base)
    row.update(fields)
    return row


def _socket(result):
    """The QMP socket a live_update result is about: the located VM's, else the one asked for."""
    vm = result.get('vm') if isinstance(result.get('vm'), dict) else {}
    return vm.get('qmp_socket') or vm.get('socket')


def _live_update_row(base, result, vm, unhealthy, finished):
    """A row from one live_update result; ``vm``: the vm_info entry it is about (None when not
    known), whose name stands in when the update failed before finding the VM."""
    located = result.get('vm') if isinstance(result.get('vm'), dict) else {}
    name = located.get('name') or (_name(vm) if vm else '?')
    old = _version(result.get('old') or (vm or {}).get('running'))
    new = _version(result.get('new') or result.get('target'))
    msg = result.get('msg') or ''
    if result.get('failed'):
        outcome = 'failed'
        if result.get('step'):
            msg = 'at %s (rolled back: %s): %s' % (result['step'], result.get('rolled_back', '?'), msg)
    elif name in unhealthy:
        outcome = 'unhealthy'
    elif result.get('changed'):
        outcome = 'updated'
    else:
        outcome = 'unchanged'
    reset = result.get('connections_reset') or []
    if reset:
        msg = '%s%d connection(s) of user-mode networking reset: %s' % (
            msg + '; ' if msg else '', len(reset), ', '.join('%s-%s' % (c['local'], c['remote']) for c in reset[:5]))
    engine = (result.get('timings') or {}).get('engine')
    return _row(base, vm=name, old_version=old[0], old_package=old[1], new_version=new[0], new_package=new[1],
                guest_pause_ms=result.get('guest_pause_ms'), transfer_mode=result.get('transfer_mode') or '',
                result=outcome, msg=msg, finished=finished, duration_s=round(engine, 3) if engine is not None else None)


def _vm_info_rows(base, vms, result, msg, finished):
    rows = []
    for vm in vms:
        version, package = _version(vm.get('running'))
        text = msg if msg is not None else (
            '; '.join(vm.get('ineligible_reasons') or []) if result == 'skipped' else '')
        rows.append(_row(base, vm=_name(vm), old_version=version, old_package=package, new_version=version,
                         new_package=package, result=result, msg=text, finished=finished))
    return rows


def _plan_reasons(vm, transfer_mode, allow_full_copy, force):
    """(reasons a VM would be refused, the transfer mode it would take), from vm_info's eligibility
    (the running build standing in for a target that is not staged yet)."""
    modes = vm.get('transfer_modes') or {}
    reasons = list(vm.get('ineligible_reasons') or [])
    if not vm.get('qmp_socket') or vm.get('libvirt'):
        return reasons or ['no QMP unix socket of its own reaches it'], None
    if transfer_mode == 'auto':
        mode = vm.get('transfer_mode')
        if not mode and allow_full_copy and (force or not modes.get('full-copy')):
            # a full copy is allowed: what keeps the VM from a device-state-only update does not count
            mode = 'full-copy'
            reasons = [r for r in reasons if r not in (modes.get('x-ignore-shared') or [])]
        return reasons, mode
    reasons = [r for r in reasons if r not in (modes.get('x-ignore-shared') or [])]
    if modes and not (transfer_mode == 'full-copy' and force):
        reasons += modes.get(transfer_mode, ['unknown transfer mode %s' % transfer_mode])
    return reasons, transfer_mode


def _plan_row(base, vm, preflight, options):
    """A VM's row in a plan: from live_update's check-mode ``preflight`` result when the target
    could be probed, else from vm_info's eligibility."""
    running = _version(vm.get('running'))
    row = _row(base, vm=_name(vm), old_version=running[0], old_package=running[1])
    if preflight is not None:
        target = _version(vm.get('target'))
        row = _row(row, new_version=target[0], new_package=target[1],
                   transfer_mode=preflight.get('transfer_mode') or '')
        if preflight.get('failed'):
            return _row(row, result='refused', msg=preflight.get('msg') or '')
        return _row(row, result=options['planned_as'] if preflight.get('changed') else 'unchanged',
                    msg=options['planned_msg'] if preflight.get('changed') else '')
    # qemu_build knows the package it would stage; its version only once it has run the binary
    row = _row(row, new_version=options['new_version'] or _upstream_version(options['new_package']),
               new_package=options['new_package'] or '')
    reasons, mode = _plan_reasons(vm, options['transfer_mode'], options['allow_full_copy'], options['force'])
    if reasons or not mode:
        return _row(row, result='refused', transfer_mode=mode or '', msg='; '.join(reasons) or 'no transfer mode fits')
    return _row(row, result=options['planned_as'], transfer_mode=mode,
                msg=options['planned_msg'] or 'target not staged yet: its machine types and devices are checked once it is')


def report_rows(entries, base, source, vms=None, unhealthy=(), missing='not started', missing_msg='', result='unchanged',
                msg=None, finished='',
                preflight=None, transfer_mode='auto', allow_full_copy=False, force=False, new_version='',
                new_package='', planned_as='planned', planned_msg=''):
    """Rows of the rollout report (``base``: the role's row with every field) from ``source`` =
    'live_update' (the module's results; ``vms``: the vm_info entries they were asked for, those
    without a result getting ``missing`` and ``missing_msg``), 'vm_info' (vm_info entries, all with ``result`` and ``msg``; for 'skipped' the
    VM's ineligible reasons by default), or 'plan' (vm_info entries of a plan, with live_update's
    check-mode results for them, in the same order, in ``preflight`` when it ran)."""
    entries = list(entries or [])
    if source == 'live_update':
        # Results come for the VMs that were started, in order; those of ``vms`` with none were not
        # (an earlier one failed), or the module never answered (a lost connection): ``missing``.
        by_socket = dict((vm.get('qmp_socket'), vm) for vm in vms or [])
        unhealthy = set(unhealthy or ())
        rows = [_live_update_row(base, item, by_socket.get(_socket(item)), unhealthy, finished) for item in entries]
        answered = set(_socket(item) for item in entries)
        return rows + _vm_info_rows(base, [vm for vm in vms or [] if vm.get('qmp_socket') not in answered],
                                    missing, missing_msg, finished)
    if source == 'vm_info':
        return _vm_info_rows(base, entries, result, msg, finished)
    if source == 'plan':
        if preflight is not None and len(preflight) != len(entries):
            raise AnsibleFilterError('report_rows: %d preflight results for %d VMs' % (len(preflight), len(entries)))
        options = dict(transfer_mode=transfer_mode, allow_full_copy=allow_full_copy, force=force,
                       new_version=new_version, new_package=new_package, planned_as=planned_as,
                       planned_msg=planned_msg)
        return [_row(_plan_row(base, vm, preflight[i] if preflight is not None else None, options), finished=finished)
                for i, vm in enumerate(entries)]
    raise AnsibleFilterError("report_rows: source must be 'live_update', 'vm_info' or 'plan', got %r" % (source,))


def report_line(row):
    """One line of text for a report row, as the role prints it."""
    line = '%s %s: %s' % (row.get('host', ''), row.get('vm', ''), row.get('result', ''))
    old = '%s (%s)' % (row.get('old_version'), row.get('old_package')) if row.get('old_package') else row.get('old_version')
    new = '%s (%s)' % (row.get('new_version'), row.get('new_package')) if row.get('new_package') else row.get('new_version')
    if row.get('result') in ('updated', 'planned') or (row.get('result') == 'unhealthy' and new):
        line += ' %s -> %s' % (old or '?', new or '?')
        if row.get('transfer_mode'):
            line += ' by %s' % row['transfer_mode']
        if row.get('guest_pause_ms') is not None:
            line += ', guest paused %s ms' % row['guest_pause_ms']
    elif row.get('result') == 'unchanged' and old:
        line += ' on %s' % old
    if row.get('msg'):
        line += ': ' + ' '.join(str(row['msg']).split())
    return line


class FilterModule(object):
    def filters(self):
        return {'rollout_batches': rollout_batches, 'report_rows': report_rows, 'report_line': report_line}
