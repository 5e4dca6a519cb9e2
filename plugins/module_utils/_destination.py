# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The command line of a live update's destination, derived from the source's.

The destination runs beside the source until the switch, so whatever the
source holds by name must be handed over, renamed afterwards, or refused here,
before anything starts (see docs/live-update.md):

- unix sockets it listens on (QMP, chardevs, VNC) and its pidfile: the
  destination gets PATH.lu-TOKEN, renamed to PATH once the source is gone
  (the source unlinks PATH when it quits);
- user-mode ``hostfwd`` rules: left out, added again after the switch;
- a tap NIC: its open fd is taken from the source and passed down (a
  multi-queue tap opened by name can simply be opened twice);
- a ``-netdev stream`` connected to a user-mode network stack (passt): its open
  socket is taken from the source and passed down; the stack is held still while
  both processes have it (see _live_update.spawn), so the connections it keeps for
  the guest survive;
- the machine type: pinned to what the source resolved (``pc`` -> ``pc-i440fx-7.2``);
- TCP listeners, stdio, ptys, ``-snapshot``: refused.

The destination always starts with ``-S``, the transfer mode's ``-incoming`` and without ``-daemonize``
(the engine starts it detached, keeping its output: see _proc.launch_detached). It stays paused
after the migration until the engine sends ``cont``, which is what makes the
point of no return an explicit step of the engine.
"""

from __future__ import annotations

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import (
    QemuCommandLine, QemuOpts, canonical_path, is_on, temp_path,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput

DROPPED = ('S', 'incoming', 'daemonize', 'loadvm', 'pidfile')
REFUSED_FLAGS = {
    'snapshot': 'its disks write to temporary files of the running QEMU',
    'nographic': 'its console is on the stdio of the running QEMU',
}
CHARDEV_OK = ('socket', 'unix', 'file', 'null', 'ringbuf', 'memory', 'pipe', 'msmouse', 'wctablet', 'braille',
              'testdev', 'spicevmc', 'spiceport', 'qemu-vdagent')
NETDEV_OK = ('user', 'tap', 'stream', 'hubport', 'vhost-user', 'vhost-vdpa')
CONSOLE_DEVICES = ('isa-serial', 'pci-serial', 'pci-serial-2x', 'pci-serial-4x', 'usb-serial', 'virtconsole',
                   'virtserialport')


class Refused(InvalidInput):
    """The source uses something a destination cannot take over."""


def _refuse(option, value, why):
    shown = '-%s %s' % (option, value) if value else '-' + option
    raise Refused('cannot live-update: %s: %s' % (shown, why), option=option, value=value)


class TapHandover:
    """A tap NIC whose fd is taken from the source (``source_fd``, or found by ``ifname``)."""

    def __init__(self, netdev_id, source_fd=None, ifname=None):
        self.netdev_id = netdev_id
        self.source_fd = source_fd
        self.ifname = ifname

    def as_dict(self):
        return dict(netdev=self.netdev_id, source_fd=self.source_fd, ifname=self.ifname)


class StreamHandover:
    """A ``-netdev stream`` client socket taken from the source (``source_fd``, or found by the
    ``path`` it is connected to)."""

    def __init__(self, netdev_id, source_fd=None, path=None):
        self.netdev_id = netdev_id
        self.source_fd = source_fd
        self.path = path

    def as_dict(self):
        return dict(netdev=self.netdev_id, source_fd=self.source_fd, path=self.path)


class DestinationPlan:
    """The destination's argv (with a placeholder per tap and stream fd) and what to do at the switch."""

    FD_PLACEHOLDER = '@tapfd%d@'
    STREAM_PLACEHOLDER = '@streamfd%d@'

    def __init__(self, token):
        self.token = token
        self.options = []
        self.renames = []          # (temporary path, canonical path)
        self.taps = []             # TapHandover
        self.streams = []          # StreamHandover
        self.console_sockets = []  # temporary paths of the server sockets of console devices (see _drain)
        self.downscripts = []      # (netdev id, script) the source runs on its taps when it quits
        self.qmp_socket = None     # the destination's temporary QMP socket
        self.pidfile = None        # the destination's temporary pidfile
        self.canonical_pidfile = None

    def rename(self, path):
        """The temporary name of ``path`` for the destination; recorded for the switch."""
        canonical = canonical_path(path)
        temporary = temp_path(canonical, self.token)
        self.renames.append((temporary, canonical))
        return temporary

    def argv(self, binary, tap_fds=(), stream_fds=()):
        """The final command line, with the tap and stream fds the destination inherits."""
        out = QemuCommandLine(binary, self.options).argv()
        for placeholder, fds in ((self.FD_PLACEHOLDER, tap_fds), (self.STREAM_PLACEHOLDER, stream_fds)):
            for index, fd in enumerate(fds):
                out = [a.replace(placeholder % index, str(fd)) for a in out]
        return out

    def as_dict(self, binary):
        return dict(argv=self.argv(binary), renames=[list(r) for r in self.renames],
                    console_sockets=list(self.console_sockets),
                    taps=[t.as_dict() for t in self.taps], streams=[t.as_dict() for t in self.streams],
                    downscripts=[list(d) for d in self.downscripts],
                    qmp_socket=self.qmp_socket)


