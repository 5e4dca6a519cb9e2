# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host_maintenance role's filters: the VMs of a maintenance and its report rows."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.liveupdate.qemu.plugins.filter.maintenance import maintenance_rows, maintenance_targets

BASE = dict(host='h1', vm='-', old_version='', old_package='', new_version='', new_package='', guest_pause_ms=None,
            transfer_mode='', result='', msg='', finished='', duration_s=None)
RUNNING = dict(version='10.0.2', package='1:10.0.2+ds-2')


def vm(name, pid, managed=True, **extra):
    entry = dict(name=name, pid=pid, managed=managed, qmp_socket='/run/lu/%s/qmp.sock' % name, libvirt=None,
                 running=RUNNING, ineligible_reasons=[])
    entry.update(extra)
    return entry


VMS = [vm('web1', 101), vm('db1', 102, managed=False),
       vm('lv', 103, managed=False, qmp_socket=None, libvirt=dict(domain='lv'), ineligible_reasons=['libvirt runs this VM'])]


def test_targets_ours_theirs_and_earlier_saves():
    records = [dict(path='/var/lib/liveupdate-qemu/saved/old1/saved.json'),
               '/var/lib/liveupdate-qemu/saved/web1/saved.json']
    targets = maintenance_targets(VMS, records)
    assert [(t['name'], t['pid'], t['ours'], t['earlier']) for t in targets] == [
        ('web1', None, True, False), ('db1', 102, True, False), ('lv', 103, False, False), ('old1', None, True, True)]
    assert targets[2]['reasons'] == ['libvirt runs this VM']


def test_targets_include_exclude_and_unnamed():
    targets = maintenance_targets(VMS + [vm(None, 104, managed=False)], ['/s/old1/saved.json', '/s/old2/saved.json'],
                                  exclude=['db1', 'old2'])
    assert [t['name'] for t in targets] == ['web1', 'lv', 'qemu-104', 'old1']
    assert [t['name'] for t in maintenance_targets(VMS, ['/s/old1/saved.json'], include=['web1'])] == ['web1']
    with pytest.raises(AnsibleFilterError):
        maintenance_targets(VMS, [dict(size=1)])


def test_plan_rows():
    targets = maintenance_targets(VMS, ['/s/old1/saved.json'])
    preflight = [dict(item=targets[0], changed=True), dict(item=targets[1], failed=True, msg='cannot save VM db1: memfd'),
                 dict(item=targets[3], changed=False)]
    rows = maintenance_rows(targets, BASE, preflight=preflight, check_mode=True, unsaved_as='refused',
                            unsaved_msg='; the reboot would end it')
    assert [(r['vm'], r['result']) for r in rows] == [
        ('web1', 'planned'), ('db1', 'refused'), ('lv', 'refused'), ('old1', 'planned')]
    assert rows[1]['msg'] == 'cannot save VM db1: memfd; the reboot would end it'
    assert (rows[0]['old_version'], rows[0]['new_version'], rows[0]['new_package']) == ('10.0.2', '10.0.2', '1:10.0.2+ds-2')
    assert rows[2]['msg'] == 'not saved: libvirt runs this VM; the reboot would end it'
    assert all(set(BASE) <= set(row) for row in rows)


def saved(name, **extra):
    info = dict(name=name, transfer='cpr-reboot', state_bytes=524288, version=RUNNING, saved_at='2026-11-29T08:00:00Z',
                stored_memory_file='/var/lib/mem/%s.ram' % name)
    info.update(extra)
    return info


def test_rows_of_a_maintenance():
    targets = maintenance_targets(VMS[:2], ['/s/old1/saved.json'])
    saves = [dict(item=t, changed=True, saved=saved(t['name']), timings=dict(save_ms=20.0, move_ms=480.0))
             for t in targets]
    restores = [dict(item=targets[0], changed=True, guest_pause_ms=61000.5, vm=dict(pid=201, status='running'),
                     timings=dict(restore_ms=90.0, verify_ms=10.0), verified=dict(ok=True)),
                dict(item=targets[1], failed=True, msg='VM db1 was restored (pid 202) but did not pass its checks',
                     vm=dict(pid=202, status='running'), verified=dict(ok=False)),
                dict(item=targets[2], failed=True, msg='memory file /var/lib/mem/old1.ram of saved VM old1 is missing')]
    after = [dict(name='web1', pid=201, running=dict(version='10.0.3', package='1:10.0.3+ds-1'))]
    rows = maintenance_rows(targets, BASE, saves=saves, restores=restores, after=after, maintained=True,
                            save_dir='/s', finished='2026-11-29T08:05:00Z')
    web1, db1, old1 = rows
    assert (web1['result'], web1['msg'], web1['guest_pause_ms'], web1['duration_s']) == ('updated', '', 61000.5, 0.6)
    assert (web1['old_version'], web1['new_version'], web1['new_package']) == ('10.0.2', '10.0.3', '1:10.0.3+ds-1')
    assert (web1['saved'], web1['restored'], web1['pid_before'], web1['pid_after']) == (True, True, 101, 201)
    assert web1['transfer_mode'] == 'cpr-reboot' and web1['finished'] == '2026-11-29T08:05:00Z'
    assert (db1['result'], db1['restored'], db1['pid_after']) == ('unhealthy', True, 202)
    assert (old1['result'], old1['restored'], old1['saved_earlier']) == ('failed', False, True)
    assert old1['old_version'] == '10.0.2'
    assert old1['msg'].startswith('saved by an earlier run; its restore failed: memory file') and '/s/old1 stays' in old1['msg']


def test_rows_when_a_save_fails_or_the_host_is_lost():
    targets = maintenance_targets(VMS[:2])
    saves = [dict(item=targets[0], changed=True, saved=saved('web1')),
             dict(item=targets[1], failed=True, msg='cannot save VM db1: a tap passed by fd')]
    restores = [dict(item=targets[0], changed=True, guest_pause_ms=35.0, vm=dict(pid=201))]
    rows = maintenance_rows(targets, BASE, saves=saves, restores=restores, maintained=False,
                            maintenance_msg='the save of db1 failed; the maintenance did not run')
    assert [(r['vm'], r['result'], r['saved'], r['restored']) for r in rows] == [
        ('web1', 'unchanged', True, True), ('db1', 'failed', False, False)]
    assert rows[0]['msg'] == 'restored without maintenance: the save of db1 failed; the maintenance did not run'
    assert rows[1]['msg'] == 'its save failed, it stays running: cannot save VM db1: a tap passed by fd'
    lost = maintenance_rows(targets[:1], BASE, saves=saves[:1], restores=[dict(item=targets[0], unreachable=True)],
                            maintained=True, save_dir='/s')
    assert lost[0]['result'] == 'unreachable' and 'saved in /s/web1' in lost[0]['msg']
    assert [r['result'] for r in maintenance_rows(targets, BASE, saves=None, not_started_msg='x')] == ['not started'] * 2
