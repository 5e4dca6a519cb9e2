# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plan_destination: the source QEMU's argv rewritten for a live update's destination.

The test_bug_* tests pin bugs found against QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18) and fixed;
each says what QEMU does with the planned argv.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts
from ansible_collections.liveupdate.qemu.plugins.module_utils._destination import (
    DestinationPlan, Refused, plan_destination,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput

TOKEN = '5eed5eed'        # this update's
OLD_TOKEN = '0123abcd'    # an earlier update's, still in the running QEMU's argv
TARGET = '/usr/bin/qemu-system-x86_64'
PC = 'pc-i440fx-7.2'


def tmp(path):
    return '%s.lu-%s' % (path, TOKEN)


def renames(*paths):
    return [(tmp(p), p) for p in paths]


def plan(args, control='/run/vm/qmp.sock', machine=PC, binary='qemu-system-x86_64'):
    return plan_destination([binary] + list(args), control, machine, TOKEN)


def tail(p):
    return ['-pidfile', p.pidfile, '-S', '-incoming', 'defer']


def middle(p):
    """The destination's argv without its binary and the fixed tail."""
    argv = p.argv(TARGET)
    assert argv[-5:] == tail(p)
    return argv[1:-5]


# --- a VM launched by liveupdate.qemu.vm ------------------------------------

WEB1 = ('qemu-system-x86_64 -name guest=web1 -nodefaults -no-user-config -display none '
        '-machine pc,memory-backend=mem0 -m 512M '
        '-object memory-backend-file,id=mem0,size=512M,mem-path=/dev/shm/liveupdate-qemu-web1.ram,share=on '
        '-smp 1 -qmp unix:/run/lu/web1/qmp.sock,server=on,wait=off -pidfile /run/lu/web1/qemu.pid -accel tcg '
        '-chardev socket,id=serial0,path=/run/lu/web1/serial.sock,server=on,wait=off,'
        'logfile=/run/lu/web1/serial.log,logappend=on '
        '-serial chardev:serial0 -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22 '
        '-device virtio-net-pci,netdev=net0 -vga std -vnc unix:/run/lu/web1/vnc.sock -daemonize').split()
WEB1_QMP = '/run/lu/web1/qmp.sock'

WEB1_DEST = [
    TARGET, '-name', 'guest=web1', '-nodefaults', '-no-user-config', '-display', 'none',
    '-machine', 'pc-i440fx-7.2,memory-backend=mem0', '-m', '512M',
    '-object', 'memory-backend-file,id=mem0,size=512M,mem-path=/dev/shm/liveupdate-qemu-web1.ram,share=on',
    '-smp', '1', '-qmp', 'unix:/run/lu/web1/qmp.sock.lu-5eed5eed,server=on,wait=off', '-accel', 'tcg',
    '-chardev', 'socket,id=serial0,path=/run/lu/web1/serial.sock.lu-5eed5eed,server=on,wait=off,'
                'logfile=/run/lu/web1/serial.log,logappend=on',
    '-serial', 'chardev:serial0', '-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0',
    '-vga', 'std', '-vnc', 'unix:/run/lu/web1/vnc.sock.lu-5eed5eed',
    '-pidfile', '/run/lu/web1/qemu.pid.lu-5eed5eed', '-S', '-incoming', 'defer',
]
WEB1_RENAMES = renames('/run/lu/web1/qmp.sock', '/run/lu/web1/serial.sock', '/run/lu/web1/vnc.sock',
                       '/run/lu/web1/qemu.pid')


def test_vm_module_argv():
    p = plan_destination(WEB1, WEB1_QMP, PC, TOKEN)
    assert p.argv(TARGET) == WEB1_DEST
    assert p.renames == WEB1_RENAMES
    assert (p.qmp_socket, p.pidfile, p.canonical_pidfile) == (
        tmp(WEB1_QMP), tmp('/run/lu/web1/qemu.pid'), '/run/lu/web1/qemu.pid')
    assert p.taps == []
    assert p.console_sockets == [tmp('/run/lu/web1/serial.sock')]
    assert p.as_dict(TARGET) == dict(argv=WEB1_DEST, renames=[list(r) for r in WEB1_RENAMES], taps=[], streams=[],
                                     console_sockets=[tmp('/run/lu/web1/serial.sock')],
                                     downscripts=[], qmp_socket=tmp(WEB1_QMP))


@pytest.mark.parametrize('args, drained', [
    # serial ports on server sockets, legacy and -chardev; not the HMP monitor
    (['-serial', 'unix:/run/s.sock,server=on,wait=off', '-monitor', 'unix:/run/m.sock,server,nowait',
      '-chardev', 'socket,id=s1,path=/run/s1.sock,server=on,wait=off', '-device', 'isa-serial,chardev=s1'],
     ['/run/s.sock', '/run/s1.sock']),
    # virtio serial ports (the guest agent channel) and consoles; not a QMP or HMP monitor on a chardev,
    # not a chardev with no console device (vhost-user, rng-egd...)
    (['-chardev', 'socket,id=c0,path=/run/q.sock,server=on,wait=off', '-mon', 'chardev=c0,mode=control',
      '-chardev', 'socket,id=h0,path=/run/h.sock,server=on,wait=off', '-mon', 'chardev=h0,mode=readline',
      '-chardev', 'socket,id=qga0,path=/run/qga.sock,server=on,wait=off', '-device', 'virtio-serial',
      '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
      '-chardev', 'socket,id=con0,path=/run/con.sock,server=on,wait=off', '-device', 'virtconsole,chardev=con0',
      '-chardev', 'socket,id=vu0,path=/run/vu.sock,server=on,wait=off'], ['/run/qga.sock', '/run/con.sock']),
    # client-mode sockets and files are not servers
    (['-chardev', 'socket,id=c1,path=/run/c.sock', '-serial', 'chardev:c1', '-serial', 'file:/run/ser.log'], []),
])
def test_console_sockets(args, drained):
    argv = [TARGET, '-qmp', 'unix:%s,server=on,wait=off' % WEB1_QMP] + args
    assert plan_destination(argv, WEB1_QMP, PC, TOKEN).console_sockets == [tmp(p) for p in drained]


def test_vm_module_argv_after_an_earlier_update():
    """The destination of the last update is the source of this one: its argv holds
    the temporary names of that update and ends in -pidfile TMP -S -incoming defer.
    The next plan is the same as the first, with this update's token."""
    earlier = plan_destination(WEB1, WEB1_QMP, PC, OLD_TOKEN)
    running = earlier.argv('/usr/bin/qemu-system-x86_64')
    assert '/run/lu/web1/qmp.sock.lu-0123abcd' in ' '.join(running)
    again = plan_destination(running, WEB1_QMP, PC, TOKEN)
    assert again.argv(TARGET) == WEB1_DEST
    assert again.renames == WEB1_RENAMES
    assert again.qmp_socket == tmp(WEB1_QMP)


# --- option rewrites: argvs of QEMUs started by other tools -----------------

Q = ['-qmp', 'unix:/run/vm/qmp.sock,server=on,wait=off']
QT = ['-qmp', 'unix:/run/vm/qmp.sock.lu-5eed5eed,server=on,wait=off']
M = ['-machine', 'pc']
MT = ['-machine', PC]
QR = renames('/run/vm/qmp.sock')
JSON_OBJECT = json.dumps({'qom-type': 'memory-backend-file', 'id': 'mem0', 'size': 536870912,
                          'mem-path': '/dev/shm/db.ram', 'share': True})

# source args, destination args (between binary and tail), renames, machine type, control socket
REWRITES = [
    pytest.param(['-M', 'pc'] + Q, MT + QT, QR, PC, None, id='M-alias'),
    pytest.param(['-M', 'q35,accel=kvm:tcg,memory-backend=ram0'] + Q,
                 ['-machine', 'pc-q35-7.2,accel=kvm:tcg,memory-backend=ram0'] + QT, QR, 'pc-q35-7.2', None,
                 id='M-alias-keys-kept'),
    pytest.param(['-machine', 'accel=tcg,memory-backend=mem0'] + Q,
                 ['-machine', 'pc-i440fx-7.2,accel=tcg,memory-backend=mem0'] + QT, QR, PC, None,
                 id='machine-without-type'),
    pytest.param(['-m', '256'] + Q, MT + ['-m', '256'] + QT, QR, PC, None, id='no-machine'),
    pytest.param(['-machine', 'pc-i440fx-7.1'] + Q, ['-machine', 'pc-i440fx-7.1'] + QT, QR, 'pc-i440fx-7.1', None,
                 id='machine-already-versioned'),
    pytest.param(M + ['-chardev', 'socket,id=charmonitor,path=/var/lib/vms/db/monitor.sock,server=on,wait=off',
                      '-mon', 'chardev=charmonitor,id=monitor,mode=control'],
                 MT + ['-chardev', 'socket,id=charmonitor,path=/var/lib/vms/db/monitor.sock.lu-5eed5eed,'
                                   'server=on,wait=off',
                       '-mon', 'chardev=charmonitor,id=monitor,mode=control'],
                 renames('/var/lib/vms/db/monitor.sock'), PC, '/var/lib/vms/db/monitor.sock', id='mon-control'),
    pytest.param(M + ['-qmp', 'unix:/run/vm/qmp.sock,server=on'], MT + QT, QR, PC, None, id='qmp-wait-forced-off'),
    pytest.param(M + ['-qmp-pretty', 'unix:/run/vm/qmp.sock,server=on,wait=on'],
                 MT + ['-qmp-pretty', 'unix:/run/vm/qmp.sock.lu-5eed5eed,server=on,wait=off'], QR, PC, None,
                 id='qmp-pretty-wait-on'),
    pytest.param(M + ['--qmp=unix:/run/vm/qmp.sock,server=on,wait=off'], MT + QT, QR, PC, None, id='double-dash'),
    pytest.param(M + ['-qmp', 'unix:/run/vm,,1/qmp.sock,server=on,wait=off'],
                 MT + ['-qmp', 'unix:/run/vm,,1/qmp.sock.lu-5eed5eed,server=on,wait=off'],
                 renames('/run/vm,1/qmp.sock'), PC, '/run/vm,1/qmp.sock', id='comma-in-path'),
    pytest.param(M + Q + ['-chardev', 'socket,id=con0,path=/run/vm/console.sock,server=on,wait=on',
                          '-serial', 'chardev:con0'],
                 MT + QT + ['-chardev', 'socket,id=con0,path=/run/vm/console.sock.lu-5eed5eed,server=on,wait=off',
                            '-serial', 'chardev:con0'],
                 QR + renames('/run/vm/console.sock'), PC, None, id='chardev-server-wait-on'),
    pytest.param(M + Q + ['-chardev', 'unix,id=con0,path=/run/vm/console.sock,server=on'],
                 MT + QT + ['-chardev', 'unix,id=con0,path=/run/vm/console.sock.lu-5eed5eed,server=on,wait=off'],
                 QR + renames('/run/vm/console.sock'), PC, None, id='chardev-unix-backend'),
    pytest.param(M + Q + ['-chardev', 'socket,id=vhu0,path=/run/vhost-user/net0.sock',
                          '-netdev', 'vhost-user,id=net1,chardev=vhu0'],
                 MT + QT + ['-chardev', 'socket,id=vhu0,path=/run/vhost-user/net0.sock',
                            '-netdev', 'vhost-user,id=net1,chardev=vhu0'],
                 QR, PC, None, id='chardev-client-untouched'),
    pytest.param(M + Q + ['-serial', 'unix:/run/vm/serial.sock,server=on,wait=off',
                          '-monitor', 'unix:/run/vm/hmp.sock,server=on'],
                 MT + QT + ['-serial', 'unix:/run/vm/serial.sock.lu-5eed5eed,server=on,wait=off',
                            '-monitor', 'unix:/run/vm/hmp.sock.lu-5eed5eed,server=on,wait=off'],
                 QR + renames('/run/vm/serial.sock', '/run/vm/hmp.sock'), PC, None, id='legacy-unix-servers'),
    pytest.param(M + Q + ['-serial', 'none', '-parallel', 'none', '-monitor', 'none', '-serial', 'null',
                          '-serial', 'chardev:s0'],
                 MT + QT + ['-serial', 'none', '-parallel', 'none', '-monitor', 'none', '-serial', 'null',
                            '-serial', 'chardev:s0'], QR, PC, None, id='legacy-none'),
    pytest.param(M + Q + ['-chardev', 'file,id=log0,path=/var/log/vm.log', '-serial', 'chardev:log0'],
                 MT + QT + ['-chardev', 'file,id=log0,path=/var/log/vm.log,append=on', '-serial', 'chardev:log0'],
                 QR, PC, None, id='chardev-file-append'),
    pytest.param(M + Q + ['-chardev', 'file,id=log0,path=/var/log/vm.log,append=off'],
                 MT + QT + ['-chardev', 'file,id=log0,path=/var/log/vm.log,append=on'], QR, PC, None,
                 id='chardev-file-append-forced'),
    pytest.param(M + Q + ['-vga', 'std', '-vnc', 'unix:/run/vm/vnc.sock,password=on'],
                 MT + QT + ['-vga', 'std', '-vnc', 'unix:/run/vm/vnc.sock.lu-5eed5eed,password=on'],
                 QR + renames('/run/vm/vnc.sock'), PC, None, id='vnc-unix'),
    pytest.param(M + Q + ['-vnc', 'none'], MT + QT + ['-vnc', 'none'], QR, PC, None, id='vnc-none'),
    pytest.param(M + Q + ['-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,restrict=off,hostfwd=udp::5353-:53',
                          '-device', 'e1000,netdev=net0'],
                 MT + QT + ['-netdev', 'user,id=net0,restrict=off', '-device', 'e1000,netdev=net0'], QR, PC, None,
                 id='hostfwd-removed'),
    pytest.param(M + Q + ['-netdev', json.dumps({'type': 'user', 'id': 'net0', 'hostfwd': [{'str': 'tcp::2222-:22'}]})],
                 MT + QT + ['-netdev', json.dumps({'type': 'user', 'id': 'net0'})], QR, PC, None,
                 id='json-netdev-hostfwd-removed'),
    pytest.param(M + Q + ['-object', JSON_OBJECT], MT + QT + ['-object', JSON_OBJECT], QR, PC, None,
                 id='json-object-verbatim'),
    pytest.param(M + Q + ['-net', 'nic,model=e1000', '-net', 'user', '-nic', 'user,model=virtio-net-pci'],
                 MT + QT + ['-net', 'nic,model=e1000', '-net', 'user', '-nic', 'user,model=virtio-net-pci'],
                 QR, PC, None, id='legacy-net-user-without-hostfwd'),
    pytest.param(M + Q + ['-drive', 'file=/var/lib/vm/disk.qcow2,if=virtio,snapshot=off', '-loadvm', 'snap1'],
                 MT + QT + ['-drive', 'file=/var/lib/vm/disk.qcow2,if=virtio,snapshot=off'], QR, PC, None,
                 id='drive-kept-loadvm-dropped'),
    pytest.param(M + Q + ['-S', '-incoming', 'defer', '-daemonize'], MT + QT, QR, PC, None,
                 id='S-incoming-daemonize-dropped'),
    pytest.param(M + ['-qmp', 'unix:/run/vm/qmp.sock.lu-0123abcd,server=on,wait=off',
                      '-chardev', 'socket,id=s0,path=/run/vm/serial.sock.lu-0123abcd,server=on,wait=off',
                      '-vnc', 'unix:/run/vm/vnc.sock.lu-0123abcd', '-incoming', 'defer'],
                 MT + QT + ['-chardev', 'socket,id=s0,path=/run/vm/serial.sock.lu-5eed5eed,server=on,wait=off',
                            '-vnc', 'unix:/run/vm/vnc.sock.lu-5eed5eed'],
                 QR + renames('/run/vm/serial.sock', '/run/vm/vnc.sock'), PC, None,
                 id='temporaries-of-an-earlier-update'),
]


@pytest.mark.parametrize('source, dest, expected_renames, machine, control', REWRITES)
def test_rewrite(source, dest, expected_renames, machine, control):
    control = control or '/run/vm/qmp.sock'
    p = plan(source, control=control, machine=machine)
    assert middle(p) == dest
    assert p.renames == expected_renames
    assert p.qmp_socket == tmp(control)
    assert p.argv(TARGET)[0] == TARGET


@pytest.mark.parametrize('source, dest, expected_renames, machine, control', REWRITES)
def test_tail_and_machine(source, dest, expected_renames, machine, control):
    argv = plan(source, control=control or '/run/vm/qmp.sock', machine=machine).argv(TARGET)
    for flag in ('-S', '-incoming', '-pidfile'):
        assert argv.count(flag) == 1, flag
    assert '-daemonize' not in argv  # started detached, keeping its output
    assert argv[-3:] == ['-S', '-incoming', 'defer']
    options = QemuCommandLine.parse(argv).options
    assert not any(n == 'M' for n, dummy in options)
    # one -machine per source -machine/-M (or the one added), each pinned
    heads = [QemuOpts.parse(v).head() for n, v in options if n == 'machine']
    sources = [n for n, dummy in QemuCommandLine.parse(['qemu'] + source).options if n in ('machine', 'M')]
    assert heads == [machine] * max(1, len(sources))


# --- pidfile ----------------------------------------------------------------

@pytest.mark.parametrize('pidfile_args, pidfile, canonical, pid_renames', [
    (['-pidfile', '/run/vm/qemu.pid'], tmp('/run/vm/qemu.pid'), '/run/vm/qemu.pid', renames('/run/vm/qemu.pid')),
    (['-pidfile', '/run/vm/qemu.pid.lu-0123abcd'], tmp('/run/vm/qemu.pid'), '/run/vm/qemu.pid',
     renames('/run/vm/qemu.pid')),
    (['--pidfile=/run/vm/qemu.pid'], tmp('/run/vm/qemu.pid'), '/run/vm/qemu.pid', renames('/run/vm/qemu.pid')),
    # no pidfile: the engine still needs the destination's pid; a temporary file, not renamed
    ([], tmp('/run/vm/qmp.sock.pid'), None, []),
], ids=['canonical', 'earlier-temporary', 'double-dash', 'none'])
def test_pidfile(pidfile_args, pidfile, canonical, pid_renames):
    p = plan(M + pidfile_args + Q)
    assert (p.pidfile, p.canonical_pidfile) == (pidfile, canonical)
    assert p.renames == QR + pid_renames
    assert middle(p) == MT + QT
    assert p.argv(TARGET)[-5:] == ['-pidfile', pidfile, '-S', '-incoming', 'defer']


# --- taps -------------------------------------------------------------------

def tap_json(**kw):
    return json.dumps(dict(type='tap', **kw))


# source -netdev values, destination -netdev values, TapHandover records
TAPS = [
    pytest.param(['tap,id=net0,ifname=tap0,script=no,downscript=no'], ['tap,id=net0,fd=@tapfd0@'],
                 [dict(netdev='net0', source_fd=None, ifname='tap0')], id='ifname'),
    pytest.param(['tap,id=net0,ifname=tap0,script=/etc/qemu-ifup,downscript=/etc/qemu-ifdown,vhost=on'],
                 ['tap,id=net0,vhost=on,fd=@tapfd0@'], [dict(netdev='net0', source_fd=None, ifname='tap0')],
                 id='ifname-scripts-vhost'),
    pytest.param(['tap,id=hostnet0,fd=27,vhost=on'], ['tap,id=hostnet0,vhost=on,fd=@tapfd0@'],
                 [dict(netdev='hostnet0', source_fd=27, ifname=None)], id='fd'),
    pytest.param(['type=tap,id=net0,ifname=tap0,script=no'], ['type=tap,id=net0,fd=@tapfd0@'],
                 [dict(netdev='net0', source_fd=None, ifname='tap0')], id='type-key'),
    pytest.param([tap_json(id='net0', ifname='tap0', script='no', downscript='no', vhost=True)],
                 [json.dumps({'type': 'tap', 'id': 'net0', 'vhost': True, 'fd': '@tapfd0@'})],
                 [dict(netdev='net0', source_fd=None, ifname='tap0')], id='json'),
    # a multi-queue tap opened by name can simply be opened a second time
    pytest.param(['tap,id=net0,ifname=tap0,script=no,downscript=no,queues=4'],
                 ['tap,id=net0,ifname=tap0,script=no,downscript=no,queues=4'], [], id='multi-queue-by-name'),
    pytest.param(['tap,id=net0,ifname=tap0,script=no,downscript=no', 'user,id=net1',
                  'tap,id=net2,fd=31,vhost=on', 'tap,id=net3,ifname=tap3,queues=2'],
                 ['tap,id=net0,fd=@tapfd0@', 'user,id=net1', 'tap,id=net2,vhost=on,fd=@tapfd1@',
                  'tap,id=net3,ifname=tap3,queues=2'],
                 [dict(netdev='net0', source_fd=None, ifname='tap0'), dict(netdev='net2', source_fd=31, ifname=None)],
                 id='several'),
]


@pytest.mark.parametrize('netdevs, dest_netdevs, handovers', TAPS)
def test_taps(netdevs, dest_netdevs, handovers):
    source = M + Q
    for index, value in enumerate(netdevs):
        source += ['-netdev', value, '-device', 'virtio-net-pci,netdev=net%d' % index]
    p = plan(source)
    assert [v for n, v in QemuCommandLine.parse(p.argv(TARGET)).options if n == 'netdev'] == dest_netdevs
    assert [t.as_dict() for t in p.taps] == handovers
    assert p.as_dict(TARGET)['taps'] == handovers


@pytest.mark.parametrize('netdev, downscripts', [
    ('tap,id=net0,ifname=tap0,script=no,downscript=no', []),
    ('tap,id=net0,ifname=tap0,downscript=', []),
    ('tap,id=net0,ifname=tap0,script=no', [('net0', 'default')]),
    ('tap,id=net0,ifname=tap0,downscript=/etc/vm/ifdown', [('net0', '/etc/vm/ifdown')]),
    ('tap,id=net0,ifname=tap0,queues=2', [('net0', 'default')]),
    ('tap,id=net0,fd=27', []),  # QEMU runs no script for a tap it was given
    ('user,id=net0', []),
], ids=['no', 'empty', 'default', 'path', 'multi-queue', 'fd', 'user'])
def test_downscripts_the_source_would_run(netdev, downscripts):
    assert plan(M + Q + ['-netdev', netdev]).downscripts == downscripts


def test_argv_substitutes_tap_fds():
    p = plan(M + Q + ['-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no',
                      '-netdev', 'tap,id=net1,fd=31',
                      '-netdev', 'tap,id=net2,fd=32'])
    assert len(p.taps) == 3
    argv = p.argv('/opt/qemu-8/bin/qemu-system-x86_64', (7, 9, 12))
    assert argv[0] == '/opt/qemu-8/bin/qemu-system-x86_64'
    assert [v for n, v in QemuCommandLine.parse(argv).options if n == 'netdev'] == [
        'tap,id=net0,fd=7', 'tap,id=net1,fd=9', 'tap,id=net2,fd=12']
    assert '@tapfd' not in ' '.join(argv)
    # without fds (check mode, the result's plan) the placeholders stay
    assert 'tap,id=net0,fd=%s' % (DestinationPlan.FD_PLACEHOLDER % 0) in p.argv(TARGET)


def test_argv_with_more_than_ten_taps():
    source = M + Q
    for index in range(12):
        source += ['-netdev', 'tap,id=net%d,fd=%d' % (index, 40 + index)]
    p = plan(source)
    argv = p.argv(TARGET, range(100, 112))
    assert [v for n, v in QemuCommandLine.parse(argv).options if n == 'netdev'] == [
        'tap,id=net%d,fd=%d' % (i, 100 + i) for i in range(12)]
    assert [t.source_fd for t in p.taps] == list(range(40, 52))


# --- refusals ---------------------------------------------------------------

# extra source args, the option the refusal names, words of its reason
REFUSALS = [
    pytest.param(['-snapshot'], 'snapshot', 'temporary files', id='snapshot'),
    pytest.param(['-nographic'], 'nographic', 'stdio', id='nographic'),
    pytest.param(['-drive', 'file=/var/lib/vm/disk.qcow2,if=virtio,snapshot=on'], 'drive', 'snapshot=on',
                 id='drive-snapshot-on'),
    pytest.param(['-drive', 'file=/var/lib/vm/disk.img,format=raw,snapshot'], 'drive', 'snapshot=on',
                 id='drive-snapshot-flag'),
    pytest.param(['-chardev', 'socket,id=mon1,host=127.0.0.1,port=4444,server=on,wait=off'], 'chardev', 'TCP',
                 id='chardev-tcp-server'),
    pytest.param(['-chardev', 'stdio,id=c0,signal=off'], 'chardev', 'stdio backend', id='chardev-stdio'),
    pytest.param(['-chardev', 'pty,id=c0'], 'chardev', 'pty backend', id='chardev-pty'),
    pytest.param(['-qmp', 'tcp:127.0.0.1:4444,server=on,wait=off'], 'qmp', 'unix socket', id='qmp-tcp'),
    pytest.param(['-serial', 'stdio'], 'serial', 'unix socket', id='serial-stdio'),
    pytest.param(['-serial', 'pty'], 'serial', 'unix socket', id='serial-pty'),
    pytest.param(['-serial', 'mon:stdio'], 'serial', 'unix socket', id='serial-mon-stdio'),
    pytest.param(['-monitor', 'telnet:127.0.0.1:5555,server,nowait'], 'monitor', 'unix socket', id='monitor-telnet'),
    pytest.param(['-vnc', '127.0.0.1:5'], 'vnc', 'VNC display', id='vnc-tcp'),
    pytest.param(['-vnc', ':0,to=10'], 'vnc', 'VNC display', id='vnc-tcp-range'),
    pytest.param(['-netdev', 'bridge,id=br0,br=virbr0'], 'netdev', 'bridge network backend', id='netdev-bridge'),
    pytest.param(['-netdev', 'socket,id=s0,listen=:1234'], 'netdev', 'socket network backend', id='netdev-socket'),
    pytest.param(['-netdev', 'tap,id=t0,fds=30:31,vhostfds=32:33,queues=2'], 'netdev', 'fds=', id='tap-fds'),
    pytest.param(['-netdev', 'tap,id=t0,fd=30,vhost=on,vhostfd=31'], 'netdev', 'vhostfd', id='tap-vhostfd'),
    pytest.param(['-netdev', 'tap,id=t0,helper=/usr/lib/qemu/qemu-bridge-helper,br=br0'], 'netdev', 'helper=',
                 id='tap-helper'),
    pytest.param(['-netdev', 'tap,id=t0'], 'netdev', 'neither ifname= nor fd=', id='tap-anonymous'),
    pytest.param(['-net', 'nic', '-net', 'user,hostfwd=tcp::2222-:22'], 'net', 'hostfwd', id='net-user-hostfwd'),
    pytest.param(['-nic', 'user,model=virtio-net-pci,hostfwd=tcp::2222-:22'], 'nic', 'hostfwd', id='nic-user-hostfwd'),
    pytest.param(['-net', 'nic', '-net', 'tap,ifname=tap0,script=no'], 'net', 'use -netdev', id='net-tap'),
    pytest.param(['-nic', 'tap,ifname=tap0,script=no'], 'nic', 'use -netdev', id='nic-tap'),
    pytest.param(['-add-fd', 'fd=3,set=2,opaque=rdwr:/var/lib/vm/disk.img'], 'add-fd', 'file descriptors',
                 id='add-fd'),
]


@pytest.mark.parametrize('extra, option, reason', REFUSALS)
def test_refused(extra, option, reason):
    with pytest.raises(Refused) as caught:
        plan(M + Q + extra)
    exc = caught.value
    assert isinstance(exc, InvalidInput)
    assert str(exc).startswith('cannot live-update: -%s' % option)
    assert reason in str(exc)
    assert exc.details['option'] == option


@pytest.mark.parametrize('source, control', [
    (M + Q, '/run/vm/other.sock'),
    # the control socket exists only as a client chardev: nothing to hand over
    (M + ['-chardev', 'socket,id=m0,path=/run/vm/qmp.sock', '-mon', 'chardev=m0,mode=control'], '/run/vm/qmp.sock'),
    (M + ['-serial', 'none'], '/run/vm/qmp.sock'),
], ids=['other-path', 'client-chardev', 'no-qmp-at-all'])
def test_refused_control_socket_not_on_the_command_line(source, control):
    with pytest.raises(Refused, match='cannot live-update: QMP socket %s is not on the command line' % control):
        plan(source, control=control)


# --- bugs found and fixed --------------------------------------------------

def effective_machine_type(value):
    """The machine type QEMU 7.2 uses for a -machine value: the last of the bare
    head and type= (keyval: the last one wins; measured: 'pc-i440fx-7.1,type=pc' runs pc-i440fx-7.2)."""
    found = None
    for key, item in QemuOpts.parse(value).items:
        if key in (None, 'type'):
            found = item
    return found


@pytest.mark.parametrize('machine_args, machine', [
    (['-machine', 'type=pc,memory-backend=mem0'], 'pc-i440fx-7.1'),
    (['-M', 'type=q35'], 'pc-q35-7.1'),
], ids=['machine-type-key', 'M-type-key'])
def test_bug_machine_type_key_not_pinned(machine_args, machine):
    p = plan(machine_args + Q, machine=machine)
    values = [v for n, v in QemuCommandLine.parse(p.argv(TARGET)).options if n == 'machine']
    assert [effective_machine_type(v) for v in values] == [machine]


@pytest.mark.parametrize('netdev', [
    'tap,id=net0,ifname=tap0,script=no,downscript=no,queues=1',
    'tap,id=net0,ifname=tap0,script=no,downscript=no,vnet_hdr=on',
    'tap,id=net0,ifname=tap0,vnet_hdr=off',
], ids=['queues-1', 'vnet_hdr-on', 'vnet_hdr-off'])
def test_bug_tap_fd_with_invalid_keys(netdev):
    p = plan(M + Q + ['-netdev', netdev])
    assert len(p.taps) == 1
    opts = QemuOpts.parse([v for n, v in QemuCommandLine.parse(p.argv(TARGET, (7,))).options if n == 'netdev'][0])
    assert opts.get('fd') == '7'
    invalid_with_fd = ('ifname', 'script', 'downscript', 'vnet_hdr', 'helper', 'queues', 'fds', 'vhostfds')
    assert [k for k, dummy in opts.items if k in invalid_with_fd] == []


# QEMU 7.2 opens the legacy file: backend with O_TRUNC (measured: an existing file read 0 bytes
# after start): the destination would wipe the log while the source still writes at its offset.
@pytest.mark.parametrize('option, paths', [
    ('serial', ['/var/log/vm-serial.log']),
    ('serial', ['/var/log/vm-serial0.log', '/var/log/vm-serial1.log']),
    ('parallel', ['/var/log/vm-lpt.log']),
], ids=['serial', 'two-serials', 'parallel'])
def test_legacy_file_backend_appends(option, paths):
    source = M + Q
    for path in paths:
        source += ['-' + option, 'file:' + path]
    p = plan(source)
    options = QemuCommandLine.parse(p.argv(TARGET)).options
    assert not any(v and v.startswith('file:') for dummy, v in options)
    files = dict((o.get('id'), o) for o in (QemuOpts.parse(v) for n, v in options if n == 'chardev')
                 if o.head() == 'file')
    used = [v[len('chardev:'):] for n, v in options if n == option]
    assert len(used) == len(paths) == len(set(used))
    assert [(files[i].get('path'), files[i].get('append')) for i in used] == [(path, 'on') for path in paths]
    # each chardev is defined before the -serial/-parallel that uses it
    for chardev_id in used:
        defined = [i for i, (n, v) in enumerate(options) if n == 'chardev' and QemuOpts.parse(v).get('id') == chardev_id]
        assert defined and defined[0] < options.index((option, 'chardev:' + chardev_id))


@pytest.mark.parametrize('chardev', [
    'socket,id=serial0,path=/run/vm/serial.sock,server=on,wait=off,logfile=/var/log/vm/console.log',
    'socket,id=serial0,path=/run/vm/serial.sock,server=on,wait=off,logfile=/var/log/vm/console.log,logappend=off',
    'null,id=serial0,logfile=/var/log/vm/console.log',
], ids=['socket-logfile', 'socket-logappend-off', 'null-logfile'])
def test_bug_chardev_logfile_truncated(chardev):
    p = plan(M + Q + ['-chardev', chardev, '-serial', 'chardev:serial0'])
    opts = [QemuOpts.parse(v) for n, v in QemuCommandLine.parse(p.argv(TARGET)).options if n == 'chardev'][0]
    assert opts.get('logappend') == 'on'


@pytest.mark.parametrize('source', [
    M + ['-qmp', 'unix:/run/vm/qmp.sock,server,nowait'],
    M + ['-chardev', 'socket,id=mon0,path=/run/vm/qmp.sock,server,nowait', '-mon', 'chardev=mon0,mode=control'],
    M + Q + ['-serial', 'unix:/run/vm/serial.sock,server,nowait'],
], ids=['qmp', 'chardev', 'serial'])
def test_bug_short_form_nowait(source):
    p = plan(source)
    renamed = [value for name, value in QemuCommandLine.parse(p.argv(TARGET)).options
               if value and ('.lu-%s' % TOKEN) in value and name != 'pidfile']
    assert renamed and all('nowait' not in value and 'wait=off' in value for value in renamed), renamed


@pytest.mark.parametrize('extra, option', [
    (['-s'], 's'),
    (['-gdb', 'tcp::1234'], 'gdb'),
    (['-display', 'vnc=127.0.0.1:5'], 'display'),
    (['-spice', 'port=5900,addr=127.0.0.1,disable-ticketing=on'], 'spice'),
], ids=['s', 'gdb-tcp', 'display-vnc', 'spice'])
def test_bug_other_tcp_listeners_not_refused(extra, option):
    with pytest.raises(Refused) as caught:
        plan(M + Q + extra)
    assert caught.value.details['option'] == option


def test_bug_json_netdev_list_values():
    source = {'type': 'user', 'id': 'net0', 'dnssearch': [{'str': 'corp.example'}],
              'hostfwd': [{'str': 'tcp::2222-:22'}]}
    p = plan(M + Q + ['-netdev', json.dumps(source)])
    value = [v for n, v in QemuCommandLine.parse(p.argv(TARGET)).options if n == 'netdev'][0]
    assert value.startswith('{'), value
    assert json.loads(value) == {'type': 'user', 'id': 'net0', 'dnssearch': [{'str': 'corp.example'}]}


# --- stream netdevs (passt) -------------------------------------------------

@pytest.mark.parametrize('netdev, dest, handover', [
    ('stream,id=net0,server=off,addr.type=unix,addr.path=/run/vm/passt.sock',
     'stream,id=net0,server=off,addr.type=fd,addr.str=@streamfd0@',
     dict(netdev='net0', source_fd=None, path='/run/vm/passt.sock')),
    ('stream,id=net0,addr.type=fd,addr.str=23', 'stream,id=net0,addr.type=fd,addr.str=@streamfd0@',
     dict(netdev='net0', source_fd=23, path=None)),
    # libvirt's form
    (json.dumps({'type': 'stream', 'addr': {'type': 'unix', 'path': '/run/libvirt/passt.sock'}, 'server': False,
                 'reconnect': 5, 'id': 'hostnet0'}),
     'type=stream,server=off,id=hostnet0,addr.type=fd,addr.str=@streamfd0@',
     dict(netdev='hostnet0', source_fd=None, path='/run/libvirt/passt.sock')),
], ids=['unix', 'fd', 'json'])
def test_stream_socket_is_handed_over(netdev, dest, handover):
    p = plan(M + Q + ['-netdev', netdev, '-device', 'virtio-net-pci,netdev=net0'])
    assert [v for n, v in p.options if n == 'netdev'] == [dest]
    assert [s.as_dict() for s in p.streams] == [handover]
    assert dest.replace('@streamfd0@', '41') in p.argv(TARGET, stream_fds=[41])


@pytest.mark.parametrize('netdev, message', [
    ('stream,id=net0,server=on,addr.type=unix,addr.path=/run/vm/s.sock', 'server=on'),
    ('stream,id=net0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5000', 'unix socket path'),
    ('stream,id=net0,addr.type=fd,addr.str=passtfd', 'numbered fd'),
])
def test_stream_refused(netdev, message):
    with pytest.raises(Refused, match=message):
        plan(M + Q + ['-netdev', netdev])
