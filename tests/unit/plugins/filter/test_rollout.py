# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rolling_update role's filters: growing batches and report rows."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.liveupdate.qemu.plugins.filter.rollout import report_line, report_rows, rollout_batches

BASE = dict(host='h1', vm='-', old_version='', old_package='', new_version='', new_package='', guest_pause_ms=None,
            transfer_mode='', result='', msg='', finished='', duration_s=None)


def vms(count):
    return [dict(name='vm%d' % i, pid=100 + i, qmp_socket='/run/lu/vm%d.qmp' % i) for i in range(1, count + 1)]


@pytest.mark.parametrize('count, sizes, expected', [
    (100, [1, 5, 25, 100], [1, 5, 25, 69]),
    (10, [1, 5, 25, 100], [1, 5, 4]),
    (7, [2], [2, 2, 2, 1]),
    (7, 3, [3, 3, 1]),
    (7, '3', [3, 3, 1]),
    (7, '1,2', [1, 2, 2, 2]),
    (1, [1, 5], [1]),
    (0, [1, 5], []),
])
def test_batches_grow_and_the_last_size_repeats(count, sizes, expected):
    batches = rollout_batches(vms(count), sizes)
    assert [len(b['vms']) for b in batches] == expected
    assert [vm['name'] for b in batches for vm in b['vms']] == ['vm%d' % i for i in range(1, count + 1)]
    assert [t['socket'] for b in batches for t in b['targets']] == [vm['qmp_socket'] for vm in vms(count)]
    assert all(b['last'] - b['first'] + 1 == len(b['vms']) for b in batches)
    assert [b['first'] for b in batches] == [1 + sum(expected[:i]) for i in range(len(expected))]


@pytest.mark.parametrize('sizes', [[0], [1, 0], [], ['x'], None])
def test_bad_batch_sizes_are_refused(sizes):
    with pytest.raises(AnsibleFilterError, match='rollout_batches'):
        rollout_batches(vms(3), sizes)


def result(name, **fields):
    out = dict(vm=dict(name=name, qmp_socket='/s'), changed=True, old=dict(version='7.2.22', package='1:7.2+a'),
               new=dict(version='10.0.2', package='1:10.0.2+b'), guest_pause_ms=6.5, transfer_mode='x-ignore-shared',
               timings=dict(engine=0.1234))
    out.update(fields)
    return out


def test_rows_from_live_update_results():
    batch = [dict(name=n, pid=i, qmp_socket='/run/lu/%s.qmp' % n, running=dict(version='7.2.22', package='1:7.2+a'))
             for i, n in enumerate('abcdefg')]
    results = [result('a'), result('b', failed=True, step='migrate', rolled_back=True, msg='migration failed\nboom',
                                   new=None, target=dict(version='10.0.2', package='p')),
               result('c', changed=False, guest_pause_ms=None, timings={}), result('d'),
               # failed before it was found: only the socket it was asked by
               dict(vm=dict(socket='/run/lu/e.qmp'), failed=True, changed=False, msg='no such VM')]
    for item in results[:4]:
        item['vm']['qmp_socket'] = '/run/lu/%s.qmp' % item['vm']['name']
    rows = report_rows(results, BASE, 'live_update', vms=batch, unhealthy=['d'], finished='2026-11-29T05:00:00Z')
    assert [(r['vm'], r['result']) for r in rows] == [
        ('a', 'updated'), ('b', 'failed'), ('c', 'unchanged'), ('d', 'unhealthy'), ('e', 'failed'),
        ('f', 'not started'), ('g', 'not started')]
    a = rows[0]
    assert (a['host'], a['old_version'], a['new_package'], a['guest_pause_ms'], a['duration_s'], a['finished']) == (
        'h1', '7.2.22', '1:10.0.2+b', 6.5, 0.123, '2026-11-29T05:00:00Z')
    assert rows[1]['new_version'] == '10.0.2'
    assert rows[1]['msg'] == 'at migrate (rolled back: True): migration failed\nboom'
    assert rows[2]['duration_s'] is None
    assert rows[4]['old_version'] == '7.2.22' and set(rows[4]) == set(BASE)
    lost = report_rows(None, BASE, 'live_update', vms=batch[:2], missing='unreachable', missing_msg='lost')
    assert [(r['vm'], r['result'], r['msg']) for r in lost] == [('a', 'unreachable', 'lost'), ('b', 'unreachable', 'lost')]


def test_rows_of_vms_from_vm_info():
    vm = dict(name='x', pid=1, running=dict(version='10.0.2', package='p'), ineligible_reasons=['managed by libvirt'])
    (row,) = report_rows([vm], BASE, 'vm_info')
    assert (row['vm'], row['result'], row['old_version'], row['new_version'], row['msg']) == (
        'x', 'unchanged', '10.0.2', '10.0.2', '')
    (row,) = report_rows([vm], BASE, 'vm_info', result='skipped')
    assert (row['result'], row['msg']) == ('skipped', 'managed by libvirt')
    (row,) = report_rows([dict(vm, name=None, pid=42)], BASE, 'vm_info', result='not started', msg='stopped')
    assert (row['vm'], row['result'], row['msg']) == ('pid 42', 'not started', 'stopped')


