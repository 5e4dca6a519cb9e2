# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts, is_on

# --- QemuOpts ---------------------------------------------------------------

# text, parsed items, canonical format (None: same as text)
OPTS_CASES = [
    ('memory-backend-file,id=mem0,size=1024M,mem-path=/dev/shm/x.ram,share=on',
     [(None, 'memory-backend-file'), ('id', 'mem0'), ('size', '1024M'), ('mem-path', '/dev/shm/x.ram'),
      ('share', 'on')], None),
    ('socket,id=c0,path=/run/a,,b/qmp.sock,server=on',
     [(None, 'socket'), ('id', 'c0'), ('path', '/run/a,b/qmp.sock'), ('server', 'on')], None),
    ('/run/vm,,1/qmp.sock,server=on,wait=off',
     [(None, '/run/vm,1/qmp.sock'), ('server', 'on'), ('wait', 'off')], None),
    ('q35', [(None, 'q35')], None),
    ('guest=web-1', [('guest', 'web-1')], None),
    ('append=a=b', [('append', 'a=b')], None),
    ('size=', [('size', '')], None),
    # 'key' without '=' after the head is QEMU's shorthand for key=on
    # QEMU reads a bare noKEY as KEY=off
    ('socket,server,nowait', [(None, 'socket'), ('server', 'on'), ('wait', 'off')],
     'socket,server=on,wait=off'),
    ('', [(None, '')], None),
    # JSON syntax (-object '{...}'): booleans read as on/off, numbers as strings; written back as JSON
    ('{"qom-type": "memory-backend-file", "id": "mem0", "size": 1073741824, "share": true, "mem-path": "/a,b"}',
     [('qom-type', 'memory-backend-file'), ('id', 'mem0'), ('size', '1073741824'), ('share', 'on'),
      ('mem-path', '/a,b')],
     '{"qom-type": "memory-backend-file", "id": "mem0", "size": 1073741824, "share": true, "mem-path": "/a,b"}'),
    ('{"qom-type": "memory-backend-ram", "id": "m", "share": false, "host-nodes": [0, 1]}',
     [('qom-type', 'memory-backend-ram'), ('id', 'm'), ('share', 'off'), ('host-nodes', '[0, 1]')],
     '{"qom-type": "memory-backend-ram", "id": "m", "share": false, "host-nodes": [0, 1]}'),
    # not JSON after all: parsed as a key=value list
    ('{broken', [(None, '{broken')], None),
]


@pytest.mark.parametrize('text, items, formatted', OPTS_CASES)
def test_opts_parse_and_format(text, items, formatted):
    opts = QemuOpts.parse(text)
    assert opts.items == items
    assert opts.format() == (text if formatted is None else formatted)
    # what format() writes parses back to the same items
    assert QemuOpts.parse(opts.format()).items == items


def test_opts_format_escapes_commas_in_keys_values_and_head():
    opts = QemuOpts([(None, 'a,b'), ('path', '/x,y,,z')])
    assert opts.format() == 'a,,b,path=/x,,y,,,,z'
    assert QemuOpts.parse(opts.format()).items == opts.items


def test_opts_accessors():
    opts = QemuOpts.parse('socket,id=c0,path=/p,server=on')
    assert opts.head() == 'socket'
    assert opts.get('id') == 'c0'
    assert opts.get('missing', 'dflt') == 'dflt'
    assert opts.get('backend') is None
    assert opts.get('backend', implied='backend') == 'socket'
    assert opts.as_dict(implied='backend') == dict(backend='socket', id='c0', path='/p', server='on')
    opts.set('server', 'off')
    opts.set('wait', 'off')
    opts.remove('id')
    assert opts.format() == 'socket,path=/p,server=off,wait=off'
    assert QemuOpts.parse('id=x').head() is None


@pytest.mark.parametrize('value, expected', [
    ('on', True), ('yes', True), ('true', True), ('1', True), ('ON', True), (True, True),
    ('off', False), ('no', False), ('0', False), ('', False), (None, False), (False, False),
])
def test_is_on(value, expected):
    assert is_on(value) is expected


# --- QemuCommandLine --------------------------------------------------------

