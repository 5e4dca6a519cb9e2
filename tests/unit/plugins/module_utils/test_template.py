# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_template: a clone's command line from its template's, and its MAC addresses."""

from __future__ import annotations

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess
from ansible_collections.liveupdate.qemu.plugins.module_utils._template import Template, clone_command, clone_mac
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths

QEMU = '/usr/bin/qemu-system-x86_64'
ARGV = [QEMU, '-name', 'guest=golden,debug-threads=on', '-machine', 'q35,memory-backend=mem0', '-m', '256M',
        '-object', 'memory-backend-file,id=mem0,size=256M,mem-path=/dev/shm/golden.ram,share=on',
        '-qmp', 'unix:/run/lu/golden/qmp.sock,server=on,wait=off', '-pidfile', '/run/lu/golden/qemu.pid',
        '-chardev', 'socket,id=serial0,path=/run/lu/golden/serial.sock,server=on,wait=off,'
                    'logfile=/run/lu/golden/serial.log,logappend=on',
        '-serial', 'chardev:serial0', '-drive', 'file=/img/golden.qcow2,format=qcow2,if=virtio,id=disk0',
        '-netdev', 'user,id=net0,hostfwd=tcp::8080-:80', '-device', 'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56',
        '-daemonize']
DATA = dict(argv=ARGV, binary=QEMU, machine='pc-q35-7.2', memory_files=['/dev/shm/golden.ram'])


def clone(argv=None, nics=(), name='web1'):
    template = Template('/var/lib/t', 'base')
    out = clone_command(dict(DATA, argv=argv or ARGV), template, name, RuntimePaths('/run/lu', name),
                        ['/var/lib/c/%s/disk0.qcow2' % name], list(nics))
    return QemuCommandLine.parse(out)


def test_a_clone_is_the_template_with_its_own_name_files_and_a_private_mapping():
    cmdline = clone()
    assert cmdline.values('name') == ['web1,debug-threads=on']
    assert cmdline.values('object') == [
        'memory-backend-file,id=mem0,size=256M,mem-path=/var/lib/t/base/memory.ram,share=off']
    assert cmdline.qmp_sockets() == ['/run/lu/web1/qmp.sock']
    assert cmdline.values('pidfile') == ['/run/lu/web1/qemu.pid']
    assert cmdline.chardev_sockets() == {'serial0': '/run/lu/web1/serial.sock'}
    assert 'logfile=/run/lu/web1/serial.log' in cmdline.values('chardev')[0]
    assert cmdline.values('drive') == ['file=/var/lib/c/web1/disk0.qcow2,format=qcow2,if=virtio,id=disk0']
    assert cmdline.values('netdev') == ['user,id=net0']  # the template's host ports are not the clone's
    assert cmdline.values('device') == ['virtio-net-pci,netdev=net0,mac=%s' % clone_mac('base', 'web1', 0)]
    assert cmdline.values('machine') == ['pc-q35-7.2,memory-backend=mem0']
    assert cmdline.values('incoming') == ['defer'] and cmdline.has('S') and not cmdline.has('daemonize')


def test_a_clone_may_have_its_own_mac_and_forwards():
    cmdline = clone(nics=[dict(mac='52:54:00:aa:bb:cc', hostfwd=['tcp::8081-:80'])])
    assert cmdline.values('netdev') == ['user,id=net0,hostfwd=tcp::8081-:80']
    assert cmdline.values('device') == ['virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc']


def test_macs_are_stable_distinct_and_locally_administered():
    macs = {clone_mac('base', 'web%d' % i, 0) for i in range(50)}
    assert len(macs) == 50
    assert clone_mac('base', 'web1', 0) == clone_mac('base', 'web1', 0) != clone_mac('base', 'web1', 1)
    assert all(int(m.split(':')[0], 16) & 0b10 for m in macs)


def test_a_template_tap_needs_the_clones_own_tap():
    argv = [a if a != 'user,id=net0,hostfwd=tcp::8080-:80' else 'tap,id=net0,ifname=tap0,script=no' for a in ARGV]
    with pytest.raises(InvalidInput, match=r'nics\[0\].ifname'):
        clone(argv)
    assert clone(argv, nics=[dict(ifname='tap7')]).values('netdev') == ['tap,id=net0,script=no,ifname=tap7']


@pytest.mark.parametrize('extra, why', [
    (['-vnc', ':1'], 'VNC on a TCP display'),
    (['-chardev', 'socket,id=m,host=0.0.0.0,port=4444,server=on'], 'TCP chardev'),
    (['-netdev', 'vde,id=v0'], 'vde network backend'),
])
def test_what_every_clone_cannot_have_of_its_own_is_refused(extra, why):
    with pytest.raises(InvalidInput, match=why):
        clone(ARGV + extra)


def test_a_clone_maps_the_template_memory_privately_and_is_not_its_user():
    argv = QemuCommandLine(QEMU, clone().options).argv()
    proc = QemuProcess(1, argv, QEMU)
    assert proc.maps_privately('/var/lib/t/base/memory.ram')
    shared = QemuProcess(2, ARGV, QEMU)
    assert not shared.maps_privately('/dev/shm/golden.ram')
