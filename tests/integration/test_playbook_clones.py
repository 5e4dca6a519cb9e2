# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11: playbooks/clones.yml makes a template of a running VM and stamps out clones of it,
running and warm, then removes them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from harness import qemu_pids_under


def run_playbook(tmp_path, runtime_dir, **extra_vars):
    """ansible-playbook liveupdate.qemu.clones on localhost, VMs under the test's runtime directory."""
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(yaml.safe_dump({'hypervisors': {'hosts': {'localhost': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}}}}))
    extra = dict(extra_vars, clones_runtime_dir=runtime_dir)
    return subprocess.run(['ansible-playbook', '-i', str(inventory), '-e', json.dumps(extra), 'liveupdate.qemu.clones'],
                          capture_output=True, text=True, env=dict(os.environ, ANSIBLE_NOCOLOR='1'), check=False,
                          timeout=300)


def test_the_playbook_stamps_out_running_and_warm_clones(ansible, bare_spec, runtime_dir, tmp_path):
    source = ansible.module('vm', bare_spec('lut-pb-golden'))
    assert source['changed'], source
    dirs = dict(clones_template_dir=str(tmp_path / 't'), clones_overlay_dir=str(tmp_path / 'c'))
    try:
        proc = run_playbook(tmp_path, runtime_dir, clones_template='lut-pb', clones_template_vm='lut-pb-golden',
                            clones_per_host=2, clones_warm=1, clones_prefix='lut-pb-', **dirs)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert 'lut-pb-1, lut-pb-2 started; 1 warm' in proc.stdout, proc.stdout[-2000:]
        states = {}
        for name in ('lut-pb-1', 'lut-pb-2', 'lut-pb-3'):
            states[name] = ansible.module('qmp_command', dict(name=name, command='query-status'))['result']['status']
        assert states == {'lut-pb-1': 'running', 'lut-pb-2': 'running', 'lut-pb-3': 'inmigrate'}, states
        again = run_playbook(tmp_path, runtime_dir, clones_template='lut-pb', clones_template_vm='lut-pb-golden',
                             clones_per_host=2, clones_warm=1, clones_prefix='lut-pb-', **dirs)
        assert again.returncode == 0 and 'changed=0' in again.stdout, again.stdout[-2000:]
    finally:
        gone = run_playbook(tmp_path, runtime_dir, clones_template='lut-pb', clones_per_host=2, clones_warm=1,
                            clones_prefix='lut-pb-', clones_state='absent', **dirs)
        ansible.module('vm_template', dict(name='lut-pb', state='absent', template_dir=dirs['clones_template_dir']))
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert [p for p in qemu_pids_under(runtime_dir) if b'lut-pb-' in _cmdline(p)] == []
    ansible.module('vm', dict(name='lut-pb-golden', state='stopped'))


def _cmdline(pid):
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        return handle.read()
