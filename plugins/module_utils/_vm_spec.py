# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The spec of a live-updatable VM: validation, normalisation and the QEMU
command line it becomes.

Guest RAM is a named ``memory-backend-file`` with ``share=on``, so a later live
update can leave it in place (x-ignore-shared), or, on QEMU >= 10.0, a
``memory-backend-memfd`` with ``share=on`` and ``aux-ram-share=on``, whose file
descriptors a live update hands over (cpr-transfer).
"""

from __future__ import annotations

import os
import re
import shutil

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuOpts
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._eligibility import CPR_TRANSFER_FROM, version_tuple
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import binary_version, resolve_binary
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import validate_name

SIZE_RE = re.compile(r'^\s*(\d+)\s*([KMGT])(?:i?B)?\s*$', re.IGNORECASE)
UNITS = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
MIB = 1 << 20

MEMORY_BACKEND_ID = 'mem0'
# -netdev stream, which connects QEMU to passt, came with QEMU 7.2.
STREAM_NETDEV_FROM = (7, 2)
# What QEMU's user-mode networking gives a guest, and so passt too (see passt_argv).
USER_NET = dict(address='10.0.2.15', prefix='24', gateway='10.0.2.2', dns='10.0.2.3')
HOSTFWD_RE = re.compile(r'^(?P<proto>tcp|udp):(?P<haddr>[^:]*):(?P<hport>\d+)-(?P<gaddr>[^:]*):(?P<gport>\d+)$')

# Spec keys whose change on a running VM is a conflict. The binary is not one:
# moving a VM to another binary is what live_update is for.
CONFLICTING_KEYS = ('memory', 'memory_backend', 'memory_dir', 'vcpus', 'machine', 'accel', 'cpu', 'kernel', 'initrd',
                    'append', 'disks', 'nics', 'serial', 'vnc', 'extra_args')
# What a spec recorded before a key existed meant.
RECORDED_DEFAULTS = dict(memory_backend='file')


def parse_size(text, what='memory'):
    """'512M', '4G', '1GiB' -> bytes. A unit is required: QEMU's bare numbers mean MiB, ours would be ambiguous."""
    match = SIZE_RE.match(str(text))
    if not match:
        raise InvalidInput('%s %r is not a size: write a positive number with a unit, like 512M or 4G' % (what, text))
    size = int(match.group(1)) * UNITS[match.group(2).upper()]
    if size <= 0:
        raise InvalidInput('%s %r must be larger than zero' % (what, text))
    if size % MIB:
        raise InvalidInput('%s %r must be a whole number of MiB' % (what, text))
    return size


def memory_file_for(memory_dir, name):
    """The guest RAM file of VM ``name`` in ``memory_dir``."""
    return os.path.join(memory_dir, 'liveupdate-qemu-%s.ram' % name)


def _abspath(path):
    return os.path.abspath(path) if path else path


def _existing_file(path, what):
    if not os.path.isfile(path):
        raise InvalidInput('%s %s does not exist or is not a file' % (what, path))
    return os.path.abspath(path)


