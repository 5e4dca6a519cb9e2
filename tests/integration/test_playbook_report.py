# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/live_update.yml when a host fails or cannot be reached: the report is still written,
later hosts are not started beyond live_update_max_fail_percentage, and the run ends failed.

Inventory hosts on this machine (local connection): a failing one, whose target build does not
exist, so it fails in qemu_build before any VM is looked at, and healthy ones. Unreachable hosts
are really unreachable: SSH to a port of this machine where nothing listens (refused at once),
and to an address of TEST-NET-1 (RFC 5737, never routed: the connection times out). No VM is
selected on any host (rolling_update_include names none), so QEMUs of other tests are never
touched."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml


def closed_port():
    """A TCP port of this machine where nothing listens."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def host(tmp_path, kind):
    """Inventory variables of a host that is 'failing', 'healthy', 'refused' or 'timeout'."""
    common = dict(ansible_python_interpreter=sys.executable,
                  hypervisor_install_packages=False, hypervisor_venv=sys.prefix,
                  hypervisor_runtime_dir=str(tmp_path / 'run'), qemu_build_method='path',
                  qemu_build_binary_path='/usr/bin/qemu-system-x86_64',
                  rolling_update_include=['lut-no-such-vm'])
    if kind == 'failing':
        return dict(common, ansible_connection='local', qemu_build_binary_path='/nonexistent/qemu-system-x86_64')
    if kind == 'healthy':
        return dict(common, ansible_connection='local')
    ssh = dict(common, ansible_connection='ssh', ansible_user='root',
               ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null '
                                       '-o ConnectTimeout=3 -o ConnectionAttempts=1')
    if kind == 'refused':
        return dict(ssh, ansible_host='127.0.0.1', ansible_port=closed_port())
    return dict(ssh, ansible_host='192.0.2.1')


def rollout(tmp_path, hosts=(('lut-h1', 'failing'), ('lut-h2', 'healthy')), **extra):
    """Run the playbook over ``hosts`` (name, kind), one at a time; returns (rc, output, report)."""
    report_dir = tmp_path / 'reports'
    inventory = {'hypervisors': {'hosts': dict((name, host(tmp_path, kind)) for name, kind in hosts)}}
    inventory_path = tmp_path / 'inventory.yml'
    inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    extra_vars = dict(live_update_report_dir=str(report_dir), live_update_serial=1, **extra)
    proc = subprocess.run(['ansible-playbook', '-i', str(inventory_path), '-e', json.dumps(extra_vars),
                           'liveupdate.qemu.live_update'], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, ANSIBLE_NOCOLOR='1'), check=False)
    reports = sorted(glob.glob(str(report_dir / 'rollout-*.json')))
    assert len(reports) == 1, (proc.stdout[-3000:], proc.stderr[-2000:])
    with open(reports[0]) as handle:
        report = json.load(handle)
    return proc.returncode, proc.stdout, report


@pytest.mark.parametrize('max_fail, second', [(0, 'not started'), (50, None)], ids=['stop', 'tolerate-half'])
def test_failed_host_is_reported(tmp_path, max_fail, second):
    rc, output, report = rollout(tmp_path, live_update_max_fail_percentage=max_fail)
    rows = report['results']
    assert rc != 0 and 'the rollout did not complete' in output, output[-3000:]
    by_host = dict((r['host'], r) for r in rows)
    assert set(by_host) == ({'lut-h1', 'lut-h2'} if second else {'lut-h1'}), rows
    failed = by_host['lut-h1']
    assert failed['vm'] == '-' and failed['result'] == 'failed', failed
    assert '/nonexistent/qemu-system-x86_64 does not exist' in failed['msg'], failed
    if second:
        assert by_host['lut-h2']['result'] == 'not started'
        assert 'stopped after lut-h1 failed' in by_host['lut-h2']['msg']
    else:
        # tolerated: lut-h2 ran to the end (nothing selected on it, so no row of its own)
        assert [h['result'] for h in report['hosts']] == ['failed', 'done'], report['hosts']


def test_unreachable_hosts_are_rows_and_the_rollout_goes_on(tmp_path):
    """Two unreachable hosts, one at a time: each is a row, the healthy host after them is updated
    (max_fail_percentage allows it), and the report says so."""
    rc, output, report = rollout(tmp_path, hosts=[('lut-refused', 'refused'), ('lut-timeout', 'timeout'),
                                                  ('lut-ok', 'healthy')], live_update_max_fail_percentage=70)
    assert rc != 0 and 'the rollout did not complete' in output, output[-3000:]
    by_host = dict((r['host'], r) for r in report['results'])
    assert set(by_host) == {'lut-refused', 'lut-timeout'}, report['results']
    for name in ('lut-refused', 'lut-timeout'):
        assert by_host[name]['result'] == 'unreachable' and by_host[name]['vm'] == '-', by_host[name]
        assert by_host[name]['msg'].startswith('cannot reach the host'), by_host[name]
    assert 'Connection refused' in by_host['lut-refused']['msg'], by_host['lut-refused']
    assert [(h['host'], h['result']) for h in report['hosts']] == [
        ('lut-refused', 'unreachable'), ('lut-timeout', 'unreachable'), ('lut-ok', 'done')], report['hosts']
    assert report['summary']['hosts']['unreachable'] == 2 and report['summary']['hosts']['done'] == 1


def test_not_started_hosts_name_only_the_hosts_that_stopped_the_rollout(tmp_path):
    rc, output, report = rollout(tmp_path, hosts=[('lut-down', 'refused'), ('lut-a', 'healthy'),
                                                  ('lut-b', 'healthy')])
    assert rc != 0
    rows = dict((r['host'], r) for r in report['results'])
    assert rows['lut-down']['result'] == 'unreachable'
    for name in ('lut-a', 'lut-b'):
        assert rows[name]['result'] == 'not started', rows[name]
        assert rows[name]['msg'] == 'the rollout stopped after lut-down failed or could not be reached', rows[name]
    # a host left alone prints a line, not the skipped tasks of three roles
    assert output.count('skipping: [lut-b]') <= 1, output[-3000:]
