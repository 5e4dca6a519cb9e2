# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._eligibility import (
    eligibility, full_copy_risks, outdated_reasons,
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
