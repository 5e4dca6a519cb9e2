# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/live_update.yml when a host fails: the report is still written, later hosts are not
started beyond live_update_max_fail_percentage, and the run ends failed.

Two inventory hosts on this machine (local connection); the first one's target build does not
exist, so it fails in qemu_build, before any VM is looked at. No VM is selected on either
(rolling_update_include names none), so QEMUs of other tests are never touched."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml


def rollout(tmp_path, **extra):
    """Run the playbook over hosts lut-h1 (failing) and lut-h2; returns (rc, output, report rows)."""
    report_dir = tmp_path / 'reports'
    common = dict(ansible_connection='local', ansible_python_interpreter=sys.executable,
                  hypervisor_install_packages=False, hypervisor_venv=sys.prefix,
                  hypervisor_runtime_dir=str(tmp_path / 'run'), qemu_build_method='path',
                  rolling_update_include=['lut-no-such-vm'])
    inventory = {'hypervisors': {'hosts': {
        'lut-h1': dict(common, qemu_build_binary_path='/nonexistent/qemu-system-x86_64'),
        'lut-h2': dict(common, qemu_build_binary_path='/usr/bin/qemu-system-x86_64')}}}
    inventory_path = tmp_path / 'inventory.yml'
    inventory_path.write_text(yaml.safe_dump(inventory))
    extra_vars = dict(live_update_report_dir=str(report_dir), **extra)
    proc = subprocess.run(['ansible-playbook', '-i', str(inventory_path), '-e', json.dumps(extra_vars),
                           'liveupdate.qemu.live_update'], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, ANSIBLE_NOCOLOR='1'), check=False)
    reports = sorted(glob.glob(str(report_dir / 'rollout-*.json')))
    assert len(reports) == 1, (proc.stdout[-3000:], proc.stderr[-2000:])
    with open(reports[0]) as handle:
        rows = json.load(handle)['results']
    return proc.returncode, proc.stdout, rows


@pytest.mark.parametrize('max_fail, second', [(0, 'not started'), (50, None)], ids=['stop', 'tolerate-half'])
def test_failed_host_is_reported(tmp_path, max_fail, second):
    rc, output, rows = rollout(tmp_path, live_update_max_fail_percentage=max_fail)
    assert rc != 0 and 'the rollout did not complete' in output, output[-3000:]
    by_host = dict((r['host'], r) for r in rows)
    assert set(by_host) == ({'lut-h1', 'lut-h2'} if second else {'lut-h1'}), rows
    failed = by_host['lut-h1']
    assert failed['vm'] == '-' and failed['result'] == 'failed', failed
    assert '/nonexistent/qemu-system-x86_64 does not exist' in failed['msg'], failed
    if second:
        assert by_host['lut-h2']['result'] == 'not started'
        assert 'after failures on lut-h1' in by_host['lut-h2']['msg']
    else:
        # tolerated: lut-h2 ran to the end (nothing selected on it, so no row of its own)
        assert 'lut-h2' in output and "hosts: 1 failed, 0 not started" in output, output[-3000:]
