# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the integration tests: run modules through ansible-playbook,
read guest serial logs, find QEMU processes, record what runs a VM at a moment
of a playbook (``snapshot_task``; also ``python harness.py snapshot ...``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys

import yaml

TOOLS = os.path.join(os.path.dirname(__file__), '..', '..', 'tools')
sys.path.insert(0, os.path.abspath(TOOLS))

import guestlog  # noqa: E402  (tools/guestlog.py)

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import process_state, qemu_processes  # noqa: E402
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession  # noqa: E402


class PlaybookRun:
    def __init__(self, results, stdout, rc):
        self.results = results
        self.stdout = stdout
        self.rc = rc


class Ansible:
    """Runs tasks of this collection on localhost with ansible-playbook."""

    def __init__(self, workdir, runtime_dir):
        self.workdir = str(workdir)
        self.runtime_dir = runtime_dir
        self.count = 0

    def play(self, tasks, check=False, diff=False, module_defaults=True):
        """Run ``tasks`` (task dicts) in one playbook; every result is registered
        and returned, failed ones included."""
        self.count += 1
        out = os.path.join(self.workdir, 'results-%d.json' % self.count)
        registered = []
        body = []
        for index, task in enumerate(tasks):
            task = dict(task)
            task.setdefault('name', 'task %d' % index)
            task['register'] = 'r%d' % index
            task['ignore_errors'] = True
            registered.append('r%d' % index)
            body.append(task)
        body.append({'name': 'save results', 'ansible.builtin.copy': {
            'content': '{{ [%s] | to_json }}' % ', '.join(registered), 'dest': out, 'mode': '0600'},
            'check_mode': False, 'diff': False})
        play = {'name': 'test', 'hosts': 'localhost', 'gather_facts': False, 'tasks': body}
        if module_defaults:
            play['module_defaults'] = {'group/liveupdate.qemu.qemu': {'runtime_dir': self.runtime_dir}}
        path = os.path.join(self.workdir, 'play-%d.yml' % self.count)
        with open(path, 'w') as handle:
            yaml.safe_dump([play], handle, sort_keys=False)
        cmd = ['ansible-playbook', '-i', 'localhost,', '-c', 'local', '-e',
               'ansible_python_interpreter=%s' % sys.executable, path]
        if check:
            cmd.append('--check')
        if diff:
            cmd.append('--diff')
        env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='0')
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
        if not os.path.exists(out):
            raise AssertionError('ansible-playbook did not finish (rc %d):\n%s\n%s' % (proc.returncode, proc.stdout, proc.stderr))
        with open(out) as handle:
            results = json.load(handle)
        os.unlink(out)
        return PlaybookRun(results, proc.stdout, proc.returncode)

    def module(self, module, args, check=False, diff=False):
        """Run one module task; return its registered result."""
        return self.play([{'liveupdate.qemu.%s' % module: args}], check=check, diff=diff).results[0]

    def modules(self, module, arg_list, check=False):
        """Run the same module once per argument dict, in one playbook."""
        return self.play([{'liveupdate.qemu.%s' % module: args} for args in arg_list], check=check).results


class GuestLog:
    """A guest's serial log (tools/guestlog.py): summaries and waiting for a condition."""

    def __init__(self, path):
        self.path = path

    def wait(self, predicate, timeout):
        return guestlog.wait_for(self.path, predicate, timeout)

    def summary(self):
        return guestlog.parse_file(self.path)


def guest_log(path):
    return GuestLog(path)


def qemu_pids_under(text):
    """Pids of QEMU processes whose command line contains ``text``."""
    return [proc.pid for proc in qemu_processes() if any(text in arg for arg in proc.argv)]


