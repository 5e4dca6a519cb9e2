# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11: a running guest becomes a template; three clones start from it without a boot and
run independently (a write in one is seen neither in another nor in the template's files); a warm
clone starts on request; what must be refused is refused with nothing changed."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._saved import sha256_of as sha256
from harness import guest_log, guestlog


def private_dirty_kib(pid):
    with open('/proc/%d/smaps_rollup' % pid) as handle:
        for line in handle:
            if line.startswith('Private_Dirty:'):
                return int(line.split()[1])
    return 0


@pytest.fixture
def template_dirs(tmp_path):
    return dict(template_dir=str(tmp_path / 'templates'), overlay_dir=str(tmp_path / 'clones'))


def test_template_and_three_independent_clones(ansible, guest_spec, bare_spec, template_dirs, tmp_path):
    disk = str(tmp_path / 'golden.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, '16M'], check=True)
    nics = [{'type': 'user', 'backend': 'slirp', 'hostfwd': ['tcp:127.0.0.1:0-:80']}]  # passt VMs are not saved
    args = guest_spec('lut-golden', disks=[{'path': disk}], nics=nics,
                      append='console=ttyS0 quiet lu.fill_mb=8 lu.disk=1')
    golden = ansible.module('vm', args)['vm']
    booted = guest_log(golden['serial_log']).wait(lambda s: s.mem_ok >= 1 and (s.last_disk_record or 0) >= 5, timeout=120)
    clones = []
    counter = booted.last_counter  # the template is saved later: its clones' heartbeats are past this
    try:
        made = ansible.module('vm_template', dict(name='lut-tpl', vm='lut-golden', **_tpl(template_dirs)))
        assert made['changed'] and not made.get('failed'), made
        template = made['template']
        assert not os.path.exists(golden['memory_file']) and not os.path.exists(golden['runtime_dir'])
        assert oct(os.stat(template['memory_file']).st_mode & 0o777) == '0o444'
        memory_sum, disk_sum = sha256(template['memory_file']), sha256(disk)

        warm = ansible.module('vm_clone', dict(name='lut-c3', template='lut-tpl', state='warm', **template_dirs))
        assert warm['changed'] and warm['vm']['status'] == 'warm', warm
        clones.append('lut-c3')
        started = {}
        for name in ('lut-c1', 'lut-c2', 'lut-c3'):
            result = ansible.module('vm_clone', dict(name=name, template='lut-tpl', **template_dirs))
            assert result['changed'] and not result.get('failed'), result
            if name not in clones:
                clones.append(name)
            started[name] = result['vm']
        assert 'start_ms' not in ansible.module('vm_clone', dict(name='lut-c3', template='lut-tpl', **template_dirs)
                                                ).get('timings', {})
        pids = [vm['pid'] for vm in started.values()]
        assert len(set(pids)) == 3
        macs = [vm['macs'][0] for vm in started.values()]
        assert len(set(macs)) == 3, macs
        for vm in started.values():
            # The guest goes on from the template's point: same boot, heartbeat past the template's, memory intact.
            summary = guestlog.wait_for(vm['serial_log'], lambda s: s.last_counter >= counter + 20 and s.mem_ok >= 1, 60)
            assert summary.boot_ids == [booted.boot_ids[0]] and summary.mem_bad == 0
            assert summary.heartbeats[0][0] > counter, 'the clone printed the template\'s old console lines'
            assert private_dirty_kib(vm['pid']) > 0
        # Writes stay in each clone: the guests' RAM diverged, the template's files did not change.
        dumps = []
        for name, vm in sorted(started.items()):
            dump = str(tmp_path / ('%s.ram' % name))
            ansible.module('qmp_command', dict(name=name, command='pmemsave',
                                               arguments={'val': 0, 'size': 256 << 20, 'filename': dump}))
            dumps.append(sha256(dump))
            os.unlink(dump)
        assert len(set(dumps)) == 3 and memory_sum not in dumps
        assert sha256(template['memory_file']) == memory_sum and sha256(disk) == disk_sum
        for vm in started.values():
            assert subprocess.run(['qemu-img', 'info', '-U', vm['overlays'][0]], capture_output=True, text=True,
                                  check=True).stdout.count(disk) == 1

        # A clone is told from a VM on its own memory: vm_info and live_update see the private mapping.
        info = ansible.module('vm_info', dict(query="[?name=='lut-c1']"))['vms'][0]
        assert info['clone_of'] == 'lut-tpl' and not info['eligible'], info
        update = ansible.module('live_update', dict(name='lut-c1', target_binary='/usr/bin/qemu-system-x86_64',
                                                    force=True))
        assert update.get('failed') and 'share=off' in update['msg'], update

        # Refused, nothing changed.
        nested = ansible.module('vm_template', dict(name='lut-tpl2', vm='lut-c1', **_tpl(template_dirs)))
        assert nested.get('failed') and 'is a clone of template lut-tpl' in nested['msg'], nested
        assert ansible.module('qmp_command', dict(name='lut-c1', command='query-status'))['result']['status'] == 'running'
        busy = ansible.module('vm_template', dict(name='lut-tpl', state='absent', **_tpl(template_dirs)))
        assert busy.get('failed') and 'has clones' in busy['msg'], busy
        assert os.path.exists(template['memory_file'])
        # Stopped like any VM, a clone leaves the template's memory file alone (vm_clone absent below
        # removes its overlays and registration).
        stopped = ansible.module('vm', dict(name='lut-c2', state='stopped'))
        assert stopped['changed'] and sha256(template['memory_file']) == memory_sum, stopped
        own = ansible.module('vm', bare_spec('lut-own'))  # no guest needed: it only has to be no clone
        try:
            taken = ansible.module('vm_clone', dict(name='lut-own', template='lut-tpl', **template_dirs))
            assert taken.get('failed') and 'not a clone' in taken['msg'], taken
        finally:
            ansible.module('vm', dict(name='lut-own', state='stopped'))
            assert own['changed']
    finally:
        for name in clones:
            gone = ansible.module('vm_clone', dict(name=name, template='lut-tpl', state='absent', **template_dirs))
            assert not gone.get('failed'), gone
        deleted = ansible.module('vm_template', dict(name='lut-tpl', state='absent', **_tpl(template_dirs)))
        assert not deleted.get('failed'), deleted
        ansible.module('vm', dict(name='lut-golden', state='stopped'))
    assert not os.listdir(template_dirs['template_dir'])
    assert not os.path.exists(template_dirs['overlay_dir']) or not os.listdir(template_dirs['overlay_dir'])


def _tpl(dirs):
    return dict(template_dir=dirs['template_dir'])
