# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the rolling_update role: growing batches and report rows.

Jinja loops that build lists render to strings in ansible-core 2.19, and a set_fact looping over
N VMs costs N templatings of the whole list: these filters do each job in one call. The docs of
each filter are in the YAML file of its name beside this one."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

# Results of live_update's VMs that count as failed in a row (the rest: updated / unchanged).
FAILED = 'failed'
UNHEALTHY = 'unhealthy'


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


def _row(base, **fields):
    row = dict(base)
    row.update(fields)
    return row


def _vm_name(result):
    """The VM of a live_update result (a dict once located; what was asked for otherwise)."""
    vm = result.get('vm')
    return (vm.get('name') if isinstance(vm, dict) else vm) or '?'


def _live_update_row(base, result, unhealthy, finished):
    name = _vm_name(result)
    old = _version(result.get('old'))
    new = _version(result.get('new') or result.get('target'))
    if result.get('failed'):
        outcome = FAILED
    elif name in unhealthy:
        outcome = UNHEALTHY
    elif result.get('changed'):
        outcome = 'updated'
    else:
        outcome = 'unchanged'
    engine = (result.get('timings') or {}).get('engine')
    return _row(base, vm=name, old_version=old[0], old_package=old[1], new_version=new[0], new_package=new[1],
                guest_pause_ms=result.get('guest_pause_ms'), transfer_mode=result.get('transfer_mode') or '',
                result=outcome, msg=result.get('msg') or '', finished=finished,
                duration_s=round(engine, 3) if engine is not None else None)


def _plan_row(base, vm, preflight, transfer_mode, allow_full_copy, force, new_version):
    """A VM's line in a plan: from live_update's check-mode preflight when the target could be
    probed, else from vm_info's eligibility (the running build standing in for the target)."""
    running = _version(vm.get('running'))
    target = _version(vm.get('target')) if vm.get('target') else (new_version, '')
    row = _row(base, vm=vm['name'], old_version=running[0], old_package=running[1],
               new_version=target[0], new_package=target[1])
    if preflight is not None:
        if preflight.get('failed'):
            return _row(row, result='refused', msg=preflight.get('msg') or '',
                        transfer_mode=preflight.get('transfer_mode') or '')
        return _row(row, result='planned' if preflight.get('changed') else 'unchanged',
                    transfer_mode=preflight.get('transfer_mode') or '')
    modes = vm.get('transfer_modes') or {}
    if transfer_mode == 'auto':
        mode, reasons = vm.get('transfer_mode'), list(vm.get('ineligible_reasons') or [])
        if not mode and allow_full_copy and (force or not modes.get('full-copy')):
            mode, reasons = 'full-copy', []
    else:
        mode = transfer_mode
        reasons = [r for r in vm.get('ineligible_reasons') or [] if r not in (modes.get('x-ignore-shared') or [])]
        if not (transfer_mode == 'full-copy' and force):
            reasons += modes.get(transfer_mode, ['unknown transfer mode %s' % transfer_mode])
    if not vm.get('qmp_socket') or vm.get('libvirt'):
        reasons = reasons or ['no QMP unix socket of its own reaches it']
    if reasons or not mode:
        return _row(row, result='refused', transfer_mode=mode or '', msg='; '.join(reasons) or 'no transfer mode fits')
    return _row(row, result='planned', transfer_mode=mode,
                msg='target not staged yet: its machine types and devices are checked once it is')


def report_rows(entries, base, source, unhealthy=(), finished='', preflight=None,
                transfer_mode='auto', allow_full_copy=False, force=False, new_version=''):
    """Rows of the rollout report (``base``: the role's row with every field) from
    ``source`` = 'live_update' (the module's results), 'unchanged' (vm_info entries left alone)
    or 'plan' (vm_info entries of a check-mode run, with live_update's check-mode ``preflight``
    results when there are any)."""
    entries = list(entries or [])
    if source == 'live_update':
        unhealthy = set(unhealthy or ())
        return [_live_update_row(base, result, unhealthy, finished) for result in entries]
    if source == 'unchanged':
        rows = []
        for vm in entries:
            version, package = _version(vm.get('running'))
            rows.append(_row(base, vm=vm['name'], old_version=version, old_package=package, new_version=version,
                             new_package=package, result='unchanged', finished=finished))
        return rows
    if source == 'plan':
        by_name = dict((_vm_name(r), r) for r in preflight or [])
        return [_plan_row(base, vm, by_name.get(vm['name']), transfer_mode, allow_full_copy, force, new_version)
                for vm in entries]
    raise AnsibleFilterError("report_rows: source must be 'live_update', 'unchanged' or 'plan', got %r" % (source,))


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
