# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._eligibility import (
    choose_mode, compatibility_reasons, eligibility, full_copy_risks, outdated_reasons, transfer_modes,
    update_refusals,
)

GIB = 1 << 30


def make_vm(**overrides):
    """What inspect() reports for a VM started by this collection: eligible and current."""
    vm = dict(
        status='running', migration='none', kvm=False,
        capabilities={'x-ignore-shared': False, 'postcopy-ram': False, 'xbzrle': False},
        memory_backends=[dict(id='mem0', type='memory-backend-file', size=GIB, share=True,
                              path='/dev/shm/liveupdate-qemu-web-1.ram', filesystem='tmpfs')],
        ram_size=GIB,
        binary=dict(path='/usr/bin/qemu-system-x86_64', deleted=False, replaced=False),
        running=dict(version='7.2.19', package='Debian 1:7.2+dfsg-7+deb12u18+b3'),
        target=dict(path='/usr/bin/qemu-system-x86_64', version='7.2.19', package='Debian 1:7.2+dfsg-7+deb12u18+b3'),
    )
    vm.update(overrides)
    return vm


def backend(**kw):
    return dict(dict(id='mem0', type='memory-backend-file', size=GIB, share=True, path='/dev/shm/x.ram'), **kw)


# --- eligibility ------------------------------------------------------------

@pytest.mark.parametrize('overrides', [
    dict(),
    dict(status='paused'),
    dict(migration='completed'),
    dict(migration='failed'),
    dict(migration='cancelled'),
    dict(capabilities={'x-ignore-shared': True, 'postcopy-ram': False}),
    dict(memory_backends=[backend(mapped='mapped')]),
    # a NUMA guest: two file backends that together hold all of its RAM
    dict(memory_backends=[backend(id='m0', size=GIB), backend(id='m1', size=GIB, path='/dev/hugepages/m1')],
         ram_size=2 * GIB),
], ids=['default', 'paused', 'after-completed', 'after-failed', 'after-cancelled', 'x-ignore-shared-on', 'mapped',
        'numa'])
def test_eligible(overrides):
    assert eligibility(make_vm(**overrides)) == []


@pytest.mark.parametrize('overrides, reasons', [
    (dict(status='postmigrate'), ['run state is postmigrate, not running or paused']),
    (dict(status='inmigrate'), ['run state is inmigrate, not running or paused']),
    (dict(status='shutdown'), ['run state is shutdown, not running or paused']),
    (dict(migration='active'), ['a migration is in progress (active)']),
    (dict(migration='setup'), ['a migration is in progress (setup)']),
    (dict(capabilities={'postcopy-ram': False}), ['this QEMU has no x-ignore-shared migration capability']),
    (dict(capabilities={'x-ignore-shared': False, 'postcopy-ram': True}),
     ['postcopy-ram is on; QEMU refuses it with x-ignore-shared: turn it off before a live update']),
    (dict(memory_backends=[backend(share=False)]),
     ['memory backend mem0 is share=off: x-ignore-shared would copy all its RAM']),
    (dict(memory_backends=[backend(id='pc.ram', type='memory-backend-ram', path=None, share=False)]),
     ['memory backend pc.ram is memory-backend-ram, not a named file: its RAM would be copied']),
    (dict(memory_backends=[backend(type='memory-backend-memfd', path=None)]),
     ['memory backend mem0 is memory-backend-memfd, not a named file: its RAM would be copied']),
    (dict(memory_backends=[backend(path=None)]),
     ['memory backend mem0 is memory-backend-file, not a named file: its RAM would be copied']),
    (dict(memory_backends=[], ram_size=GIB), ['1024 MiB of guest RAM is anonymous memory, not a memory backend']),
    (dict(memory_backends=[backend(mapped='deleted')]),
     ['memory file /dev/shm/x.ram of backend mem0 was deleted while the VM runs: its RAM is no longer at that path']),
    (dict(memory_backends=[backend(mapped='replaced')]),
     ['memory file /dev/shm/x.ram of backend mem0 was replaced while the VM runs: its RAM is no longer at that path']),
    (dict(memory_backends=[backend(size=GIB)], ram_size=GIB + 512 * (1 << 20)),
     ['512 MiB of guest RAM is anonymous memory, not a memory backend']),
    # everything at once, in order
    (dict(status='postmigrate', migration='active', capabilities={'postcopy-ram': True},
          memory_backends=[backend(id='a', share=False), backend(id='b', type='memory-backend-ram', path=None)],
          ram_size=3 * GIB),
     ['run state is postmigrate, not running or paused',
      'a migration is in progress (active)',
      'postcopy-ram is on; QEMU refuses it with x-ignore-shared: turn it off before a live update',
      'this QEMU has no x-ignore-shared migration capability',
      'memory backend a is share=off: x-ignore-shared would copy all its RAM',
      'memory backend b is memory-backend-ram, not a named file: its RAM would be copied',
      '1024 MiB of guest RAM is anonymous memory, not a memory backend']),
])
def test_ineligible(overrides, reasons):
    assert eligibility(make_vm(**overrides)) == reasons


