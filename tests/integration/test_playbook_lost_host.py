# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/live_update.yml when a hypervisor dies in the middle of its rollout.

Two test hypervisors from molecule/default/testhosts.sh (each its own network, PID and mount
namespaces, reached over SSH), one small VM on each; the rollout moves them onto the same build
again (select all, force). On the first, the health
gate after its VM's update is the operator's command `kill -TERM 1`: the host's init (its sshd)
ends and the kernel takes every process of the host with it, the SSH session of the task
included. The rollout must record the host as unreachable (the connection was lost), the VM whose
health gate was cut off as unhealthy, go on to the second host (live_update_max_fail_percentage
50) and update its VM, write the report, and end failed."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TESTHOSTS = os.path.join(ROOT, 'molecule', 'default', 'testhosts.sh')
# Apart from the molecule scenario's hosts and the fleet benchmark's.
HOSTS_ENV = dict(TESTHOSTS_PREFIX='lulost', TESTHOSTS_NET='10.213.95',
                 TESTHOSTS_DIR='/var/lib/liveupdate-test-lost-hosts')
TARGET = '/usr/bin/qemu-system-x86_64'
# The hosts mount /tmp, /run, /opt ... privately, and a clone of this repository (its venv, its
# staged QEMU builds) may sit there: the modules' interpreter is a venv in a directory the hosts
# share, with the modules' requirements (pure Python) copied from this venv.
SHARED = '/var/lib/liveupdate-test-lost-hosts-shared'


def run_testhosts(*args):
    proc = subprocess.run(['bash', TESTHOSTS] + list(args), capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **HOSTS_ENV), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def shared_venv():
    venv = os.path.join(SHARED, 'venv')
    # system site packages: python3-packaging, which ansible.builtin.pip imports
    subprocess.run(['/usr/bin/python3', '-m', 'venv', '--system-site-packages', venv], check=True, timeout=120)
    site = subprocess.run([os.path.join(venv, 'bin', 'python'), '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                          capture_output=True, text=True, check=True).stdout.strip()
    for dist, package in (('qemu.qmp', os.path.join('qemu', 'qmp')), ('jmespath', 'jmespath')):
        where = importlib.metadata.distribution(dist)
        shutil.copytree(str(where.locate_file(package)), os.path.join(site, package), dirs_exist_ok=True)
        info = next(f for f in where.files if f.name == 'RECORD').locate().parent
        shutil.copytree(str(info), os.path.join(site, info.name), dirs_exist_ok=True)
    return venv


@pytest.fixture
def hosts():
    shutil.rmtree(SHARED, ignore_errors=True)
    try:
        venv = shared_venv()
        yield dict(json.loads(run_testhosts('create', '2')), venv=venv)
    finally:
        run_testhosts('destroy')
        shutil.rmtree(SHARED, ignore_errors=True)


def playbook(tmp_path, inventory, playbook_path, extra):
    return subprocess.run(['ansible-playbook', '-i', str(inventory), '-e', json.dumps(extra), playbook_path],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR='1'))


def test_a_host_lost_during_its_rollout_is_a_row_and_the_next_host_is_updated(tmp_path, hosts):
    inventory = {}
    for host in hosts['hosts']:
        inventory[host['name']] = dict(
            ansible_host=host['address'], ansible_port=host['port'], ansible_user=host['user'],
            ansible_ssh_private_key_file=hosts['key'],
            ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5',
            ansible_python_interpreter=os.path.join(hosts['venv'], 'bin', 'python'), hypervisor_install_packages=False,
            hypervisor_venv=hosts['venv'], qemu_build_method='path', qemu_build_binary_path=TARGET,
            rolling_update_include=['%s-vm' % host['name']], rolling_update_select='all', rolling_update_force=True)
    lost, kept = [h['name'] for h in hosts['hosts']]
    inventory[lost].update(rolling_update_health_check='command', rolling_update_health_command=['kill', '-TERM', '1'])
    inventory_path = tmp_path / 'inventory.yml'
    inventory_path.write_text(yaml.safe_dump({'hypervisors': {'hosts': inventory}}, sort_keys=False))

    start = tmp_path / 'start.yml'
    start.write_text(yaml.safe_dump([{
        'hosts': 'hypervisors', 'gather_facts': False,
        'tasks': [{'liveupdate.qemu.vm': {'name': '{{ inventory_hostname }}-vm', 'memory': '64M', 'accel': ['tcg'],
                                          'serial': False, 'binary': TARGET}}]}]))
    proc = playbook(tmp_path, inventory_path, str(start), {})
    assert proc.returncode == 0, proc.stdout[-3000:]

    report_dir = tmp_path / 'reports'
    proc = playbook(tmp_path, inventory_path, 'liveupdate.qemu.live_update',
                    dict(live_update_report_dir=str(report_dir), live_update_serial=1,
                         live_update_max_fail_percentage=50))
    assert proc.returncode != 0 and 'the rollout did not complete' in proc.stdout, proc.stdout[-3000:]
    (path,) = glob.glob(str(report_dir / 'rollout-*.json'))
    with open(path) as handle:
        report = json.load(handle)
    rows = dict(((r['host'], r['vm']), r) for r in report['results'])
    host_row = rows[(lost, '-')]
    assert host_row['result'] == 'unreachable', host_row
    assert host_row['msg'].startswith('lost the connection to the host'), host_row
    assert rows[(lost, '%s-vm' % lost)]['result'] == 'unhealthy', report['results']
    kept_vm = rows[(kept, '%s-vm' % kept)]
    assert kept_vm['result'] == 'updated' and kept_vm['guest_pause_ms'] is not None, kept_vm
    assert [(h['host'], h['result']) for h in report['hosts']] == [(lost, 'unreachable'), (kept, 'done')]
    assert report['summary']['hosts']['unreachable'] == 1 and not report['summary']['ok']

    # The second host's VM runs the target build, once.
    info = tmp_path / 'info.yml'
    info.write_text(yaml.safe_dump([{
        'hosts': kept, 'gather_facts': False,
        'tasks': [{'liveupdate.qemu.vm_info': {'target_binary': TARGET}, 'register': 'info'},
                  {'ansible.builtin.assert': {'that': [
                      "info.vms | map(attribute='name') | list == ['%s-vm']" % kept,
                      "info.vms | selectattr('outdated') | list == []",
                      "info.vms[0].status == 'running'"]}}]}]))
    proc = playbook(tmp_path, inventory_path, str(info), {})
    assert proc.returncode == 0, proc.stdout[-3000:]
