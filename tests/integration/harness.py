# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the integration tests: run modules through ansible-playbook,
read guest serial logs, find QEMU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

TOOLS = os.path.join(os.path.dirname(__file__), '..', '..', 'tools')
sys.path.insert(0, os.path.abspath(TOOLS))

import guestlog  # noqa: E402  (tools/guestlog.py)

from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import qemu_processes  # noqa: E402


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


def mode_of(path):
    return os.stat(path).st_mode & 0o777