# --- outdated_reasons -------------------------------------------------------

@pytest.mark.parametrize('overrides, reasons', [
    (dict(), []),
    (dict(target=None), []),
    (dict(running=None), []),
    (dict(binary=dict(path='/usr/bin/qemu-system-x86_64', deleted=True, replaced=False)),
     ['binary /usr/bin/qemu-system-x86_64 was deleted']),
    (dict(binary=dict(path='/usr/bin/qemu-system-x86_64', deleted=False, replaced=True)),
     ['binary /usr/bin/qemu-system-x86_64 was replaced on disk']),
    # deleted wins over replaced: a deleted binary's path cannot be compared
    (dict(binary=dict(path='/usr/bin/qemu-system-x86_64', deleted=True, replaced=True)),
     ['binary /usr/bin/qemu-system-x86_64 was deleted']),
    (dict(running=dict(version='7.2.15', package='Debian 1:7.2+dfsg-7+deb12u12')),
     ['runs QEMU 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12), target /usr/bin/qemu-system-x86_64 is 7.2.19 '
      '(Debian 1:7.2+dfsg-7+deb12u18+b3)']),
    # same upstream version, rebuilt package: still outdated
    (dict(running=dict(version='7.2.19', package='Debian 1:7.2+dfsg-7+deb12u18')),
     ['runs QEMU 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18), target /usr/bin/qemu-system-x86_64 is 7.2.19 '
      '(Debian 1:7.2+dfsg-7+deb12u18+b3)']),
    (dict(running=dict(version='8.0.0', package=None),
          target=dict(path='/opt/qemu/bin/qemu-system-x86_64', version='8.0.0', package=None)), []),
    (dict(binary=dict(path='/usr/bin/qemu-system-x86_64', deleted=True, replaced=False),
          running=dict(version='7.2.15', package='Debian 1:7.2+dfsg-7+deb12u12')),
     ['binary /usr/bin/qemu-system-x86_64 was deleted',
      'runs QEMU 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12), target /usr/bin/qemu-system-x86_64 is 7.2.19 '
      '(Debian 1:7.2+dfsg-7+deb12u18+b3)']),
])
def test_outdated_reasons(overrides, reasons):
    assert outdated_reasons(make_vm(**overrides)) == reasons


@pytest.mark.parametrize('kvm, version, risky', [
    (False, '7.2.19', True),
    (False, '8.2.10', True),
    (False, '9.0.0', False),
    (False, '10.1.2', False),
    (True, '7.2.19', False),
])
def test_full_copy_risks(kvm, version, risky):
    risks = full_copy_risks(make_vm(kvm=kvm, running=dict(version=version, package=None)))
    assert risks == (['a RAM copy from QEMU %s under TCG can lose guest writes (QEMU bug fixed in 9.0)' % version]
                     if risky else [])


# --- transfer modes -----------------------------------------------------------

