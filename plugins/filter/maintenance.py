# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the host_maintenance role: the VMs to save, and the report rows of a maintenance.

As in rollout.py, each job is one call instead of Jinja loops over the VMs. The docs of each
filter are in the YAML file of its name beside this one."""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError


def _name(vm):
    """The name a VM is saved under: its -name; a QEMU started without one goes by its pid."""
    return vm.get('name') or 'qemu-%s' % vm.get('pid')


def _selected(name, include, exclude):
    return name not in (exclude or ()) and (not include or name in include)


def maintenance_targets(vms, records=(), include=(), exclude=()):
    """What a maintenance is about: one target per vm_info entry of ``vms`` ({'name', 'pid',
    'managed', 'ours', 'reasons', 'vm', 'earlier'}; the pid only for a QEMU that liveupdate.qemu.vm
    did not start; ``ours`` false for libvirt's domains and QEMUs that no QMP socket of their own
    reaches, with vm_info's reasons), then one per record of an earlier save (``records``: paths of
    saved.json files, or find results) whose VM does not run. ``include`` (when not empty) and
    ``exclude``: names."""
    targets, names = [], set(_name(vm) for vm in vms or [])
    for vm in vms or []:
        name = _name(vm)
        if not _selected(name, include, exclude):
            continue
        ours = bool(vm.get('qmp_socket')) and not vm.get('libvirt')
        reasons = [] if ours else (list(vm.get('ineligible_reasons') or [])
                                   or ['no QMP unix socket of its own reaches it'])
        targets.append(dict(name=name, pid=None if vm.get('managed') else vm.get('pid'),
                            managed=bool(vm.get('managed')), ours=ours, reasons=reasons, vm=vm, earlier=False))
    for record in records or []:
        path = record.get('path') if isinstance(record, dict) else record
        if not isinstance(path, str) or not path:
            raise AnsibleFilterError('maintenance_targets: a record must be a path or a find result, got %r' % (record,))
        name = os.path.basename(os.path.dirname(path.rstrip('/')))
        if name and name not in names and _selected(name, include, exclude):
            names.add(name)
            targets.append(dict(name=name, pid=None, managed=True, ours=True, reasons=[], vm=None, earlier=True))
    return targets


def _by_name(results):
    out = {}
    for result in results or []:
        item = result.get('item') if isinstance(result, dict) else None
        if isinstance(item, dict) and item.get('name'):
            out[item['name']] = result
    return out


def _after_by_name(vms):
    return dict((_name(vm), vm) for vm in vms or [])


def _version(side):
    side = side or {}
    return side.get('version') or '', side.get('package') or ''


def _ms(*results):
    """The module's timings of ``results`` added up, in seconds; None when there is none."""
    total, seen = 0.0, False
    for result in results:
        for value in ((result or {}).get('timings') or {}).values():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total += value
                seen = True
    return round(total / 1000.0, 3) if seen else None


def _msg(result):
    return ' '.join(str((result or {}).get('msg') or 'failed').split())


def _row(base, **fields):
    row = dict(base)
    row.update(fields)
    return row