def tap_downscripts(argv):
    """[(netdev id, script)] of the taps whose downscripts the QEMU of ``argv`` runs when it
    quits ('default': its qemu-ifdown). QEMU runs one for a tap it opened by name, unless
    downscript=no; after a live update it would act on the interface the new QEMU uses."""
    scripts = []
    for name, value in QemuCommandLine.parse(argv).options:
        if name != 'netdev':
            continue
        opts = QemuOpts.parse(value)
        if opts.get('type', implied='type') != 'tap' or opts.get('fd') or opts.get('fds'):
            continue
        script = opts.get('downscript')
        if script not in ('', 'no'):
            scripts.append((opts.get('id'), script or 'default'))
    return scripts


def console_sockets(options):
    """The unix server socket paths of the console devices among ``options`` (serial ports,
    virtio console and serial ports): the chardevs whose device can be left waiting on a
    blocked client (see _drain). Monitors, vhost-user and other backends are left alone."""
    cmdline = QemuCommandLine(None, options)
    servers = cmdline.chardev_sockets()
    found = []
    for name, value in options:
        if name == 'serial' and value.startswith('chardev:'):
            found.append(servers.get(value[len('chardev:'):]))
        elif name == 'serial' and value.startswith('unix:'):
            opts = QemuOpts.parse(value[len('unix:'):])
            found.append(opts.head() if is_on(opts.get('server', 'off')) else None)
        elif name == 'device':
            opts = QemuOpts.parse(value)
            if opts.get('driver', implied='driver') in CONSOLE_DEVICES:
                found += [servers.get(v) for k, v in opts.items if k and k.startswith('chardev')]
    return [path for index, path in enumerate(found) if path and path not in found[:index]]


def pin_machine(value, machine_type):
    """A -machine value with its type replaced by ``machine_type`` (what the running QEMU resolved
    its type to: ``pc`` may mean another version on another binary)."""
    opts = QemuOpts.parse(value)
    opts.remove('type')
    if opts.head() is not None:
        opts.items[0] = (None, machine_type)
    else:
        opts.items.insert(0, (None, machine_type))
    return opts.format()