def disk_records(image, last):
    """Records 1..last as the guest wrote them (read through a raw copy of the live image)."""
    raw = image + '.raw'
    subprocess.run(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'raw', image, raw], check=True)
    try:
        with open(raw, 'rb') as handle:
            data = handle.read((last + 1) * 512)
    finally:
        os.unlink(raw)
    return [data[n * 512:(n + 1) * 512].decode('ascii', 'replace').split()[:3] for n in range(1, last + 1)]


def mode_of(path):
    return os.stat(path).st_mode & 0o777


def socket_peer(path):
    """The pid listening on unix socket ``path`` (SO_PEERCRED: known even when that process
    is frozen and would never greet), or None when nobody listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return struct.unpack('3i', sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i')))[0]
    except OSError:
        return None
    finally:
        sock.close()


def vm_snapshot(memory_file, vm_dir, timeout=3.0):
    """What a VM of the vm module looks like now, without waiting on a frozen (SIGSTOP)
    process: the QEMUs that name its memory file (pid, state letter), qemu.pid, the files of
    its runtime directory ``vm_dir``, and who answers on its qmp.sock (run state and migration
    capabilities, when that process is not frozen)."""
    procs = [dict(pid=p.pid, state=process_state(p.pid)) for p in qemu_processes() if p.uses_file(memory_file)]
    snap = dict(procs=procs, memory_file=os.path.exists(memory_file), files=None, pidfile=None, qmp=None)
    if os.path.isdir(vm_dir):
        snap['files'] = sorted(os.listdir(vm_dir))
    try:
        with open(os.path.join(vm_dir, 'qemu.pid')) as handle:
            snap['pidfile'] = int(handle.read().strip())
    except (OSError, ValueError):
        pass
    qmp_socket = os.path.join(vm_dir, 'qmp.sock')
    peer = socket_peer(qmp_socket) if os.path.exists(qmp_socket) else None
    if peer is not None:
        snap['qmp'] = dict(peer=peer, frozen=process_state(peer) == 'T')
        if not snap['qmp']['frozen']:
            try:
                with QMPSession(qmp_socket, timeout) as qmp:
                    snap['qmp'].update(
                        peer=qmp.peer_pid, status=qmp.execute('query-status')['status'],
                        capabilities=dict((c['capability'], c['state'])
                                          for c in qmp.execute('query-migrate-capabilities')))
            except QMPError as exc:
                snap['qmp']['error'] = str(exc)
    locks = os.path.join(os.path.dirname(vm_dir), '.locks')
    key = os.path.join(vm_dir, 'qmp.sock').strip('/').replace('/', '%')
    snap['journal'] = os.path.exists(os.path.join(locks, key + '.journal'))
    return snap


def thaw(memory_file):
    """SIGCONT every frozen QEMU that names ``memory_file``; returns their pids."""
    thawed = []
    for proc in qemu_processes():
        if proc.uses_file(memory_file) and process_state(proc.pid) == 'T':
            os.kill(proc.pid, signal.SIGCONT)
            thawed.append(proc.pid)
    return thawed


def snapshot_task(memory_file, vm_dir, name='snapshot'):
    """A playbook task that records vm_snapshot() at that moment of a play (its stdout: JSON)."""
    return {'name': name, 'ansible.builtin.command': {'argv': [sys.executable, os.path.abspath(__file__), 'snapshot',
                                                               memory_file, vm_dir]}}


def snapshot_thaw_task(memory_file, vm_dir, name='snapshot'):
    """As snapshot_task, and then thaw() the VM's frozen QEMUs (one task instead of two)."""
    task = snapshot_task(memory_file, vm_dir, name)
    task['ansible.builtin.command']['argv'].append('--thaw')
    return task


if __name__ == '__main__':
    # python harness.py snapshot MEMORY_FILE VM_DIR [--thaw]: for snapshot_task
    SNAPSHOT = vm_snapshot(sys.argv[2], sys.argv[3])
    if sys.argv[4:] == ['--thaw']:
        SNAPSHOT['thawed'] = thaw(sys.argv[2])
    print(json.dumps(SNAPSHOT))
