# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A QEMU binary on disk: its version string, package and what it supports (probe)."""

from __future__ import annotations

import os
import re
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import (
    VERSION_RE, binary_version, missing_types, normalize_package, probe_binary,
)

QEMU = '/usr/bin/qemu-system-x86_64'


# --- versions and packages --------------------------------------------------

@pytest.mark.parametrize('package, normalized', [
    (' (Debian 1:7.2+dfsg-7)', 'Debian 1:7.2+dfsg-7'),
    ('Debian 1:7.2+dfsg-7', 'Debian 1:7.2+dfsg-7'),
    ('(Debian 1:7.2+dfsg-7)', 'Debian 1:7.2+dfsg-7'),
    ('qemu-kvm-7.2.0-14.el9', 'qemu-kvm-7.2.0-14.el9'),
    ('', None),
    ('  ', None),
    (' ()', None),
    (None, None),
])
def test_normalize_package(package, normalized):
    assert normalize_package(package) == normalized


@pytest.mark.parametrize('output, version, package', [
    ('QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n'
     'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n',
     '7.2.19', 'Debian 1:7.2+dfsg-7+deb12u18+b3'),
    ('QEMU emulator version 8.2.2 (qemu-8.2.2-1.fc40)\n', '8.2.2', 'qemu-8.2.2-1.fc40'),
    ('QEMU emulator version 9.0.0\nCopyright (c) 2003-2024 Fabrice Bellard and the QEMU Project developers\n',
     '9.0.0', None),
    ('QEMU emulator version 7.2.0 (v7.2.0)\n', '7.2.0', 'v7.2.0'),
])
def test_version_re(output, version, package):
    match = VERSION_RE.search(output)
    assert match.group(1) == version
    assert normalize_package(match.group(2)) == package


def test_version_re_no_version():
    assert VERSION_RE.search('qemu-system-x86_64: -version: invalid option\n') is None


def test_qmp_and_cli_package_agree():
    """query-version's package has no parentheses, --version's has: both normalise alike."""
    cli = VERSION_RE.search('QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)').group(2)
    assert normalize_package(cli) == normalize_package('Debian 1:7.2+dfsg-7+deb12u18+b3')
    assert normalize_package(cli) == normalize_package(' (Debian 1:7.2+dfsg-7+deb12u18+b3)')


# --- the target binary ------------------------------------------------------

@pytest.fixture(scope='module')
def probed():
    if not os.access(QEMU, os.X_OK):
        pytest.skip('%s is not installed' % QEMU)
    return probe_binary(QEMU)


def test_probe_binary(probed):
    installed = binary_version(QEMU)
    assert probed['path'] == QEMU
    assert (probed['version'], probed['package']) == (installed['version'], installed['package'])
    assert probed['version'].startswith('7.2.')
    assert 'x-ignore-shared' in probed['capabilities']
    assert {'pc', 'q35', 'pc-i440fx-7.2', 'pc-q35-7.2', 'pc-i440fx-7.1', 'none'} <= set(probed['machines'])
    assert probed['capabilities'] == sorted(probed['capabilities'])


def test_missing_types(probed):
    assert missing_types(probed, ['virtio-net-pci', 'memory-backend-file', 'no-such-device']) == ['no-such-device']
    assert probed['types'] == {'virtio-net-pci': True, 'memory-backend-file': True, 'no-such-device': False}
    assert missing_types(probed, ['no-such-device']) == ['no-such-device']  # from the cache
    # -device aliases (QEMU's qdev_alias_table)
    assert missing_types(probed, ['virtio-serial', 'virtio-net', 'ahci', 'lsi']) == []


@pytest.mark.parametrize('kind, message', [
    ('true', r'did not answer QMP queries \(exit 0\)'),
    ('false', r'did not answer QMP queries \(exit 1\)'),
    ('script', r'did not answer QMP queries \(exit 1\): qemu-system-x86_64: -machine none: unsupported'),
    ('missing', 'cannot run: .*No such file'),
    ('not-executable', 'cannot run: .*Permission denied'),
])
def test_probe_binary_not_qemu(tmp_path, kind, message):
    path = tmp_path / 'qemu-system-x86_64'
    if kind in ('true', 'false'):
        path = '/bin/' + kind
    elif kind == 'script':
        path.write_text('#!/bin/sh\necho "qemu-system-x86_64: -machine none: unsupported" >&2\nexit 1\n')
        path.chmod(0o755)
    elif kind == 'not-executable':
        path.write_text('#!/bin/sh\n')
        path.chmod(0o644)
    with pytest.raises(InvalidInput, match='target binary %s %s' % (re.escape(str(path)), message)):
        probe_binary(str(path))


def test_probe_binary_timeout(tmp_path):
    path = tmp_path / 'qemu-system-x86_64'
    path.write_text('#!/bin/sh\nexec sleep 10\n')
    path.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(InvalidInput, match='target binary %s cannot run: .*timed out' % re.escape(str(path))):
        probe_binary(str(path), timeout=0.2)
    assert time.monotonic() - start < 1


# A stand-in that answers every QMP command (one JSON line per input line) with REPLY.
SHAPE_SCRIPT = r'''#!%s
import json, sys
sys.stdout.buffer.write(b'\xff\xfe not utf-8\n')
for i, line in enumerate(sys.stdin):
    print(json.dumps({'return': %s, 'id': i}), flush=True)
'''


@pytest.mark.parametrize('reply', ['{}', '[]', '"x"', '{"qemu": {"major": "x"}}'])
def test_probe_binary_wrong_shapes(tmp_path, reply):
    """Replies QEMU would never give (a broken or hostile binary) are refused by name, not a traceback."""
    import sys
    path = tmp_path / 'qemu-system-x86_64'
    path.write_text(SHAPE_SCRIPT % (sys.executable, reply))
    path.chmod(0o755)
    with pytest.raises(InvalidInput, match='target binary %s gave QMP replies of an unexpected shape'
                       % re.escape(str(path))):
        probe_binary(str(path))


def test_binary_version_output_not_utf8(tmp_path):
    path = tmp_path / 'qemu-system-x86_64'
    path.write_bytes(b'#!/bin/sh\nprintf "QEMU emulator version 7.2.1 (\\377)\\n"\n')
    path.chmod(0o755)
    info = binary_version(str(path))
    assert info['version'] == '7.2.1'
