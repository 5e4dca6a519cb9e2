# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An update whose module process died half-way (controller killed, host rebooted
ansible's ssh session...): the next live_update settles the VM on exactly one QEMU.

The interrupted states are built with real QEMU processes, step by step as the
engine takes them: destination spawned; migration completed but the destination
not resumed; destination resumed but the source never quit."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._destination import plan_destination
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPSession
from harness import qemu_pids_under

INSTALLED = '/usr/bin/qemu-system-x86_64'


def interrupt(vm, stage):
    """Leave VM ``vm`` as an update interrupted after ``stage``; returns the destination's pid."""
    source = QemuProcess.from_pid(vm['pid'])
    plan = plan_destination(source.argv, vm['qmp_socket'], 'pc-i440fx-7.2', 'deadbeef')
    # as the engine would start it, but daemonized: this test process does not stay its parent
    subprocess.run(plan.argv(INSTALLED) + ['-daemonize'], check=True, timeout=60)
    with open(plan.pidfile) as handle:
        dest_pid = int(handle.read())
    if stage == 'spawned':
        return dest_pid
    caps = {'capabilities': [{'capability': 'x-ignore-shared', 'state': True}, {'capability': 'events', 'state': True}]}
    with QMPSession(plan.qmp_socket, 10) as dest, QMPSession(vm['qmp_socket'], 10) as src:
        dest.execute('migrate-set-capabilities', caps)
        src.execute('migrate-set-capabilities', caps)
        dest.execute('migrate-incoming', {'uri': 'unix:%s.migrate' % plan.qmp_socket})
        src.execute('migrate', {'uri': 'unix:%s.migrate' % plan.qmp_socket})
        dest.wait_event('MIGRATION', 30, lambda e: e['data']['status'] == 'completed')
        # the source may still be finishing its side (as the engine's switch_over waits out)
        deadline = time.monotonic() + 10
        status = src.execute('query-status')['status']
        while status == 'finish-migrate' and time.monotonic() < deadline:
            time.sleep(0.01)
            status = src.execute('query-status')['status']
        assert status == 'postmigrate'
        if stage == 'switched':
            dest.execute('cont')
    return dest_pid


@pytest.mark.parametrize('stage', ['spawned', 'migrated', 'switched'])
def test_next_update_settles_an_interrupted_one(ansible, bare_spec, old_qemu, stage):
    name = 'lut-recover-%s' % stage
    started = ansible.module('vm', bare_spec(name, binary=old_qemu))
    vm = started['vm']
    try:
        dest_pid = interrupt(vm, stage)
        assert sorted(qemu_pids_under(vm['memory_file'])) == sorted([vm['pid'], dest_pid])

        result = ansible.module('live_update', {'name': name, 'target_binary': INSTALLED})
        assert result['changed'] is True and not result.get('failed'), result
        assert [r['pid'] for r in result['recovered']] == [dest_pid]
        survivor = result['new']['pid']
        if stage == 'switched':
            assert survivor == dest_pid and 'completed an interrupted live update' in result['msg']
        else:
            assert survivor not in (vm['pid'], dest_pid)
        assert qemu_pids_under(vm['memory_file']) == [survivor]
        status = ansible.module('qmp_command', {'name': name, 'command': 'query-status'})
        assert status['result']['status'] == 'running'
        info = ansible.module('vm_info', {'query': "[?name=='%s']" % name, 'target_binary': INSTALLED})['vms']
        assert [(v['pid'], v['outdated'], v['managed']) for v in info] == [(survivor, False, True)]
        assert [f for f in os.listdir(vm["runtime_dir"]) if ".lu-" in f] == []
    finally:
        ansible.module('vm', dict(name=name, state='stopped'))