def plan_destination(source_argv, control_socket, machine_type, token, incoming=(('incoming', 'defer'),)):
    """Rewrite ``source_argv`` for a destination; ``control_socket`` is the canonical
    QMP socket the engine talks to (the destination gets its temporary twin); ``incoming``:
    the transfer mode's -incoming options."""
    source = QemuCommandLine.parse(source_argv)
    plan = DestinationPlan(token)
    plan.downscripts = tap_downscripts(source_argv)
    machine_seen = False
    for name, value in source.options:
        if name in REFUSED_FLAGS:
            _refuse(name, None, REFUSED_FLAGS[name])
        if name in DROPPED:
            if name == 'pidfile':
                plan.canonical_pidfile = canonical_path(value)
            continue
        if name in ('machine', 'M'):
            machine_seen = True
            name, value = 'machine', pin_machine(value, machine_type)
        elif name in ('qmp', 'qmp-pretty', 'monitor', 'serial', 'parallel'):
            value = _legacy_chardev(plan, name, value)
        elif name == 'chardev':
            value = _chardev(plan, value)
        elif name == 'vnc':
            value = _vnc(plan, value)
        elif name == 'netdev':
            value = _netdev(plan, value)
        elif name in ('net', 'nic'):
            _net_legacy(name, value)
        elif name in ('drive', 'blockdev'):
            opts = QemuOpts.parse(value)
            if is_on(opts.get('snapshot', 'off')):
                _refuse(name, value, 'snapshot=on writes to a temporary file of the running QEMU')
        elif name == 'add-fd':
            _refuse(name, value, 'file descriptors of the running QEMU cannot be passed on')
        elif name == 's' or name == 'gdb' and not value.startswith(('unix:', 'none')):
            _refuse(name, value or '', 'the gdb stub listens on a TCP port the new QEMU cannot bind')
        elif name == 'display' and 'vnc=' in (value or '') and 'vnc=unix:' not in value and 'vnc=none' not in value:
            _refuse(name, value, 'the new QEMU cannot listen on this VNC display while the old one does')
        elif name == 'spice' and (QemuOpts.parse(value).get('port') or QemuOpts.parse(value).get('tls-port')):
            _refuse(name, value, 'the new QEMU cannot listen on this SPICE port while the old one does')
        plan.options.append((name, value))
    if not machine_seen:
        plan.options.insert(0, ('machine', machine_type))
    plan.qmp_socket = temp_path(control_socket, token)
    plan.console_sockets = console_sockets(plan.options)
    if not any(t == plan.qmp_socket for t, dummy in plan.renames):
        raise Refused('cannot live-update: QMP socket %s is not on the command line' % control_socket)
    plan.pidfile = temp_path(plan.canonical_pidfile or control_socket + '.pid', token)
    if plan.canonical_pidfile:
        plan.renames.append((plan.pidfile, plan.canonical_pidfile))
    plan.options += [('pidfile', plan.pidfile), ('S', None)] + list(incoming)
    return plan


def _legacy_chardev(plan, option, value):
    """-qmp/-monitor/-serial/-parallel in their 'backend:args' form."""
    if value in ('none', 'null', 'vc') or value.startswith(('chardev:', 'vc:')):
        return value
    if value.startswith('unix:'):
        opts = QemuOpts.parse(value[len('unix:'):])
        if option in ('qmp', 'qmp-pretty') or is_on(opts.get('server', 'off')):
            opts.items[0] = (None, plan.rename(opts.head()))
            opts.set('wait', 'off')
        return 'unix:' + opts.format()
    if value.startswith('file:') and option in ('serial', 'parallel'):
        # file:PATH truncates PATH when the destination opens it, under the running source's
        # writes: the destination gets the same file as a chardev that appends.
        chardev_id = 'lu-%s%d' % (option, sum(1 for n, dummy in plan.options if n == option))
        plan.options.append(('chardev', QemuOpts([(None, 'file'), ('id', chardev_id),
                                                  ('path', value[len('file:'):]), ('append', 'on')]).format()))
        return 'chardev:' + chardev_id
    _refuse(option, value, 'the new QEMU cannot take over this backend; use a unix socket')
    return value


def _chardev(plan, value):
    opts = QemuOpts.parse(value)
    backend = opts.head()
    if backend not in CHARDEV_OK:
        _refuse('chardev', value, 'a %s backend cannot be taken over; use a unix socket' % backend)
    if backend in ('socket', 'unix') and is_on(opts.get('server', 'off')):
        if not opts.get('path'):
            _refuse('chardev', value, 'the new QEMU cannot listen on this TCP address while the old one does; '
                                      'use a unix socket (path=...)')
        opts.set('path', plan.rename(opts.get('path')))
        opts.set('wait', 'off')
    # Both processes write the same files: never truncate them.
    if backend == 'file':
        opts.set('append', 'on')
    if opts.get('logfile'):
        opts.set('logappend', 'on')
    return opts.format()


