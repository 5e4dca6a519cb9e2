# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wrong and hostile input to the modules, through real ansible-playbook runs: each is
refused with a short message that names the problem, no traceback, and leaves no process
or file behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from harness import qemu_pids_under


def assert_refused(result, words):
    assert result.get('failed'), result
    assert 'Traceback' not in str(result.get('module_stderr', '')) + result['msg'], result
    assert 'exception' not in result or 'MODULE FAILURE' not in result['msg'], result
    assert words in result['msg'], result
    assert len(result['msg']) <= 2100, len(result['msg'])


@pytest.mark.parametrize('module, args, words', [
    ('live_update', {'name': 'web\x001'}, 'name contains a NUL byte'),
    ('live_update', {'socket': '/run/x\x00.sock'}, 'socket contains a NUL byte'),
    ('live_update', {'name': 'web1', 'target_binary': '/usr/bin/qemu\x00'}, 'target_binary contains a NUL byte'),
    ('vm', {'name': 'web1', 'runtime_dir': '/run/lu\x00x'}, 'runtime_dir contains a NUL byte'),
    ('live_update', {'name': 'web1', 'timeout': 'nan'}, 'timeout must be a finite number of seconds'),
    ('live_update', {'name': 'web1', 'migration_timeout': 'inf'}, 'migration_timeout must be a finite number'),
    ('vm', {'name': 'web1', 'state': 'stopped', 'shutdown_timeout': -1}, 'shutdown_timeout must be a finite number'),
    ('qmp_command', {'name': '../etc', 'command': 'query-status'}, "VM name '../etc' is not valid"),
    ('vm_info', {'target_binary': '/nonexistent/qemu-system-x86_64'}, 'QEMU binary /nonexistent/qemu-system-x86_64 '
                                                                      'does not exist'),
    ('vm_info', {'query': '(' * 3000 + '@' + ')' * 3000}, 'query is not valid JMESPath'),
    ('vm_info', {'query': "abs('x')"}, 'query failed on the VM list'),
    ('live_update', {'socket': '/nonexistent/qmp.sock'}, 'QMP socket /nonexistent/qmp.sock does not exist'),
], ids=['nul-name', 'nul-socket', 'nul-binary', 'nul-runtime-dir', 'nan-timeout', 'inf-timeout', 'negative-timeout',
        'name-traversal', 'missing-target', 'deep-query', 'query-type-error', 'missing-socket'])
def test_refused(ansible, runtime_dir, module, args, words):
    locks = os.path.join(runtime_dir, '.locks')
    before = sorted(os.listdir(locks)) if os.path.isdir(locks) else []
    assert_refused(ansible.module(module, args), words)
    after = sorted(os.listdir(locks)) if os.path.isdir(locks) else []
    assert after == before, 'lock files left for a bogus input: %s' % sorted(set(after) - set(before))


@pytest.mark.parametrize('kind', ['regular-file', 'read-only'])
def test_unusable_runtime_dir(ansible, bare_spec, tmp_path, kind):
    """A runtime_dir that is a file, or on a read-only filesystem: a failure naming the path."""
    if kind == 'regular-file':
        runtime = tmp_path / 'not-a-dir'
        runtime.write_text('')
        words = str(runtime)
    else:
        runtime = tmp_path / 'ro'
        runtime.mkdir()
        # root ignores modes: a read-only filesystem it is
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(runtime)], check=True)
        words = 'Read-only file system'
    try:
        result = ansible.module('vm', dict(bare_spec('lut-hostile'), runtime_dir=str(runtime)))
    finally:
        if kind == 'read-only':
            subprocess.run(['umount', str(runtime)], check=True)
    assert_refused(result, words)
    assert qemu_pids_under('lut-hostile') == []
    assert not os.path.exists('/dev/shm/liveupdate-qemu-lut-hostile.ram')