def maintenance_rows(targets, base, preflight=None, saves=None, restores=None, after=None, maintained=False,
                     maintenance_msg='', check_mode=False, unsaved_as='skipped', unsaved_msg='',
                     not_started_msg='', missing='unreachable', save_dir='', finished=''):
    """One report row per target of maintenance_targets (``base``: the role's row with every field),
    from what happened to it: ``preflight`` (saved_vm in check mode), ``saves`` (state=saved) and
    ``restores`` (state=running), each a loop's results over the targets (matched by name, any
    order, None when that step did not run), ``after`` (vm_info entries after the restore)."""
    preflight, saves, restores = _by_name(preflight), (None if saves is None else _by_name(saves)), \
        (None if restores is None else _by_name(restores))
    after = _after_by_name(after)
    rows = []
    for target in targets or []:
        name = target['name']
        vm = target.get('vm') or {}
        check = preflight.get(name) or {}
        save = (saves or {}).get(name) or {}
        restore = (restores or {}).get(name) or {}
        saved = save.get('saved') or restore.get('saved') or check.get('saved') or {}
        # saved_vm's version is the VM's query-version as vm_info has it ({'version', 'package'})
        was = saved.get('version')
        old = _version(vm.get('running') if vm else (was if isinstance(was, dict) else {'version': was}))
        new = _version((after.get(name) or {}).get('running'))
        row = _row(base, vm=name, old_version=old[0], old_package=old[1],
                   transfer_mode=saved.get('transfer') or '', finished=finished,
                   saved=False, restored=False, pid_before=vm.get('pid'), pid_after=None,
                   saved_earlier=bool(target.get('earlier')))
        earlier = 'saved by an earlier run; ' if target.get('earlier') else ''
        record = os.path.join(save_dir, name) if save_dir else 'its record'
        if not target.get('ours', True):
            reasons = '; '.join(target.get('reasons') or [])
            rows.append(_row(row, result=unsaved_as, msg='not saved: %s%s' % (reasons, unsaved_msg)))
            continue
        if check.get('failed'):
            text = _msg(check)
            rows.append(_row(row, result=unsaved_as, msg='%s%s%s' % (
                '' if text.startswith('cannot save') else 'cannot be saved: ', text, unsaved_msg)))
            continue
        if check_mode:
            plan = 'would be restored' if target.get('earlier') else 'would be saved and restored'
            # restored onto the binary it was saved from (unless host_maintenance_binary says otherwise)
            rows.append(_row(row, result='planned', new_version=old[0], new_package=old[1], msg=earlier + plan))
            continue
        if saves is None or name not in saves:
            rows.append(_row(row, result='not started', msg=not_started_msg))
            continue
        if save.get('unreachable'):
            rows.append(_row(row, result='unreachable',
                             msg='lost the connection while saving it; the next run restores it if it was saved'))
            continue
        if save.get('failed'):
            rows.append(_row(row, result='failed', msg='its save failed, it stays running: ' + _msg(save)))
            continue
        row = _row(row, saved=True, state_bytes=saved.get('state_bytes'), saved_at=saved.get('saved_at'),
                   stored_memory_file=saved.get('stored_memory_file'),
                   save_ms=(save.get('timings') or {}).get('save_ms'))
        if restores is None or name not in restores or restore.get('unreachable'):
            rows.append(_row(row, result=missing, duration_s=_ms(save),
                             msg=earlier + 'saved in %s; not restored yet: the next run restores it%s' % (
                                 record, '' if not maintenance_msg else ' (%s)' % maintenance_msg)))
            continue
        restored_vm = restore.get('vm') if isinstance(restore.get('vm'), dict) else {}
        row = _row(row, guest_pause_ms=restore.get('guest_pause_ms'), duration_s=_ms(save, restore),
                   restore_ms=(restore.get('timings') or {}).get('restore_ms'),
                   pid_after=restored_vm.get('pid') or (after.get(name) or {}).get('pid'),
                   new_version=new[0], new_package=new[1])
        if restore.get('failed'):
            verified = restore.get('verified')
            unhealthy = isinstance(verified, dict) and verified and restored_vm.get('status') in ('running', 'paused')
            rows.append(_row(row, result='unhealthy' if unhealthy else 'failed', restored=bool(unhealthy),
                             msg=earlier + 'its restore failed: %s; %s' % (
                                 _msg(restore), 'it runs again' if unhealthy else record + ' stays: run again')))
            continue
        if maintained:
            text = earlier.rstrip('; ')
        else:
            text = earlier + ('restored without maintenance: ' + maintenance_msg if maintenance_msg else 'restored')
        rows.append(_row(row, restored=True, result='updated' if maintained else 'unchanged', msg=text))
    return rows


class FilterModule(object):
    def filters(self):
        return {'maintenance_targets': maintenance_targets, 'maintenance_rows': maintenance_rows}