def _vnc(plan, value):
    opts = QemuOpts.parse(value)
    head = opts.head() or ''
    if head == 'none':
        return value
    if head.startswith('unix:'):
        opts.items[0] = (None, 'unix:' + plan.rename(head[len('unix:'):]))
        return opts.format()
    _refuse('vnc', value, 'the new QEMU cannot listen on this VNC display while the old one does; '
                          'use a unix socket (-vnc unix:PATH, or vnc: unix in liveupdate.qemu.vm)')
    return value


def _netdev(plan, value):
    opts = QemuOpts.parse(value)
    kind = opts.get('type', implied='type')
    if kind not in NETDEV_OK:
        _refuse('netdev', value, 'a %s network backend cannot be shared with a new QEMU' % kind)
    if kind == 'user':
        # Forwarding rules hold host ports: added again after the switch (from 'info usernet').
        opts.remove('hostfwd')
    elif kind == 'tap':
        if opts.get('fds') or opts.get('vhostfds') or opts.get('vhostfd') or opts.get('helper'):
            _refuse('netdev', value, 'fds=, vhostfd(s)= and helper= taps cannot be handed over; use ifname= or fd=')
        queues = int(opts.get('queues', '1') or 1)
        if opts.get('fd') or queues <= 1:
            handover = TapHandover(opts.get('id'), source_fd=int(opts.get('fd')) if opts.get('fd') else None,
                                   ifname=opts.get('ifname'))
            if handover.source_fd is None and not handover.ifname:
                _refuse('netdev', value, 'a tap with neither ifname= nor fd= cannot be found in the running QEMU')
            for key in ('ifname', 'script', 'downscript', 'fd', 'queues', 'vnet_hdr'):
                opts.remove(key)
            opts.set('fd', DestinationPlan.FD_PLACEHOLDER % len(plan.taps))
            plan.taps.append(handover)
        # A multi-queue tap opened by name (queues>1) can be attached by both processes.
    elif kind == 'stream':
        opts = _stream(plan, opts, value)
    return opts.format()


def _stream(plan, opts, value):
    """A stream client's socket is handed over like a tap's fd; a listening one cannot be.
    Returns the destination's options (in dotted keys, which QEMU takes for a stream netdev)."""
    if opts.json_values is not None:  # libvirt's form: {"type": "stream", "addr": {...}, "server": false}
        flat = []
        for key, original in opts.json_values.items():
            nested = original.items() if isinstance(original, dict) else [(None, original)]
            for sub, item in nested:
                item = ('on' if item else 'off') if isinstance(item, bool) else str(item)
                flat.append((key if sub is None else '%s.%s' % (key, sub), item))
        opts = QemuOpts(flat)
    if is_on(opts.get('server', 'off')):
        _refuse('netdev', value, 'a stream netdev that listens (server=on) cannot be handed over; '
                                 'connect it to the network process instead (server=off)')
    address = opts.get('addr.type')
    if address == 'unix' and opts.get('addr.path') and not is_on(opts.get('addr.abstract', 'off')):
        handover = StreamHandover(opts.get('id'), path=opts.get('addr.path'))
    elif address == 'fd' and (opts.get('addr.str') or '').isdigit():
        handover = StreamHandover(opts.get('id'), source_fd=int(opts.get('addr.str')))
    else:
        _refuse('netdev', value, 'only a stream connected to a unix socket path or passed as a numbered fd '
                                 'can be handed over')
    for key in [k for k, dummy in opts.items if k and k.startswith(('addr.', 'reconnect'))]:
        opts.remove(key)
    opts.set('addr.type', 'fd')
    opts.set('addr.str', DestinationPlan.STREAM_PLACEHOLDER % len(plan.streams))
    plan.streams.append(handover)
    return opts


def _net_legacy(option, value):
    opts = QemuOpts.parse(value)
    if opts.get('hostfwd'):
        _refuse(option, value, 'hostfwd rules of -%s cannot be moved; use -netdev user,id=...,hostfwd=...' % option)
    kind = opts.head()
    if option == 'net' and kind not in ('nic', 'none', 'user', 'hubport') or option == 'nic' and kind == 'tap':
        _refuse(option, value, 'use -netdev with an id for networks that a live update hands over')
