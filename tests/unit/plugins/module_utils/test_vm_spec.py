# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils import _vm_spec
from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import resolve_binary
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths, validate_name
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_spec import (
    VmSpec, parse_size,
)

MIB = 1 << 20


# --- validate_name ----------------------------------------------------------

@pytest.mark.parametrize('name', ['web-1', 'a.b_c', 'A', '0vm', 'x' * 64])
def test_validate_name_ok(name):
    assert validate_name(name) == name


@pytest.mark.parametrize('name', ['', None, 'a/b', '..', 'a..b', '.hidden', '-dash', '_x', 'x' * 65,
                                  'a b', 'a,b', 'a:b', 'ü'])
def test_validate_name_rejected(name):
    with pytest.raises(InvalidInput, match='VM name'):
        validate_name(name)


def test_validate_name_rejects_trailing_newline():
    with pytest.raises(InvalidInput):
        validate_name('web\n')


# --- parse_size -------------------------------------------------------------

@pytest.mark.parametrize('text, size', [
    ('512M', 512 * MIB), ('4G', 4 << 30), ('1GiB', 1 << 30), ('1gb', 1 << 30), ('1g', 1 << 30),
    ('2048K', 2 * MIB), ('1T', 1 << 40), (' 64 MiB ', 64 * MIB), ('1MB', MIB),
])
def test_parse_size_ok(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize('text', ['1X', '0', '0M', '-1G', '1024', '', '1.5G', '1K', '1536K', 'G', '1 G B', '4GG'])
def test_parse_size_rejected(text):
    with pytest.raises(InvalidInput) as info:
        parse_size(text)
    assert repr(text) in str(info.value)


def test_parse_size_names_what():
    with pytest.raises(InvalidInput, match="^hugepage size '3X' "):
        parse_size('3X', what='hugepage size')


# --- resolve_binary ---------------------------------------------------------

def _executable(path, mode=0o755):
    path.write_text('#!/bin/sh\nexit 0\n')
    path.chmod(mode)
    return path


def test_resolve_binary_absolute(tmp_path):
    qemu = _executable(tmp_path / 'qemu-system-x86_64')
    assert resolve_binary(str(qemu)) == str(qemu)


def test_resolve_binary_relative_path_made_absolute(tmp_path, monkeypatch):
    _executable(tmp_path / 'qemu-system-x86_64')
    monkeypatch.chdir(tmp_path.parent)
    assert resolve_binary(os.path.join(tmp_path.name, 'qemu-system-x86_64')) == str(tmp_path / 'qemu-system-x86_64')


def test_resolve_binary_on_path(tmp_path, monkeypatch):
    qemu = _executable(tmp_path / 'qemu-system-test')
    monkeypatch.setenv('PATH', '/nonexistent%s%s' % (os.pathsep, tmp_path))
    assert resolve_binary('qemu-system-test') == str(qemu)


@pytest.mark.parametrize('kind, message', [
    ('missing', 'does not exist'),
    ('missing-on-path', 'does not exist'),
    ('directory', 'is not an executable file'),
    ('not-executable', 'is not an executable file'),
])
def test_resolve_binary_rejected(tmp_path, monkeypatch, kind, message):
    monkeypatch.setenv('PATH', str(tmp_path))
    if kind == 'missing':
        binary = str(tmp_path / 'nope')
    elif kind == 'missing-on-path':
        binary = 'qemu-system-nope'
    elif kind == 'directory':
        binary = str(tmp_path)
    else:
        binary = str(_executable(tmp_path / 'qemu', mode=0o644))
    with pytest.raises(InvalidInput, match=message):
        resolve_binary(binary)


# --- VmSpec -----------------------------------------------------------------

def make_params(**overrides):
    """Module parameters after AnsibleModule defaults (see plugins/modules/vm.py)."""
    params = dict(name='web-1', memory='1G', memory_dir='/dev/shm', vcpus=2, machine='pc',
                  accel=['kvm', 'tcg'], cpu=None, kernel=None, initrd=None, append=None,
                  disks=[], nics=[], serial=True, vnc=None, binary='qemu-system-x86_64', extra_args=[])
    params.update(overrides)
    return params


def disk(path, **kw):
    return dict(dict(path=path, format=None, interface='virtio', cache='writeback'), **kw)


def nic(**kw):
    return dict(dict(type='user', model='virtio-net-pci', mac=None, hostfwd=[], ifname=None, queues=None), **kw)


@pytest.fixture
def paths():
    return RuntimePaths('/run/liveupdate-qemu', 'web-1')


def _opts(argv, option):
    """The QemuOpts of each value of -option in argv."""
    return QemuCommandLine.parse(argv).opts(option)


def test_argv_core(paths):
    spec = VmSpec(make_params())
    argv = spec.argv(paths)
    cmd = QemuCommandLine.parse(argv)
    assert argv[0] == 'qemu-system-x86_64'
    assert cmd.name() == 'web-1'
    assert spec.memory_file == '/dev/shm/liveupdate-qemu-web-1.ram'
    assert cmd.memory_backends() == [{'qom-type': 'memory-backend-file', 'id': 'mem0', 'size': '1024M',
                                      'mem-path': spec.memory_file, 'share': 'on'}]
    assert cmd.values('machine') == ['pc,memory-backend=mem0']
    assert cmd.values('m') == ['1024M']
    assert cmd.values('smp') == ['2']
    assert cmd.values('accel') == ['kvm', 'tcg']
    assert cmd.qmp_sockets() == [paths.qmp_socket]
    assert cmd.values('pidfile') == [paths.pidfile]
    assert cmd.has('daemonize') and cmd.has('nodefaults') and cmd.has('no-user-config')
    assert not cmd.has('vnc') and not cmd.has('drive') and not cmd.has('netdev') and not cmd.has('cpu')


def test_argv_serial_chardev_logs(paths):
    argv = VmSpec(make_params()).argv(paths)
    [chardev] = _opts(argv, 'chardev')
    assert chardev.as_dict(implied='backend') == dict(
        backend='socket', id='serial0', path=paths.serial_socket, server='on', wait='off',
        logfile=paths.serial_log, logappend='on')
    assert QemuCommandLine.parse(argv).values('serial') == ['chardev:serial0']


def test_argv_without_serial(paths):
    cmd = QemuCommandLine.parse(VmSpec(make_params(serial=False)).argv(paths))
    assert not cmd.has('chardev') and not cmd.has('serial')


def test_argv_disks(paths):
    spec = VmSpec(make_params(disks=[disk('/img/root.qcow2'), disk('/img/data.img', interface='ide', cache='none'),
                                     disk('/img/x.qcow2', format='raw')]))
    drives = [o.as_dict() for o in _opts(spec.argv(paths), 'drive')]
    assert drives == [
        dict(file='/img/root.qcow2', format='qcow2', id='disk0', cache='writeback', **{'if': 'virtio'}),
        dict(file='/img/data.img', format='raw', id='disk1', cache='none', **{'if': 'ide'}),
        dict(file='/img/x.qcow2', format='raw', id='disk2', cache='writeback', **{'if': 'virtio'}),
    ]


def test_argv_nics(paths):
    spec = VmSpec(make_params(nics=[
        nic(hostfwd=['tcp::2222-:22', 'tcp:127.0.0.1:8080-:80']),
        nic(type='tap', ifname='tap-web', mac='52:54:00:12:34:56', model='e1000', queues=4),
    ]))
    argv = spec.argv(paths)
    assert [o.items for o in _opts(argv, 'netdev')] == [
        [(None, 'user'), ('id', 'net0'), ('hostfwd', 'tcp::2222-:22'), ('hostfwd', 'tcp:127.0.0.1:8080-:80')],
        [(None, 'tap'), ('id', 'net1'), ('ifname', 'tap-web'), ('script', 'no'), ('downscript', 'no'),
         ('queues', '4')],
    ]
    assert [o.items for o in _opts(argv, 'device')] == [
        [(None, 'virtio-net-pci'), ('netdev', 'net0')],
        [(None, 'e1000'), ('netdev', 'net1'), ('mac', '52:54:00:12:34:56')],
    ]


@pytest.mark.parametrize('vnc, target', [
    ('unix', 'unix:/run/liveupdate-qemu/web-1/vnc.sock'),
    ('127.0.0.1:1', '127.0.0.1:1'),
    (None, None),
])
def test_argv_vnc(paths, vnc, target):
    cmd = QemuCommandLine.parse(VmSpec(make_params(vnc=vnc)).argv(paths))
    assert cmd.values('vnc') == ([target] if target else [])
    assert cmd.values('vga') == (['std'] if target else [])


def test_argv_kernel_cpu_and_extra_args(paths):
    spec = VmSpec(make_params(kernel='/boot/vmlinuz', initrd='/boot/initrd.gz', append='console=ttyS0 quiet',
                              cpu='host', extra_args=['-device', 'virtio-rng-pci']))
    argv = spec.argv(paths)
    cmd = QemuCommandLine.parse(argv)
    assert cmd.values('kernel') == ['/boot/vmlinuz']
    assert cmd.values('initrd') == ['/boot/initrd.gz']
    assert cmd.values('append') == ['console=ttyS0 quiet']
    assert cmd.values('cpu') == ['host']
    assert argv[-3:] == ['-daemonize', '-device', 'virtio-rng-pci']


def test_argv_escapes_commas_in_paths(tmp_path):
    paths = RuntimePaths('/run/lu,q', 'web-1')
    spec = VmSpec(make_params(memory_dir='/dev/shm/a,b', disks=[disk('/img/a,b.qcow2')]))
    argv = spec.argv(paths)
    cmd = QemuCommandLine.parse(argv)
    assert '-qmp' in argv and 'unix:/run/lu,,q/web-1/qmp.sock,server=on,wait=off' in argv
    assert cmd.qmp_sockets() == ['/run/lu,q/web-1/qmp.sock']
    assert cmd.memory_backends()[0]['mem-path'] == '/dev/shm/a,b/liveupdate-qemu-web-1.ram'
    assert cmd.chardev_sockets() == {'serial0': '/run/lu,q/web-1/serial.sock'}
    assert cmd.opts('chardev')[0].get('logfile') == '/run/lu,q/web-1/serial.log'
    assert cmd.opts('drive')[0].get('file') == '/img/a,b.qcow2'
    # -pidfile takes a plain path, not an option list
    assert cmd.values('pidfile') == ['/run/lu,q/web-1/qemu.pid']


def test_argv_escapes_commas_in_vnc_socket():
    paths = RuntimePaths('/run/lu,q', 'web-1')
    argv = VmSpec(make_params(vnc='unix')).argv(paths)
    [vnc] = QemuCommandLine.parse(argv).opts('vnc')
    assert vnc.items == [(None, 'unix:/run/lu,q/web-1/vnc.sock')]


@pytest.mark.parametrize('overrides, message', [
    (dict(nics=[nic(type='tap')]), 'tap NIC needs ifname'),
    (dict(nics=[nic(type='tap', ifname='')]), 'tap NIC needs ifname'),
    (dict(nics=[nic(type='tap', ifname='tap0', hostfwd=['tcp::2222-:22'])]), 'hostfwd is only for user-mode'),
    (dict(initrd='/boot/initrd.gz'), 'need kernel'),
    (dict(append='console=ttyS0'), 'need kernel'),
    (dict(vcpus=0), 'vcpus must be at least 1'),
    (dict(memory='1.5G'), "memory '1.5G' is not a size"),
    (dict(memory='1K'), 'whole number of MiB'),
    (dict(name='../etc'), 'VM name'),
])
def test_spec_rejected(overrides, message):
    with pytest.raises(InvalidInput, match=message):
        VmSpec(make_params(**overrides))


def test_spec_normalises():
    spec = VmSpec(make_params(memory='2GiB', memory_dir='/dev/shm/../shm/',
                              nics=[nic(hostfwd=[], mac=None)], disks=[disk('/img/a.qcow2'), disk('/img/b.raw')]))
    assert spec.memory == 2 << 30
    assert spec.memory_dir == '/dev/shm'
    assert spec.nics == [dict(type='user', model='virtio-net-pci')]
    assert [d['format'] for d in spec.disks] == ['qcow2', 'raw']
    # what is stored survives JSON
    assert json.loads(json.dumps(spec.as_dict())) == spec.as_dict()


# --- conflicts_with ---------------------------------------------------------

def _stored(**overrides):
    return json.loads(json.dumps(VmSpec(make_params(**overrides)).as_dict()))


@pytest.mark.parametrize('overrides, conflicts', [
    (dict(), []),
    (dict(binary='/opt/qemu-9/bin/qemu-system-x86_64'), []),
    (dict(memory='2G'), ['memory']),
    (dict(memory='1024M'), []),
    (dict(vcpus=4, machine='q35'), ['vcpus', 'machine']),
    (dict(accel=['tcg']), ['accel']),
    (dict(disks=[disk('/img/a.qcow2')]), ['disks']),
    (dict(nics=[nic()]), ['nics']),
    (dict(serial=False, vnc='unix'), ['serial', 'vnc']),
    (dict(extra_args=['-S']), ['extra_args']),
])
def test_conflicts_with(overrides, conflicts):
    assert VmSpec(make_params(**overrides)).conflicts_with(_stored()) == conflicts


def test_conflicts_with_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qemu = _executable(tmp_path / 'qemu-system-x86_64')
    (tmp_path / 'vmlinuz').write_text('')
    (tmp_path / 'root.qcow2').write_text('')
    started = VmSpec(make_params(binary=str(qemu), kernel='vmlinuz', disks=[disk('root.qcow2')]))
    started.check_files()  # what VmManager does before starting the VM, then stores as_dict()
    stored = json.loads(json.dumps(started.as_dict()))
    again = VmSpec(make_params(binary=str(qemu), kernel='vmlinuz', disks=[disk('root.qcow2')]))
    assert again.conflicts_with(stored) == []


# --- check_files / check_memory_dir -----------------------------------------

def test_check_files_resolves(tmp_path):
    qemu = _executable(tmp_path / 'qemu-system-x86_64')
    kernel = tmp_path / 'vmlinuz'
    kernel.write_text('')
    image = tmp_path / 'root.qcow2'
    image.write_text('')
    spec = VmSpec(make_params(binary=str(qemu), kernel=str(kernel), disks=[disk(str(image))]))
    spec.check_files()
    assert spec.binary == str(qemu)
    assert spec.kernel == str(kernel)
    assert spec.disks[0]['path'] == str(image)


@pytest.mark.parametrize('overrides, message', [
    (dict(kernel='{tmp}/missing'), 'kernel .*missing does not exist'),
    (dict(kernel='{tmp}/vmlinuz', initrd='{tmp}'), 'initrd .* is not a file'),
    (dict(disks=[disk('{tmp}/missing.qcow2')]), 'disk image .*missing.qcow2 does not exist'),
    (dict(binary='{tmp}/no-qemu'), 'QEMU binary .*no-qemu does not exist'),
])
def test_check_files_rejected(tmp_path, overrides, message):
    qemu = _executable(tmp_path / 'qemu-system-x86_64')
    (tmp_path / 'vmlinuz').write_text('')
    overrides = json.loads(json.dumps(overrides).replace('{tmp}', str(tmp_path)))
    spec = VmSpec(make_params(**dict(dict(binary=str(qemu)), **overrides)))
    with pytest.raises(InvalidInput, match=message):
        spec.check_files()


class _StatVfs:
    def __init__(self, free_bytes):
        self.f_frsize = 4096
        self.f_bavail = free_bytes // 4096


def test_check_memory_dir_missing(tmp_path):
    spec = VmSpec(make_params(memory_dir=str(tmp_path / 'nope')))
    with pytest.raises(InvalidInput, match='memory_dir .*nope does not exist'):
        spec.check_memory_dir()


def test_check_memory_dir_is_a_file(tmp_path):
    (tmp_path / 'file').write_text('')
    with pytest.raises(InvalidInput, match='is not a directory'):
        VmSpec(make_params(memory_dir=str(tmp_path / 'file'))).check_memory_dir()


@pytest.mark.parametrize('free, reuse, ok', [
    (2 << 30, 0, True),
    (1 << 30, 0, True),
    ((1 << 30) - 4096, 0, False),
    (512 * MIB, 0, False),
    (512 * MIB, 512 * MIB, True),  # the stale memory file of this VM will be removed first
])
def test_check_memory_dir_room(tmp_path, monkeypatch, free, reuse, ok):
    calls = []

    def statvfs(path):
        calls.append(path)
        return _StatVfs(free)

    monkeypatch.setattr(_vm_spec.os, 'statvfs', statvfs)
    spec = VmSpec(make_params(memory='1G', memory_dir=str(tmp_path)))
    if ok:
        spec.check_memory_dir(reuse_bytes=reuse)
    else:
        with pytest.raises(InvalidInput, match='has %d MiB free, the guest RAM needs 1024 MiB' % (free // MIB)) as info:
            spec.check_memory_dir(reuse_bytes=reuse)
        assert info.value.details == dict(free_bytes=free, memory_bytes=1 << 30)
    assert calls == [str(tmp_path)]


# --- memfd RAM (cpr-transfer) --------------------------------------------------

def _qemu_of_version(path, version):
    path.write_text('#!/bin/sh\necho "QEMU emulator version %s (Debian test)"\n' % version)
    path.chmod(0o755)
    return str(path)


def test_argv_memfd(paths):
    spec = VmSpec(make_params(memory_backend='memfd'))
    cmd = QemuCommandLine.parse(spec.argv(paths))
    assert spec.memory_file is None
    assert cmd.memory_backends() == [{'qom-type': 'memory-backend-memfd', 'id': 'mem0', 'size': '1024M',
                                      'share': 'on'}]
    # ROMs and video RAM shared too, or cpr-transfer refuses the machine
    assert cmd.values('machine') == ['pc,memory-backend=mem0,aux-ram-share=on']


def test_memfd_needs_qemu_10(tmp_path):
    spec = VmSpec(make_params(memory_backend='memfd', binary=_qemu_of_version(tmp_path / 'qemu', '7.2.22')))
    with pytest.raises(InvalidInput, match=r'memory_backend memfd needs QEMU 10.0 or later .*is QEMU 7.2.22'):
        spec.check_files()
    spec = VmSpec(make_params(memory_backend='memfd', binary=_qemu_of_version(tmp_path / 'qemu10', '10.0.2')))
    spec.check_files()
    spec.check_memory_dir()  # no file to make room for


def test_a_spec_recorded_before_memory_backend_existed_does_not_conflict():
    stored = _stored()
    del stored['memory_backend']
    assert VmSpec(make_params()).conflicts_with(stored) == []
    assert VmSpec(make_params(memory_backend='memfd')).conflicts_with(stored) == ['memory_backend']


# --- user-mode networking on passt ---------------------------------------------

def test_passt_nic_is_a_stream_to_its_passt(paths, monkeypatch):
    monkeypatch.setattr(_vm_spec.shutil, 'which', lambda name: '/usr/bin/passt')
    monkeypatch.setattr(_vm_spec, 'binary_version', lambda path: dict(version='7.2.22'))
    spec = VmSpec(make_params(binary='/bin/true', nics=[
        nic(backend='auto', hostfwd=['tcp:127.0.0.1:8080-:80', 'udp::5353-:53']), nic(backend='slirp')]))
    spec.check_files()
    assert spec.net_backends == ['passt', 'slirp']
    assert [o.format() for o in _opts(spec.argv(paths), 'netdev')] == [
        'stream,id=net0,server=off,addr.type=unix,addr.path=/run/liveupdate-qemu/web-1/net0.passt.sock',
        'user,id=net1']
    [(socket, argv)] = spec.passt_commands(paths)
    assert socket == paths.passt_socket(0)
    assert argv[argv.index('--socket') + 1] == socket and argv[argv.index('--pid') + 1] == paths.passt_pidfile(0)
    assert '--one-off' in argv and argv[argv.index('--address') + 1] == '10.0.2.15'
    assert argv[-4:] == ['--tcp-ports', '127.0.0.1/8080:80', '--udp-ports', '5353:53']


@pytest.mark.parametrize('which, version, backend, expected', [
    (None, '7.2.22', 'auto', 'slirp'),
    ('/usr/bin/passt', '7.1.0', 'auto', 'slirp'),
    (None, '7.2.22', 'passt', 'needs the passt command'),
    ('/usr/bin/passt', '7.1.0', 'passt', 'this is QEMU 7.1.0'),
])
def test_passt_backend_where_available(monkeypatch, which, version, backend, expected):
    monkeypatch.setattr(_vm_spec.shutil, 'which', lambda name: which)
    monkeypatch.setattr(_vm_spec, 'binary_version', lambda path: dict(version=version))
    spec = VmSpec(make_params(binary='/bin/true', nics=[nic(backend=backend)]))
    if expected == 'slirp':
        spec.check_files()
        assert spec.net_backends == ['slirp']
    else:
        with pytest.raises(InvalidInput, match=expected):
            spec.check_files()


@pytest.mark.parametrize('hostfwd, message', [
    ('tcp:127.0.0.1:0-:80', 'host port of 0'),
    ('tcp:127.0.0.1:8080', 'passt takes PROTO'),
])
def test_passt_hostfwd_refused(monkeypatch, hostfwd, message):
    monkeypatch.setattr(_vm_spec.shutil, 'which', lambda name: '/usr/bin/passt')
    monkeypatch.setattr(_vm_spec, 'binary_version', lambda path: dict(version='7.2.22'))
    with pytest.raises(InvalidInput, match=message):
        VmSpec(make_params(binary='/bin/true', nics=[nic(backend='auto', hostfwd=[hostfwd])])).check_files()
