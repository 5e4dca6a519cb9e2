# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import shlex
import socket
import sys

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine
from ansible_collections.liveupdate.qemu.plugins.module_utils._discovery import inspect
from ansible_collections.liveupdate.qemu.plugins.module_utils._libvirt import (
    in_libvirt_dir, process_facts, recognise, refusal,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess


def args_file(text):
    """The argv of a libvirt test-suite .args file (its environment lines left out)."""
    words = shlex.split(text.replace('\\\n', ' '))
    return words[next(i for i, w in enumerate(words) if w.startswith('/usr/bin/qemu-system')):]


# libvirt tests/qemuxmlconfdata/boot-network.x86_64-latest.args (libvirt.git 6eaf3614): today's command line,
# -object in JSON, the monitor handed over as a file descriptor (no socket path on the command line).
BOOT_NETWORK = args_file(r'''
/usr/bin/qemu-system-x86_64 \
-name guest=QEMUGuest1,debug-threads=on \
-S \
-object '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain--1-QEMUGuest1/master-key.aes"}' \
-machine pc,usb=off,dump-guest-core=off,memory-backend=pc.ram,acpi=off \
-accel tcg \
-cpu qemu64 \
-m size=219136k \
-object '{"qom-type":"memory-backend-ram","id":"pc.ram","size":224395264}' \
-overcommit mem-lock=off \
-smp 1,sockets=1,cores=1,threads=1 \
-uuid c7a5fdbd-edaf-9455-926a-d65c16db1809 \
-display none \
-no-user-config \
-nodefaults \
-chardev socket,id=charmonitor,fd=1729,server=on,wait=off \
-mon chardev=charmonitor,id=monitor,mode=control \
-rtc base=utc \
-no-shutdown \
-boot strict=on \
-device '{"driver":"piix3-usb-uhci","id":"usb","bus":"pci.0","addr":"0x1.0x2"}' \
-blockdev '{"driver":"host_device","filename":"/dev/HostVG/QEMUGuest1","node-name":"libvirt-1-storage","read-only":false}' \
-device '{"driver":"ide-hd","bus":"ide.0","unit":0,"drive":"libvirt-1-storage","id":"ide0-0-0"}' \
-audiodev '{"id":"audio1","driver":"none"}' \
-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
-msg timestamp=on
''')

# libvirt tests/qemuxml2argvdata/audio-default-vnc.x86_64-latest.args (libvirt.git 0046e0b1): the test suite's
# domain directory (/tmp/lib/domain--1-NAME) instead of /var/lib/libvirt/qemu.
AUDIO_DEFAULT_VNC = args_file(r'''
/usr/bin/qemu-system-i386 \
-name guest=QEMUGuest1,debug-threads=on \
-S \
-object '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/tmp/lib/domain--1-QEMUGuest1/master-key.aes"}' \
-machine pc,accel=tcg,usb=off,dump-guest-core=off,memory-backend=pc.ram \
-cpu qemu64 \
-m 214 \
-object '{"qom-type":"memory-backend-ram","id":"pc.ram","size":224395264}' \
-overcommit mem-lock=off \
-smp 1,sockets=1,cores=1,threads=1 \
-uuid c7a5fdbd-edaf-9455-926a-d65c16db1809 \
-no-user-config \
-nodefaults \
-chardev socket,id=charmonitor,fd=1729,server=on,wait=off \
-mon chardev=charmonitor,id=monitor,mode=control \
-rtc base=utc \
-no-shutdown \
-no-acpi \
-boot strict=on \
-device piix3-usb-uhci,id=usb,bus=pci.0,addr=0x1.0x2 \
-blockdev '{"driver":"host_cdrom","filename":"/dev/cdrom","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}' \
-blockdev '{"node-name":"libvirt-1-format","read-only":true,"driver":"raw","file":"libvirt-1-storage"}' \
-device ide-cd,bus=ide.1,unit=0,drive=libvirt-1-format,id=ide0-1-0,bootindex=1 \
-audiodev id=audio1,driver=alsa \
-vnc 127.0.0.1:0,audiodev=audio1 \
-device cirrus-vga,id=video0,bus=pci.0,addr=0x2 \
-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
-msg timestamp=on
''')

# libvirt tests/qemuxml2argvdata/acpi-table.args (libvirt.git 0046e0b1): an older command line, before the master
# key and -name guest=: a plain -name and the monitor socket by path in the domain directory.
ACPI_TABLE = args_file(r'''
/usr/bin/qemu-system-x86_64 \
-name QEMUGuest1 \
-S \
-machine pc,accel=tcg,usb=off,dump-guest-core=off \
-m 214 \
-realtime mlock=off \
-smp 1,sockets=1,cores=1,threads=1 \
-uuid c7a5fdbd-edaf-9455-926a-d65c16db1809 \
-display none \
-no-user-config \
-nodefaults \
-chardev socket,id=charmonitor,path=/tmp/lib/domain--1-QEMUGuest1/monitor.sock,server=on,wait=off \
-mon chardev=charmonitor,id=monitor,mode=control \
-rtc base=utc \
-no-shutdown \
-acpitable sig=SLIC,file=/var/lib/libvirt/acpi/slic.dat \
-usb
''')

# The first lines of BOOT_NETWORK in the key=value syntax libvirt wrote before JSON -object (libvirt 6.0 and
# older), on a production host (/var/lib/libvirt/qemu/domain-<id>-<name>, monitor passed as "fd=..,server,nowait").
KEY_VALUE = ['/usr/libexec/qemu-kvm', '-name', 'guest=db,debug-threads=on', '-S',
             '-object', 'secret,id=masterKey0,format=raw,file=/var/lib/libvirt/qemu/domain-7-db/master-key.aes',
             '-machine', 'pc-q35-rhel8.2.0,accel=kvm,usb=off,dump-guest-core=off',
             '-chardev', 'socket,id=charmonitor,fd=30,server,nowait',
             '-mon', 'chardev=charmonitor,id=monitor,mode=control']

ALL_FOUR = ['name-debug-threads', 'master-key', 'charmonitor', 'libvirt-path']


def cmdline(argv):
    return QemuCommandLine.parse(argv)


# --- libvirt's command lines ------------------------------------------------

@pytest.mark.parametrize('argv, domain, markers', [
    (BOOT_NETWORK, 'QEMUGuest1', ALL_FOUR),
    (AUDIO_DEFAULT_VNC, 'QEMUGuest1', ALL_FOUR),
    (ACPI_TABLE, 'QEMUGuest1', ['charmonitor', 'libvirt-path']),
    (KEY_VALUE, 'db', ALL_FOUR),
    # only some of the marks: a master key, but the monitor on another chardev id
    ([a.replace('charmonitor', 'mon0') for a in KEY_VALUE], 'db', ['name-debug-threads', 'master-key', 'libvirt-path']),
    # the master key kept elsewhere (a relocated libvirt): the key's own shape is enough with one more mark
    ([a.replace('/var/lib/libvirt/qemu/domain-7-db', '/srv/lv/db') for a in KEY_VALUE], 'db',
     ['name-debug-threads', 'master-key', 'charmonitor']),
], ids=['boot-network', 'audio-default-vnc', 'acpi-table', 'key-value', 'other-monitor-id', 'key-elsewhere'])
def test_libvirt_command_lines(argv, domain, markers):
    assert recognise(cmdline(argv)) == dict(domain=domain, markers=markers)


# --- hand-launched command lines that borrow libvirt's style ----------------

@pytest.mark.parametrize('argv', [
    # tests/integration/operator_vm.py's VMs
    ['qemu-system-x86_64', '-name', 'op-web', '-machine', 'q35,memory-backend=mem0', '-accel', 'tcg',
     '-object', 'memory-backend-file,id=mem0,size=256M,mem-path=/dev/shm/web.ram,share=on',
     '-qmp', 'unix:/run/vms/web/qmp.sock,server=on,wait=off', '-pidfile', '/run/vms/web/qemu.pid', '-daemonize'],
    # a launcher script that copied libvirt's -name and monitor options (no libvirt file)
    ['qemu-system-x86_64', '-name', 'guest=web,debug-threads=on', '-msg', 'timestamp=on',
     '-chardev', 'socket,id=charmonitor,path=/srv/vms/web.monitor,server,nowait',
     '-mon', 'chardev=charmonitor,id=monitor,mode=control',
     '-drive', 'file=/var/lib/libvirt/images/web.qcow2,if=virtio'],
    # UEFI variables taken from libvirt's nvram directory: one libvirt path, nothing else
    ['qemu-system-x86_64', '-name', 'guest=web', '-drive', 'if=pflash,file=/var/lib/libvirt/qemu/nvram/web_VARS.fd',
     '-qmp', 'unix:/run/vms/web.qmp,server=on,wait=off'],
    # a secret of the operator's own
    ['qemu-system-x86_64', '-name', 'web', '-object', 'secret,id=sec0,file=/etc/vms/web.key',
     '-chardev', 'socket,id=charmonitor,path=/run/web.sock,server=on,wait=off',
     '-mon', 'chardev=charmonitor,id=monitor,mode=control'],
], ids=['operator-vm', 'libvirt-style-script', 'libvirt-nvram', 'own-secret'])
def test_hand_launched_is_not_libvirt(argv):
    assert recognise(cmdline(argv)) is None
    facts = dict(pid=42, parent='bash', cgroup='0::/user.slice/session-3.scope\n', pidfile_pid=None)
    assert recognise(cmdline(argv), facts) is None


# --- what the system says of the process -----------------------------------

@pytest.mark.parametrize('facts, marker', [
    (dict(pid=42, pidfile_pid=42), 'libvirt-pidfile'),
    (dict(pid=42, cgroup='0::/machine.slice/machine-qemu\\x2d1\\x2ddb.scope/libvirt/emulator\n'), 'libvirt-cgroup'),
    (dict(pid=42, cgroup='4:cpu,cpuacct:/machine/qemu-1-db.libvirt-qemu/emulator\n1:name=systemd:/\n'),
     'libvirt-cgroup'),
    (dict(pid=42, parent='virtqemud'), 'libvirt-parent'),
    (dict(pid=42, parent='libvirtd'), 'libvirt-parent'),
], ids=['pidfile', 'machined-scope', 'libvirt-cgroup-v1', 'virtqemud', 'libvirtd'])
def test_process_facts_alone_are_enough(facts, marker):
    """libvirt's own bookkeeping names the process: whatever its command line (a domain of a libvirt
    that writes other options)."""
    line = cmdline(['qemu-system-x86_64', '-name', 'guest=db'])
    assert recognise(line, facts) == dict(domain='db', markers=[marker])


def test_pidfile_of_another_process():
    assert recognise(cmdline(['qemu-system-x86_64', '-name', 'guest=db']), dict(pid=42, pidfile_pid=43)) is None


def test_process_facts_of_this_process():
    facts = process_facts(os.getpid(), 'no-such-domain-of-libvirt')
    with open('/proc/%d/comm' % os.getppid()) as handle:
        assert facts['parent'] == handle.read().strip()
    assert facts['pid'] == os.getpid() and facts['cgroup'] and facts['pidfile_pid'] is None
    assert process_facts(os.getpid(), '../../proc/self/stat')['pidfile_pid'] is None


@pytest.mark.parametrize('path, inside', [
    ('/var/lib/libvirt/qemu/domain-1-db/monitor.sock', True),
    ('/run/libvirt/qemu/db.pid', True),
    ('/home/u/.config/libvirt/qemu/lib/domain-3-db/monitor.sock', True),
    ('/tmp/lib/domain--1-QEMUGuest1/monitor.sock', True),
    ('/var/lib/libvirt/images/db.qcow2', False),
    ('/run/liveupdate-qemu/db/qmp.sock', False),
    ('/srv/domain-db/qmp.sock', False),
])
def test_in_libvirt_dir(path, inside):
    assert in_libvirt_dir(path) is inside


def test_refusal_says_why_and_what_instead():
    text = refusal('db')
    assert text.startswith('managed by libvirt (domain db): libvirt holds its QMP monitor')
    for advice in ('virsh migrate --live', 'virsh managedsave', 'restart'):
        assert advice in text
    assert refusal().startswith('managed by libvirt: ')


# --- vm_info's entry for such a process -------------------------------------

def test_inspect_reports_without_a_word_to_the_monitor(tmp_path):
    """vm_info lists the domain under its libvirt name, ineligible with the libvirt reason, and
    never connects to the monitor socket on its command line (libvirt's older path= form)."""
    domain_dir = tmp_path / 'domain-1-db'
    domain_dir.mkdir()
    monitor = socket.socket(socket.AF_UNIX)
    monitor.bind(str(domain_dir / 'monitor.sock'))
    monitor.listen()
    monitor.setblocking(False)
    argv = ['qemu-system-x86_64', '-name', 'guest=db,debug-threads=on',
            '-object', 'secret,id=masterKey0,format=raw,file=%s/master-key.aes' % domain_dir,
            '-chardev', 'socket,id=charmonitor,path=%s/monitor.sock,server=on,wait=off' % domain_dir,
            '-mon', 'chardev=charmonitor,id=monitor,mode=control']
    proc = QemuProcess(os.getpid(), argv, os.path.realpath(sys.executable))
    try:
        vm = inspect(proc, str(tmp_path), target_binary='/nonexistent/qemu', version_cache={'/nonexistent/qemu': None})
        with pytest.raises(BlockingIOError):
            monitor.accept()
    finally:
        monitor.close()
    assert vm['name'] == 'db' and vm['libvirt'] == dict(domain='db', markers=ALL_FOUR)
    assert (vm['managed'], vm['qmp_socket'], vm['qmp_error'], vm['status']) == (False, None, None, None)
    assert vm['eligible'] is False and vm['ineligible_reasons'] == [refusal('db')]
    assert (vm['transfer_modes'], vm['transfer_mode'], vm['interrupted_update']) == ({}, None, False)