def info(name, **fields):
    out = dict(name=name, pid=1, qmp_socket='/run/lu/%s.qmp' % name, libvirt=None,
               running=dict(version='7.2.22', package='old'), target=None, eligible=True,
               ineligible_reasons=[], transfer_mode='x-ignore-shared',
               transfer_modes={'cpr-transfer': ['source is QEMU 7.2.22'], 'x-ignore-shared': [],
                               'full-copy': []})
    out.update(fields)
    return out


def test_plan_from_preflight_when_the_target_was_probed():
    # results in the order of the VMs; one failed before it was found (no name)
    preflight = [dict(vm=dict(name='a'), changed=True, transfer_mode='x-ignore-shared'),
                 dict(vm=dict(socket='/run/lu/b.qmp'), failed=True, msg='machine type pc-q35-10.0 unknown'),
                 dict(vm=dict(name='c'), changed=False)]
    staged = dict(version='10.0.2', package='n')
    vms = [info('a', target=staged), info('b', target=staged), info('c', target=staged)]
    rows = report_rows(vms, BASE, 'plan', preflight=preflight)
    assert [(r['vm'], r['result'], r['msg'], r['new_version']) for r in rows] == [
        ('a', 'planned', '', '10.0.2'), ('b', 'refused', 'machine type pc-q35-10.0 unknown', '10.0.2'),
        ('c', 'unchanged', '', '10.0.2')]
    # a real run that a refusal stopped: the others are not started
    rows = report_rows(vms, BASE, 'plan', preflight=preflight, planned_as='not started', planned_msg='refused another')
    assert [(r['result'], r['msg']) for r in rows][0] == ('not started', 'refused another')
    with pytest.raises(AnsibleFilterError, match='2 preflight results for 3 VMs'):
        report_rows(vms, BASE, 'plan', preflight=preflight[:2])


def test_plan_from_eligibility_when_the_target_is_not_staged():
    private = info('p', eligible=False, transfer_mode=None, ineligible_reasons=['RAM not in a share=on file'],
                   transfer_modes={'cpr-transfer': ['x'], 'x-ignore-shared': ['RAM not in a share=on file'],
                                   'full-copy': []})
    rows = report_rows([info('a', target=dict(version='7.2.22', package='installed')), private], BASE, 'plan',
                       preflight=None, new_version='10.0.2', new_package='n')
    assert [(r['vm'], r['result'], r['transfer_mode']) for r in rows] == [
        ('a', 'planned', 'x-ignore-shared'), ('p', 'refused', '')]
    assert (rows[0]['new_version'], rows[0]['new_package']) == ('10.0.2', 'n') and 'not staged' in rows[0]['msg']
    assert rows[1]['msg'] == 'RAM not in a share=on file'
    for package in ('1:10.0.2+ds-2+deb13u1~bpo12+1', 'Debian 1:10.0.2+ds-2+deb13u1~bpo12+1', 'Debian 7.2.0-1'):
        unknown = report_rows([info('a')], BASE, 'plan', new_version=None, new_package=package)[0]
        assert unknown['new_version'] == package.split()[-1].split(':')[-1].split('+')[0].split('-')[0], package
    full = report_rows([private], BASE, 'plan', allow_full_copy=True)[0]
    assert (full['result'], full['transfer_mode']) == ('planned', 'full-copy')
    asked = report_rows([info('a')], BASE, 'plan', transfer_mode='cpr-transfer')[0]
    assert (asked['result'], asked['msg']) == ('refused', 'source is QEMU 7.2.22')
    # a full copy allowed does not hide what keeps the VM from any update
    stuck = dict(private, ineligible_reasons=['run state is postmigrate', 'RAM not in a share=on file'])
    row = report_rows([stuck], BASE, 'plan', allow_full_copy=True)[0]
    assert (row['result'], row['msg']) == ('refused', 'run state is postmigrate')
    # a VM whose QMP failed has no transfer modes: no invented reason
    broken = info('q', transfer_modes={}, transfer_mode=None, ineligible_reasons=['QMP: timeout'])
    row = report_rows([broken], BASE, 'plan', transfer_mode='x-ignore-shared')[0]
    assert (row['result'], row['msg']) == ('refused', 'QMP: timeout')


def test_vms_no_socket_of_ours_reaches_are_refused():
    reason = 'managed by libvirt (domain web): libvirt holds its QMP monitor'
    libvirt = info('web', qmp_socket=None, libvirt=dict(domain='web'), eligible=False, transfer_mode=None,
                   ineligible_reasons=[reason], running=None)
    (row,) = report_rows([libvirt], BASE, 'plan')
    assert (row['result'], row['msg'], row['old_version']) == ('refused', reason, '')
    (row,) = report_rows([info('x', qmp_socket=None)], BASE, 'plan')
    assert (row['result'], row['msg']) == ('refused', 'no QMP unix socket of its own reaches it')


def test_unknown_source_is_refused():
    with pytest.raises(AnsibleFilterError, match='source'):
        report_rows([], BASE, 'nonsense')


def test_report_line_is_one_line():
    row = dict(BASE, vm='a', result='updated', old_version='7.2.22', old_package='o', new_version='10.0.2',
               new_package='n', transfer_mode='x-ignore-shared', guest_pause_ms=6.5)
    assert report_line(row) == 'h1 a: updated 7.2.22 (o) -> 10.0.2 (n) by x-ignore-shared, guest paused 6.5 ms'
    failed = dict(BASE, vm='b', result='failed', msg='one\n  two\tthree')
    assert report_line(failed) == 'h1 b: failed: one two three'
