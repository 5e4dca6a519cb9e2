# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of test_cross_version.py, for tasks between the tasks of one playbook (a playbook
run costs seconds here, a lookup on the controller a fraction of one):

- ``snapshot``: what runs a VM of the vm module now, its RAM a memfd or a file: its QEMUs are
  found by QMP socket name (a destination's is PATH.lu-TOKEN: memfd RAM has no file to find
  them by), with the migration ``mode`` parameter that cpr-transfer sets on the source;
- ``guest``: wait until a booted test guest has gone on (heartbeats, a memory check) and
  summarise its serial log.

``python cross_version_helpers.py snapshot VM_DIR [--thaw]`` and ``... guest LOG AFTER TIMEOUT``
print JSON; snapshot_task() and guest_task() make the tasks."""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import guestlog, process_state, socket_peer  # noqa: E402

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path  # noqa: E402
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import qemu_processes  # noqa: E402
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession  # noqa: E402

# Files a live update creates beside the VM's own and must not leave behind.
TEMPORARY_MARKS = ('.lu-', '.cpr', '.migrate')


def qemus_of(qmp_socket):
    """The QEMU processes whose QMP socket is ``qmp_socket`` or a temporary twin of it."""
    return [p for p in qemu_processes() if qmp_socket in [canonical_path(s) for s in p.cmdline.qmp_sockets()]]


def temporaries(names):
    return sorted(n for n in names or [] if any(mark in n for mark in TEMPORARY_MARKS))


def qmp_state(qmp_socket, timeout=3.0):
    """Who answers on ``qmp_socket`` and what it says (run state, capabilities, migration
    mode), or None when nobody listens; a frozen process is not asked."""
    peer = socket_peer(qmp_socket) if os.path.exists(qmp_socket) else None
    if peer is None:
        return None
    state = dict(peer=peer, frozen=process_state(peer) == 'T')
    if not state['frozen']:
        try:
            with QMPSession(qmp_socket, timeout) as qmp:
                state.update(
                    peer=qmp.peer_pid, status=qmp.execute('query-status')['status'],
                    mode=qmp.execute('query-migrate-parameters').get('mode'),
                    migration=qmp.execute('query-migrate').get('status', 'none'),
                    capabilities=dict((c['capability'], c['state'])
                                      for c in qmp.execute('query-migrate-capabilities')))
        except QMPError as exc:
            state['error'] = str(exc)
    return state


def snapshot(vm_dir):
    """The VM of the vm module in runtime directory ``vm_dir`` now: its QEMUs (pid, state
    letter), qemu.pid, the files of ``vm_dir``, who answers on qmp.sock and whether the
    journal of an unfinished update is there."""
    qmp_socket = os.path.join(vm_dir, 'qmp.sock')
    snap = dict(procs=[dict(pid=p.pid, state=process_state(p.pid)) for p in qemus_of(qmp_socket)],
                files=sorted(os.listdir(vm_dir)) if os.path.isdir(vm_dir) else None, pidfile=None)
    try:
        with open(os.path.join(vm_dir, 'qemu.pid')) as handle:
            snap['pidfile'] = int(handle.read().strip())
    except (OSError, ValueError):
        pass
    snap['qmp'] = qmp_state(qmp_socket)
    key = qmp_socket.strip('/').replace('/', '%')
    snap['journal'] = os.path.exists(os.path.join(os.path.dirname(vm_dir), '.locks', key + '.journal'))
    return snap


def thaw(vm_dir):
    """SIGCONT every frozen QEMU of the VM in ``vm_dir``; returns their pids."""
    thawed = []
    for proc in qemus_of(os.path.join(vm_dir, 'qmp.sock')):
        if process_state(proc.pid) == 'T':
            os.kill(proc.pid, signal.SIGCONT)
            thawed.append(proc.pid)
    return thawed


def guest(log, after, timeout):
    """Wait (up to ``timeout`` s) until the guest whose serial log is ``log`` has printed
    ``after`` more heartbeats and verified its memory once more than now; its summary
    (guestlog's as_dict) with ``went_on``: whether it did."""
    now = guestlog.parse_file(log)
    last, checks = now.last_counter or 0, now.mem_ok
    try:
        summary = guestlog.wait_for(log, lambda s: (s.last_counter or 0) >= last + after and s.mem_ok > checks,
                                    timeout)
        went_on = True
    except TimeoutError as exc:
        summary = exc.summary
        went_on = False
    return dict(summary.as_dict(), went_on=went_on, since=last)


def _lookup_task(name, argv):
    for arg in argv:
        assert not set(arg) & set('\'" \\{}'), arg  # (inside a Jinja string)
    command = ' '.join([sys.executable, os.path.abspath(__file__)] + argv)
    return {'name': name, 'ansible.builtin.debug': {'msg': "{{ lookup('pipe', '%s') }}" % command}}


def snapshot_task(vm_dir, thaw_after=False):
    """A task that records snapshot() at that moment of a play (on the controller), then
    with ``thaw_after`` thaws the VM's frozen QEMUs. See task_output()."""
    return _lookup_task('snapshot', ['snapshot', vm_dir] + (['--thaw'] if thaw_after else []))


def guest_task(log, after=20, timeout=60):
    """A task that waits for the guest to go on (guest()) and records its summary."""
    return _lookup_task('guest', ['guest', log, str(after), str(timeout)])


def task_output(task, result):
    """What a snapshot_task or guest_task recorded (a dict); other results as they are."""
    if task.get('name') in ('snapshot', 'guest') and 'msg' in result and not result.get('failed'):
        return result['msg'] if isinstance(result['msg'], dict) else json.loads(result['msg'])
    return result


def settled_problems(snap, status='running', caps=None, mode='normal'):
    """What keeps ``snap`` from "exactly one QEMU runs the VM, under the canonical names,
    with the operator's capabilities ``caps`` and migration mode ``mode``, nothing left
    over"; [] when that holds."""
    procs = snap['procs']
    if len(procs) != 1:
        return ['%d QEMU processes serve the VM: %s' % (len(procs), procs)]
    pid = procs[0]['pid']
    found = []
    if procs[0]['state'] in ('T', 'Z', None):
        found.append('QEMU pid %d is in state %s' % (pid, procs[0]['state']))
    if snap['pidfile'] != pid:
        found.append('qemu.pid holds %s, not %d' % (snap['pidfile'], pid))
    qmp = snap['qmp'] or {}
    if qmp.get('peer') != pid or 'status' not in qmp:
        found.append('qmp.sock does not answer as pid %d: %s' % (pid, qmp))
    else:
        if qmp['status'] != status:
            found.append('pid %d is %s, not %s' % (pid, qmp['status'], status))
        have = dict((name, qmp['capabilities'].get(name)) for name in (caps or {}))
        if have != (caps or {}):
            found.append('migration capabilities %s, the operator had %s' % (have, caps))
        if qmp['mode'] != mode:
            found.append('migration mode parameter is %s, not %s' % (qmp['mode'], mode))
        if qmp['migration'] not in ('none', 'completed', 'failed', 'cancelled'):
            found.append('a migration is still %s' % qmp['migration'])
    if temporaries(snap['files']):
        found.append('temporaries left in the runtime directory: %s' % temporaries(snap['files']))
    if snap['journal']:
        found.append('the journal of an unfinished update is left')
    return found


if __name__ == '__main__':
    if sys.argv[1] == 'snapshot':  # snapshot VM_DIR [--thaw]
        OUT = snapshot(sys.argv[2])
        if sys.argv[3:] == ['--thaw']:
            OUT['thawed'] = thaw(sys.argv[2])
    else:  # guest LOG AFTER TIMEOUT
        OUT = guest(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    print(json.dumps(OUT))