class VmSpec:
    """A validated VM spec. ``as_dict()`` is what is stored and compared."""

    def __init__(self, params):
        self.name = validate_name(params['name'])
        self.memory = parse_size(params['memory'])
        self.memory_backend = params.get('memory_backend') or 'file'
        self.memory_dir = os.path.abspath(params['memory_dir'])
        self.binary = params['binary']
        self.vcpus = params['vcpus']
        if self.vcpus < 1:
            raise InvalidInput('vcpus must be at least 1, got %d' % self.vcpus)
        self.machine = params['machine']
        self.accel = list(params['accel'])
        self.cpu = params.get('cpu')
        self.kernel = _abspath(params.get('kernel'))
        self.initrd = _abspath(params.get('initrd'))
        self.append = params.get('append')
        if (self.initrd or self.append) and not self.kernel:
            raise InvalidInput('initrd and append need kernel')
        self.disks = [self._disk(d) for d in params.get('disks') or []]
        self.nics = [self._nic(n) for n in params.get('nics') or []]
        # Resolved by check_files (auto: passt where this host has it).
        self.net_backends = ['slirp' if n['type'] == 'user' else None for n in self.nics]
        self.serial = params['serial']
        self.vnc = params.get('vnc')
        self.extra_args = list(params.get('extra_args') or [])

    @staticmethod
    def _disk(disk):
        disk = dict(disk, path=os.path.abspath(disk['path']))
        if not disk.get('format'):
            disk['format'] = 'qcow2' if disk['path'].endswith('.qcow2') else 'raw'
        return disk

    @staticmethod
    def _nic(nic):
        nic = dict((k, v) for k, v in nic.items() if v not in (None, []))
        if nic['type'] == 'tap' and not nic.get('ifname'):
            raise InvalidInput('a tap NIC needs ifname')
        if nic.get('hostfwd') and nic['type'] != 'user':
            raise InvalidInput('hostfwd is only for user-mode NICs (type: user)')
        return nic

    def check_files(self):
        """Validate what lives on disk (binary, kernel, images); resolves paths."""
        self.binary = resolve_binary(self.binary)
        if self.memory_backend == 'memfd':
            version = (binary_version(self.binary) or {}).get('version')
            if not version or version_tuple(version) < CPR_TRANSFER_FROM:
                raise InvalidInput('memory_backend memfd needs QEMU %d.%d or later (a live update hands memfd RAM '
                                   'over with cpr-transfer); %s is QEMU %s'
                                   % (CPR_TRANSFER_FROM + (self.binary, version or 'of an unknown version')))
        for attr in ('kernel', 'initrd'):
            if getattr(self, attr):
                setattr(self, attr, _existing_file(getattr(self, attr), attr))
        for disk in self.disks:
            disk['path'] = _existing_file(disk['path'], 'disk image')
        if any(nic['type'] == 'user' for nic in self.nics):
            version = (binary_version(self.binary) or {}).get('version')
            lacks = None if version and version_tuple(version) >= STREAM_NETDEV_FROM else 'this is QEMU %s' % version
            if lacks is None and not shutil.which('passt'):
                lacks = 'passt is not installed'
            self.net_backends = [self._backend(nic, lacks) for nic in self.nics]

    @staticmethod
    def _backend(nic, passt_lacks):
        """'passt', 'slirp' or None (a tap) for ``nic``, ``auto`` resolved on this host;
        ``passt_lacks``: why passt cannot be used here, or None."""
        if nic['type'] != 'user':
            return None
        wanted = nic.get('backend', 'auto')
        if wanted == 'passt' and passt_lacks:
            raise InvalidInput('backend passt needs the passt command (package passt) and QEMU %d.%d or later '
                               '(-netdev stream); %s' % (STREAM_NETDEV_FROM + (passt_lacks,)))
        if wanted == 'auto':
            wanted = 'slirp' if passt_lacks else 'passt'
        for rule in nic.get('hostfwd', []) if wanted == 'passt' else ():
            match = HOSTFWD_RE.match(rule)
            if not match:
                raise InvalidInput('hostfwd %s: passt takes PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT '
                                   '(set backend: slirp for other forms)' % rule)
            if match.group('hport') == '0':
                raise InvalidInput('hostfwd %s: a host port of 0 (any free port) needs backend: slirp' % rule)
        return wanted

    def passt_commands(self, paths):
        """[(socket path, argv)] of the passt process of each NIC on passt."""
        return [(paths.passt_socket(index), passt_argv(nic, paths.passt_socket(index), paths.passt_pidfile(index)))
                for index, (nic, backend) in enumerate(zip(self.nics, self.net_backends)) if backend == 'passt']

    def check_memory_dir(self, reuse_bytes=0):
        """The memory directory exists and has room for the guest RAM (in a memory file)."""
        if self.memory_file is None:
            return
        if not os.path.isdir(self.memory_dir):
            raise InvalidInput('memory_dir %s does not exist or is not a directory' % self.memory_dir)
        stat = os.statvfs(self.memory_dir)
        free = stat.f_bavail * stat.f_frsize + reuse_bytes
        if free < self.memory:
            raise InvalidInput('memory_dir %s has %d MiB free, the guest RAM needs %d MiB'
                               % (self.memory_dir, free // MIB, self.memory // MIB),
                               free_bytes=free, memory_bytes=self.memory)

    @property
    def memory_file(self):
        return memory_file_for(self.memory_dir, self.name) if self.memory_backend == 'file' else None

    def as_dict(self):
        return dict(name=self.name, memory=self.memory, memory_backend=self.memory_backend,
                    memory_dir=self.memory_dir, binary=self.binary,
                    vcpus=self.vcpus, machine=self.machine, accel=self.accel, cpu=self.cpu,
                    kernel=self.kernel, initrd=self.initrd, append=self.append, disks=self.disks,
                    nics=self.nics, serial=self.serial, vnc=self.vnc, extra_args=self.extra_args)

    def conflicts_with(self, stored):
        """The keys whose value differs from a stored spec (of a running VM)."""
        mine = self.as_dict()
        return [key for key in CONFLICTING_KEYS if stored.get(key, RECORDED_DEFAULTS.get(key)) != mine[key]]

    def argv(self, paths):
        """The QEMU command line; ``paths`` is the VM's RuntimePaths."""
        mem_mib = self.memory // MIB
        machine = [(None, self.machine), ('memory-backend', MEMORY_BACKEND_ID)]
        backend = [(None, 'memory-backend-file'), ('id', MEMORY_BACKEND_ID), ('size', '%dM' % mem_mib),
                   ('mem-path', self.memory_file), ('share', 'on')]
        if self.memory_backend == 'memfd':
            # ROMs and video RAM shared too: cpr-transfer refuses a machine with private RAM.
            machine.append(('aux-ram-share', 'on'))
            backend = [(None, 'memory-backend-memfd'), ('id', MEMORY_BACKEND_ID), ('size', '%dM' % mem_mib),
                       ('share', 'on')]
        argv = [self.binary,
                '-name', QemuOpts([('guest', self.name)]).format(),
                '-nodefaults', '-no-user-config', '-display', 'none',
                '-machine', QemuOpts(machine).format(),
                '-m', '%dM' % mem_mib,
                '-object', QemuOpts(backend).format(),
                '-smp', str(self.vcpus),
                '-qmp', 'unix:%s,server=on,wait=off' % paths.qmp_socket.replace(',', ',,'),
                '-pidfile', paths.pidfile]
        for accel in self.accel:
            argv += ['-accel', accel]
        if self.cpu:
            argv += ['-cpu', self.cpu]
        if self.serial:
            argv += ['-chardev', QemuOpts([(None, 'socket'), ('id', 'serial0'), ('path', paths.serial_socket),
                                           ('server', 'on'), ('wait', 'off'), ('logfile', paths.serial_log),
                                           ('logappend', 'on')]).format(),
                     '-serial', 'chardev:serial0']
        for attr in ('kernel', 'initrd', 'append'):
            if getattr(self, attr):
                argv += ['-' + attr, getattr(self, attr)]
        for index, disk in enumerate(self.disks):
            argv += ['-drive', QemuOpts([('file', disk['path']), ('format', disk['format']),
                                         ('if', disk['interface']), ('id', 'disk%d' % index),
                                         ('cache', disk['cache'])]).format()]
        for index, nic in enumerate(self.nics):
            argv += self._nic_args(index, nic, self.net_backends[index], paths)
        if self.vnc:
            target = 'unix:%s' % paths.vnc_socket.replace(',', ',,') if self.vnc == 'unix' else self.vnc
            argv += ['-vga', 'std', '-vnc', target]
        return argv + ['-daemonize'] + self.extra_args

    @staticmethod
    def _nic_args(index, nic, backend, paths):
        netdev = 'net%d' % index
        if backend == 'passt':
            items = [(None, 'stream'), ('id', netdev), ('server', 'off'), ('addr.type', 'unix'),
                     ('addr.path', paths.passt_socket(index))]
        elif nic['type'] == 'user':
            items = [(None, 'user'), ('id', netdev)] + [('hostfwd', rule) for rule in nic.get('hostfwd', [])]
        else:
            items = [(None, 'tap'), ('id', netdev), ('ifname', nic['ifname']), ('script', 'no'),
                     ('downscript', 'no')]
            if nic.get('queues'):
                items.append(('queues', str(nic['queues'])))
        device = [(None, nic.get('model', 'virtio-net-pci')), ('netdev', netdev)]
        if nic.get('mac'):
            device.append(('mac', nic['mac']))
        return ['-netdev', QemuOpts(items).format(), '-device', QemuOpts(device).format()]


def passt_argv(nic, socket, pidfile):
    """passt for one NIC: the guest sees what QEMU's user-mode networking would give it, the
    host's ports are forwarded as the NIC's hostfwd rules say, and passt ends with its one
    client (--one-off): the QEMU that connects, then every QEMU a live update hands the
    same connection to."""
    # As root, like the QEMU: as passt's default user (nobody) it cannot write into the VM's
    # runtime directory, which is root's alone.
    argv = ['passt', '--foreground', '--one-off', '--quiet', '--runas', '0', '--socket', socket, '--pid', pidfile,
            '--address', USER_NET['address'], '--netmask', USER_NET['prefix'], '--gateway', USER_NET['gateway'],
            '--dns-forward', USER_NET['dns'], '--ipv4-only']
    for rule in nic.get('hostfwd', []):
        match = HOSTFWD_RE.match(rule)
        spec = '%s:%s' % (match.group('hport'), match.group('gport'))
        if match.group('haddr'):
            spec = '%s/%s' % (match.group('haddr'), spec)
        argv += ['--tcp-ports' if match.group('proto') == 'tcp' else '--udp-ports', spec]
    return argv