# Roughly what this collection launches (VmSpec.argv) ...
OWN_ARGV = [
    '/usr/bin/qemu-system-x86_64', '-name', 'guest=web-1', '-nodefaults', '-no-user-config',
    '-display', 'none', '-machine', 'pc,memory-backend=mem0', '-m', '1024M',
    '-object', 'memory-backend-file,id=mem0,size=1024M,mem-path=/dev/shm/liveupdate-qemu-web-1.ram,share=on',
    '-smp', '2', '-qmp', 'unix:/run/liveupdate-qemu/web-1/qmp.sock,server=on,wait=off',
    '-pidfile', '/run/liveupdate-qemu/web-1/qemu.pid', '-accel', 'kvm', '-accel', 'tcg',
    '-chardev', 'socket,id=serial0,path=/run/liveupdate-qemu/web-1/serial.sock,server=on,wait=off,'
                'logfile=/run/liveupdate-qemu/web-1/serial.log,logappend=on',
    '-serial', 'chardev:serial0', '-daemonize',
]

# ... and roughly what libvirt launches.
LIBVIRT_ARGV = [
    '/usr/bin/qemu-system-x86_64', '-name', 'guest=db,debug-threads=on', '-S',
    '-object', '{"qom-type":"secret","id":"masterKey0","format":"raw",'
               '"file":"/var/lib/libvirt/qemu/domain-1-db/master-key.aes"}',
    '-machine', 'pc-q35-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram',
    '-accel', 'kvm', '-cpu', 'host,migratable=on', '-m', '2048',
    '-object', '{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages/libvirt/qemu/1-db",'
               '"share":true,"prealloc":true,"size":2147483648}',
    '-overcommit', 'mem-lock=off', '-smp', '2,sockets=2,cores=1,threads=1', '-no-user-config', '-nodefaults',
    '-chardev', 'socket,id=charmonitor,fd=31,server=on,wait=off',
    '-mon', 'chardev=charmonitor,id=monitor,mode=control',
    '-rtc', 'base=utc', '-no-shutdown', '-boot', 'strict=on',
    '-chardev', 'socket,id=charqga,path=/var/lib/libvirt/qemu/channel/target/domain-1-db/org.qemu.guest_agent.0,'
                'server=on,wait=off',
    '-chardev', 'socket,id=mon2,path=/run/qemu/db-extra.qmp,server=on,wait=off',
    '-mon', 'chardev=mon2,mode=control',
    '-mon', 'chardev=charqga,mode=readline',
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-msg', 'timestamp=on',
]


def test_parse_own_argv():
    cmd = QemuCommandLine.parse(OWN_ARGV)
    assert cmd.binary == '/usr/bin/qemu-system-x86_64'
    assert cmd.name() == 'web-1'
    assert cmd.values('pidfile') == ['/run/liveupdate-qemu/web-1/qemu.pid']
    assert cmd.qmp_sockets() == ['/run/liveupdate-qemu/web-1/qmp.sock']
    assert cmd.values('accel') == ['kvm', 'tcg']
    assert cmd.has('daemonize') and cmd.values('daemonize') == [None]
    assert cmd.has('nodefaults') and not cmd.has('S')
    assert cmd.memory_backends() == [dict(**{'qom-type': 'memory-backend-file', 'id': 'mem0', 'size': '1024M',
                                             'mem-path': '/dev/shm/liveupdate-qemu-web-1.ram', 'share': 'on'})]
    assert cmd.chardev_sockets() == {'serial0': '/run/liveupdate-qemu/web-1/serial.sock'}


def test_parse_libvirt_argv():
    cmd = QemuCommandLine.parse(LIBVIRT_ARGV)
    assert cmd.name() == 'db'
    assert cmd.has('S') and cmd.has('no-shutdown')
    assert cmd.values('m') == ['2048']
    # the fd-passed monitor has no path; the readline monitor is not QMP
    assert cmd.qmp_sockets() == ['/run/qemu/db-extra.qmp']
    assert cmd.memory_backends() == [{'qom-type': 'memory-backend-file', 'id': 'pc.ram',
                                      'mem-path': '/dev/hugepages/libvirt/qemu/1-db', 'share': 'on',
                                      'prealloc': 'on', 'size': '2147483648'}]
    assert cmd.values('pidfile') == []


@pytest.mark.parametrize('argv', [OWN_ARGV, LIBVIRT_ARGV], ids=['own', 'libvirt'])
def test_argv_round_trip(argv):
    assert QemuCommandLine.parse(argv).argv() == argv


@pytest.mark.parametrize('argv, options, normalized', [
    (['qemu', '--name=vm1', '--daemonize'], [('name', 'vm1'), ('daemonize', None)],
     ['qemu', '-name', 'vm1', '-daemonize']),
    (['qemu', '--m', '512M'], [('m', '512M')], ['qemu', '-m', '512M']),
    (['qemu', 'disk.img', '-snapshot'], [('hda', 'disk.img'), ('snapshot', None)],
     ['qemu', '-hda', 'disk.img', '-snapshot']),
    # an option value that starts with '-' is still that option's value
    (['qemu', '-append', '-v console=ttyS0', '-S'], [('append', '-v console=ttyS0'), ('S', None)], None),
    # a trailing option without its value is kept as a flag
    (['qemu', '-m'], [('m', None)], None),
    (['qemu'], [], None),
])
def test_parse_option_forms(argv, options, normalized):
    cmd = QemuCommandLine.parse(argv)
    assert cmd.options == options
    assert cmd.argv() == (argv if normalized is None else normalized)