V10 = dict(version='10.0.2', package='Debian 1:10.0.2+ds-2+deb13u1~bpo12+1')


def memfd_vm(**overrides):
    """A VM of liveupdate.qemu.vm with memory_backend memfd, on QEMU 10.0."""
    return make_vm(**dict(dict(running=V10, target=dict(V10, path='/opt/q10/bin/qemu-system-x86_64'),
                               aux_ram_share=True,
                               memory_backends=[backend(type='memory-backend-memfd', path=None)]), **overrides))


def probe(version='10.0.2', **overrides):
    """What probe_binary reports of a target."""
    return dict(dict(path='/opt/q/bin/qemu-system-x86_64', version=version, package=None,
                     capabilities=['events', 'x-ignore-shared', 'xbzrle'],
                     machines=['pc', 'pc-i440fx-7.2', 'pc-i440fx-%s' % version[:4].rstrip('.')], types={}), **overrides)


def test_transfer_modes_of_a_file_vm_on_7_2():
    modes = transfer_modes(make_vm(), probe('7.2.22'))
    assert modes == {'cpr-transfer': ['this VM runs QEMU 7.2.19; cpr-transfer needs 10.0 or later',
                                      'the target runs QEMU 7.2.22; cpr-transfer needs 10.0 or later'],
                     'x-ignore-shared': [], 'full-copy': ['a RAM copy from QEMU 7.2.19 under TCG can lose guest '
                                                          'writes (QEMU bug fixed in 9.0)']}


def test_transfer_modes_of_a_memfd_vm():
    modes = transfer_modes(memfd_vm(), probe())
    assert modes['cpr-transfer'] == [] and modes['full-copy'] == []
    assert modes['x-ignore-shared'] == ['memory backend mem0 is memory-backend-memfd, not a named file: its RAM '
                                        'would be copied']
    assert eligibility(memfd_vm()) == []


@pytest.mark.parametrize('overrides, reason', [
    (dict(aux_ram_share=False), '-machine aux-ram-share is off: ROM and video RAM would not be shared'),
    (dict(memory_backends=[backend(type='memory-backend-memfd', path=None, share=False)]),
     'memory backend mem0 is memory-backend-memfd,share=off; cpr-transfer needs share=on memfd or file backends'),
    (dict(memory_backends=[backend(id='pc.ram', type='memory-backend-ram', path=None)]),
     'memory backend pc.ram is memory-backend-ram; cpr-transfer needs share=on memfd or file backends'),
    (dict(ram_size=2 * GIB), 'part of guest RAM is anonymous memory, not a memory backend'),
])
def test_cpr_transfer_refused(overrides, reason):
    assert transfer_modes(memfd_vm(**overrides), probe())['cpr-transfer'] == [reason]


def test_cpr_transfer_needs_a_10_0_target():
    assert transfer_modes(memfd_vm(), probe('7.2.22'))['cpr-transfer'] == [
        'the target runs QEMU 7.2.22; cpr-transfer needs 10.0 or later']


@pytest.mark.parametrize('vm, target, requested, allow, force, reasons, mode', [
    # auto prefers cpr-transfer, then x-ignore-shared
    (memfd_vm(), probe(), 'auto', False, False, [], 'cpr-transfer'),
    (memfd_vm(memory_backends=[backend()]), probe(), 'auto', False, False, [], 'cpr-transfer'),
    (memfd_vm(memory_backends=[backend()], aux_ram_share=False), probe(), 'auto', False, False, [],
     'x-ignore-shared'),
    (make_vm(), probe('10.0.2'), 'auto', False, False, [], 'x-ignore-shared'),
    # a full copy only when asked, and under TCG before 9.0 only with force
    (make_vm(memory_backends=[backend(share=False)]), probe('7.2.22'), 'auto', True, False,
     ['a RAM copy from QEMU 7.2.19 under TCG can lose guest writes (QEMU bug fixed in 9.0); force: true copies '
      'anyway'], 'full-copy'),
    (make_vm(memory_backends=[backend(share=False)]), probe('7.2.22'), 'auto', True, True, [], 'full-copy'),
    (memfd_vm(memory_backends=[backend(share=False)]), probe(), 'auto', True, False, [], 'full-copy'),
    (memfd_vm(memory_backends=[backend(share=False)]), probe(), 'full-copy', False, False, [], 'full-copy'),
    # forced modes give their own reasons
    (make_vm(), probe('10.0.2'), 'cpr-transfer', False, False,
     ['this VM runs QEMU 7.2.19; cpr-transfer needs 10.0 or later'], 'cpr-transfer'),
    (memfd_vm(), probe(), 'x-ignore-shared', False, False,
     ['memory backend mem0 is memory-backend-memfd, not a named file: its RAM would be copied'], 'x-ignore-shared'),
])
def test_choose_mode(vm, target, requested, allow, force, reasons, mode):
    assert choose_mode(vm, target, requested, allow, force) == (reasons, mode)


