# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A model of a QEMU command line: options, their key=value lists, and the
resources they name (QMP sockets, memory backends, pidfile, VM name).

QEMU option values are comma-separated ``key=value`` lists where ``,,``
stands for a literal comma and the first item may be a bare value for an
implied key (``-object memory-backend-file,...``, ``-chardev socket,...``).
"""

from __future__ import annotations

import json
import re

# Options that take no argument (everything else takes exactly one).
FLAG_OPTIONS = frozenset((
    'S', 's', 'daemonize', 'no-reboot', 'no-shutdown', 'nographic', 'enable-kvm', 'snapshot',
    'nodefaults', 'no-user-config', 'full-screen', 'no-hpet', 'no-acpi', 'win2k-hack', 'usb',
    'only-migratable', 'preconfig', 'no-fd-bootchk', 'no-quit', 'alt-grab', 'ctrl-grab',
    'enable-sync-profile', 'semihosting', 'version', 'help', 'h', 'xen-attach', 'rtc-td-hack',
    'mem-prealloc', 'singlestep', 'one-insn-per-tb', 'portrait', 'xen-domid-restrict', 'audio-help',
    'perfmap', 'jitdump',
))


class QemuOpts:
    """An ordered ``key=value`` list; ``None`` is the key of a bare leading value."""

    def __init__(self, items=None, json_values=None):
        self.items = list(items or [])
        # For JSON syntax: the original typed values, so that format() writes JSON back.
        self.json_values = json_values

    @classmethod
    def parse(cls, text):
        if text.startswith('{'):
            # JSON syntax (-object '{"qom-type": ...}'): keep keys, stringify values.
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict):
                return cls([(k, _json_scalar(v)) for k, v in data.items()], json_values=data)
        items, buf, i = [], [], 0
        parts = []
        while i < len(text):
            ch = text[i]
            if ch == ',':
                if text[i + 1:i + 2] == ',':
                    buf.append(',')
                    i += 2
                    continue
                parts.append(''.join(buf))
                buf = []
            else:
                buf.append(ch)
            i += 1
        parts.append(''.join(buf))
        for index, part in enumerate(parts):
            if '=' in part:
                key, value = part.split('=', 1)
                items.append((key, value))
            elif index == 0:
                items.append((None, part))
            elif part.startswith('no') and len(part) > 2:
                items.append((part[2:], 'off'))  # QEMU reads a bare noKEY as KEY=off ("server,nowait")
            elif part:
                items.append((part, 'on'))
        return cls(items)

    def format(self):
        if self.json_values is not None:
            data = {}
            for key, value in self.items:
                original = self.json_values.get(key)
                data[key] = original if key in self.json_values and _json_scalar(original) == value else value
            return json.dumps(data)
        out = []
        for key, value in self.items:
            value = str(value).replace(',', ',,')
            out.append(value if key is None else '%s=%s' % (key, value))
        return ','.join(out)

    def get(self, key, default=None, implied=None):
        for k, v in self.items:
            if k == key or (k is None and implied is not None and key == implied):
                return v
        return default

    def head(self):
        """The bare leading value, if any (the backend/type word)."""
        if self.items and self.items[0][0] is None:
            return self.items[0][1]
        return None

    def set(self, key, value):
        for index, (k, dummy) in enumerate(self.items):
            if k == key:
                self.items[index] = (key, value)
                return
        self.items.append((key, value))

    def remove(self, key):
        self.items = [(k, v) for k, v in self.items if k != key]

    def as_dict(self, implied=None):
        return dict(((implied if k is None else k), v) for k, v in self.items)


# A live update gives the new QEMU its own socket and pidfile paths, PATH.lu-TOKEN,
# and renames them to PATH once the old QEMU is gone; its argv keeps the temporary names.
TEMP_SUFFIX_RE = re.compile(r'\.lu-[0-9a-f]{8}$')
TEMP_IN_VALUE_RE = re.compile(r'\.lu-[0-9a-f]{8}(?=,|$)')


def temp_path(path, token):
    return '%s.lu-%s' % (canonical_path(path), token)


def canonical_path(path):
    """The name a live update gave a path back (PATH.lu-TOKEN -> PATH)."""
    return TEMP_SUFFIX_RE.sub('', path)


def canonical_value(value):
    """An option value with every temporary path in it named canonically
    ('unix:/run/x/qmp.sock.lu-TOKEN,server=on' -> 'unix:/run/x/qmp.sock,server=on')."""
    return TEMP_IN_VALUE_RE.sub('', value)


def _json_scalar(value):
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return str(value) if not isinstance(value, (dict, list)) else json.dumps(value)


def is_on(value):
    return str(value).lower() in ('on', 'yes', 'true', 'y', '1')


class QemuCommandLine:
    """A parsed QEMU argv: the binary and an ordered list of (option, value).

    ``value`` is None for flag options. Option names are kept without dashes.
    """

    def __init__(self, binary, options):
        self.binary = binary
        self.options = list(options)

    @classmethod
    def parse(cls, argv):
        argv = list(argv)
        if not argv:
            raise ValueError('empty command line')
        options, i = [], 1
        while i < len(argv):
            word = argv[i]
            if not word.startswith('-'):
                # A bare word is a disk image (the legacy -hda form).
                options.append(('hda', word))
                i += 1
                continue
            name = word.lstrip('-')
            if '=' in name and word.startswith('--'):
                name, value = name.split('=', 1)
                options.append((name, value))
                i += 1
            elif name in FLAG_OPTIONS or i + 1 >= len(argv):
                options.append((name, None))
                i += 1
            else:
                options.append((name, argv[i + 1]))
                i += 2
        return cls(argv[0], options)

    def argv(self):
        out = [self.binary]
        for name, value in self.options:
            out.append('-' + name)
            if value is not None:
                out.append(value)
        return out

    def values(self, name):
        return [v for n, v in self.options if n == name]

    def opts(self, name):
        return [QemuOpts.parse(v) for v in self.values(name) if v is not None]

    def has(self, name):
        return any(n == name for n, dummy in self.options)

    # --- what the command line names ---

    def name(self):
        for opts in self.opts('name'):
            return opts.get('guest', implied='guest')
        return None

    def chardev_sockets(self):
        """{chardev id: unix socket path} for server-side unix socket chardevs."""
        found = {}
        for opts in self.opts('chardev'):
            server = is_on(opts.get('server', 'off'))
            if opts.head() in ('socket', 'unix') and server and opts.get('path') and opts.get('id'):
                found[opts.get('id')] = opts.get('path')
        return found

    def qmp_sockets(self):
        """Unix socket paths of the QMP monitors, in command-line order."""
        sockets = self.chardev_sockets()
        paths = []
        for name, value in self.options:
            if name in ('qmp', 'qmp-pretty') and value and value.startswith('unix:'):
                paths.append(QemuOpts.parse(value[len('unix:'):]).head())
            elif name == 'mon' and value:
                opts = QemuOpts.parse(value)
                if opts.get('mode') == 'control' and opts.get('chardev') in sockets:
                    paths.append(sockets[opts.get('chardev')])
        return [p for p in paths if p]

    def qom_types(self):
        """The device and object types that -device and -object create."""
        types = [o.get('driver', implied='driver') for o in self.opts('device')]
        types += [o.get('qom-type', implied='qom-type') for o in self.opts('object')]
        return sorted(set(t for t in types if t and t != 'help'))

    def memory_backends(self):
        """The -object memory-backend-* definitions as dicts (qom-type, id, ...)."""
        backends = []
        for opts in self.opts('object'):
            data = opts.as_dict(implied='qom-type')
            if data.get('qom-type', '').startswith('memory-backend'):
                backends.append(data)
        return backends