def test_parse_empty_argv_rejected():
    with pytest.raises(ValueError):
        QemuCommandLine.parse([])


@pytest.mark.parametrize('args, sockets', [
    (['-qmp', 'unix:/run/q.sock,server=on,wait=off'], ['/run/q.sock']),
    (['-qmp', 'unix:/run/q.sock,server,nowait'], ['/run/q.sock']),
    (['-qmp', 'unix:/run/a,,b/q.sock,server=on'], ['/run/a,b/q.sock']),
    (['-qmp-pretty', 'unix:/run/p.sock,server=on'], ['/run/p.sock']),
    (['-qmp', 'tcp:127.0.0.1:4444,server=on,wait=off'], []),
    (['-qmp', 'stdio'], []),
    (['-chardev', 'socket,id=m0,path=/run/m.sock,server=on,wait=off', '-mon', 'chardev=m0,mode=control'],
     ['/run/m.sock']),
    (['-chardev', 'socket,id=m0,path=/run/m.sock,server=on', '-mon', 'chardev=m0,mode=readline'], []),
    (['-chardev', 'socket,id=m0,path=/run/m.sock,server=on', '-mon', 'chardev=m0'], []),
    (['-chardev', 'socket,id=m0,host=::1,port=4444,server=on', '-mon', 'chardev=m0,mode=control'], []),
    (['-mon', 'chardev=nowhere,mode=control'], []),
    (['-qmp', 'unix:/run/a.sock,server=on', '-qmp', 'unix:/run/b.sock,server=on'], ['/run/a.sock', '/run/b.sock']),
    (['-qmp', 'unix:/run/a.sock,server=on',
      '-chardev', 'socket,id=m0,path=/run/m.sock,server=on', '-mon', 'chardev=m0,mode=control'],
     ['/run/a.sock', '/run/m.sock']),
    (['-m', '1G'], []),
])
def test_qmp_sockets(args, sockets):
    assert QemuCommandLine.parse(['qemu-system-x86_64'] + args).qmp_sockets() == sockets


def test_qmp_sockets_in_command_line_order():
    cmd = QemuCommandLine.parse(['qemu-system-x86_64',
                                 '-chardev', 'socket,id=m0,path=/run/m.sock,server=on', '-mon', 'chardev=m0,mode=control',
                                 '-qmp', 'unix:/run/a.sock,server=on'])
    assert cmd.qmp_sockets() == ['/run/m.sock', '/run/a.sock']


@pytest.mark.parametrize('flag', ['mem-prealloc', 'singlestep', 'portrait', 'xen-domid-restrict'])
def test_flag_options_of_qemu_7_2(flag):
    cmd = QemuCommandLine.parse(['qemu-system-x86_64', '-' + flag, '-qmp', 'unix:/run/q.sock,server=on,wait=off'])
    assert cmd.options[0] == (flag, None)
    assert cmd.qmp_sockets() == ['/run/q.sock']


@pytest.mark.parametrize('args, name', [
    (['-name', 'guest=web-1'], 'web-1'),
    (['-name', 'web-1,debug-threads=on'], 'web-1'),
    (['-name', 'debug-threads=on,guest=web-1'], 'web-1'),
    (['-name', 'web-1', '-name', 'other'], 'web-1'),
    (['-name', 'process=qemu:x'], None),
    (['-m', '1G'], None),
])
def test_name(args, name):
    assert QemuCommandLine.parse(['qemu-system-x86_64'] + args).name() == name


def test_memory_backends_only_memory_objects():
    cmd = QemuCommandLine.parse([
        'qemu-system-x86_64',
        '-object', 'rng-random,id=rng0,filename=/dev/urandom',
        '-object', 'memory-backend-ram,id=ram0,size=512M',
        '-object', 'memory-backend-memfd,id=fd0,size=512M,share=on',
        '-object', '{"qom-type":"iothread","id":"io0"}',
        '-m', '1G',
    ])
    assert cmd.memory_backends() == [
        {'qom-type': 'memory-backend-ram', 'id': 'ram0', 'size': '512M'},
        {'qom-type': 'memory-backend-memfd', 'id': 'fd0', 'size': '512M', 'share': 'on'},
    ]