def test_choose_mode_none_possible_names_both():
    vm = memfd_vm(memory_backends=[backend(type='memory-backend-memfd', path=None, share=False)])
    reasons, mode = choose_mode(vm, probe())
    assert mode is None
    assert reasons == ['memory backend mem0 is memory-backend-memfd, not a named file: its RAM would be copied',
                       'cpr-transfer: memory backend mem0 is memory-backend-memfd,share=off; cpr-transfer needs '
                       'share=on memfd or file backends']


def test_x_ignore_shared_missing_in_target():
    reasons, mode = choose_mode(make_vm(), probe('7.2.22', capabilities=['events']))
    assert mode is None and reasons == ['target binary /opt/q/bin/qemu-system-x86_64 has no x-ignore-shared '
                                        'migration capability']


# --- across versions ----------------------------------------------------------

def test_compatible():
    assert compatibility_reasons(make_vm(machine='pc-i440fx-7.2'), probe('10.0.2')) == []


def test_downgrade_needs_the_machine_type():
    vm = memfd_vm(machine='pc-q35-10.0', memory_backends=[backend()])
    assert compatibility_reasons(vm, probe('7.2.22', machines=['pc-q35-7.2'])) == [
        'target binary /opt/q/bin/qemu-system-x86_64 (QEMU 7.2.22) does not know machine type pc-q35-10.0; a '
        'downgrade needs a machine type both builds have: start VMs with the machine type of the oldest QEMU they '
        'may go back to (e.g. -machine pc-q35-7.2)']


def test_downgrade_allowed_with_a_pinned_machine_type():
    vm = memfd_vm(machine='pc-i440fx-7.2', memory_backends=[backend()])
    assert update_refusals(vm, probe('7.2.22')) == ([], 'x-ignore-shared')


def test_missing_types_and_capabilities():
    vm = make_vm(machine='pc-i440fx-7.2', capabilities={'x-ignore-shared': False, 'block': True, 'xbzrle': True})
    assert compatibility_reasons(vm, probe('10.0.2'), ['x-old-device']) == [
        'target binary /opt/q/bin/qemu-system-x86_64 (QEMU 10.0.2) has no device or object type x-old-device',
        'target binary /opt/q/bin/qemu-system-x86_64 (QEMU 10.0.2) has no migration capability block, which this VM '
        'has on']


def test_update_refusals_in_order():
    vm = make_vm(status='shutdown', machine='pc-i440fx-6.0')
    reasons, mode = update_refusals(vm, probe('10.0.2'), ['a'], 'cpr-transfer')
    assert mode == 'cpr-transfer'
    assert reasons == ['run state is shutdown, not running or paused',
                       'this VM runs QEMU 7.2.19; cpr-transfer needs 10.0 or later',
                       'target binary /opt/q/bin/qemu-system-x86_64 (QEMU 10.0.2) does not know machine type '
                       'pc-i440fx-6.0',
                       'target binary /opt/q/bin/qemu-system-x86_64 (QEMU 10.0.2) has no device or object type a']
