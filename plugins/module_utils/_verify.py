# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After a live update: is the guest really going on, on the new process? QEMU's
exit codes and run state say little; the guest's vCPUs consuming CPU time, and
the operator's own health command, say more. Each check reports what it saw."""

from __future__ import annotations

import os
import subprocess

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import shorten
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for


def thread_cpu_ns(pid, tid):
    """Nanoseconds thread ``tid`` of ``pid`` has run on a CPU (schedstat), or None."""
    try:
        with open('/proc/%d/task/%d/schedstat' % (pid, tid)) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def vcpu_cpu_ns(qmp, pid):
    """Total CPU time of the vCPU threads of QEMU ``pid`` (from query-cpus-fast)."""
    times = [thread_cpu_ns(pid, cpu['thread-id']) for cpu in qmp.execute('query-cpus-fast')]
    return sum(t for t in times if t is not None)


def check_vcpus(qmp, pid, window):
    """The guest's vCPUs ran within ``window`` seconds: dict(ok, vcpu_ns)."""
    start = vcpu_cpu_ns(qmp, pid)
    try:
        now = wait_for(lambda: max(vcpu_cpu_ns(qmp, pid) - start, 0), window, 'the vCPUs to run', interval=0.01)
    except WaitTimeout:
        now = 0
    return dict(ok=now > 0, vcpu_ns=now)


def check_health_command(command, window, env):
    """The operator's command (a shell command line on this host) exits 0 within ``window``."""
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, text=True, errors='replace',
                              timeout=window, env=dict(os.environ, **env), check=False)
    except subprocess.TimeoutExpired:
        return dict(ok=False, rc=None, output='did not finish within %gs' % window)
    return dict(ok=proc.returncode == 0, rc=proc.returncode, output=shorten((proc.stdout + proc.stderr).strip(), 500))


def verify_guest(qmp, pid, was, window, health_command=None, env=None):
    """Checks of the guest on QEMU ``pid`` (session ``qmp``) after the switch; the source's
    run state was ``was``. Returns dict(ok, checks={name: {ok, ...}})."""
    status = qmp.execute('query-status')['status']
    checks = dict(run_state=dict(ok=status == was, status=status, expected=was))
    if was == 'running' and status == 'running':
        checks['vcpus'] = check_vcpus(qmp, pid, window)
    if health_command:
        checks['health_command'] = check_health_command(health_command, window, env or {})
    return dict(ok=all(c['ok'] for c in checks.values()), checks=checks)
