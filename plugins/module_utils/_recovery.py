# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Settling a VM that an interrupted live update (its module process killed)
left on two QEMU processes, so that exactly one runs the guest again."""

from __future__ import annotations

import os

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import canonical_path, is_on
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import kill_and_wait, qemu_processes, remove_files
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import (
    memory_backends, migration_mode, restore_capabilities,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError, QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._sockets import thaw
from ansible_collections.liveupdate.qemu.plugins.module_utils._takeover import TakeOver, temporaries
from ansible_collections.liveupdate.qemu.plugins.module_utils._transfer import cancel_migration

# Run states of a destination that has not run the guest (None: it could not be asked).
NEVER_RAN = ('inmigrate', 'paused', 'prelaunch')


def maps_shared(proc, paths):
    """True when ``proc``'s command line maps one of ``paths`` as a share=on memory backend
    (a clone that maps a file share=off has RAM of its own)."""
    for backend in proc.cmdline.memory_backends():
        if backend.get('mem-path') in paths and is_on(backend.get('share', 'off')):
            return True
    return False


def serves_twin(proc, qmp_socket):
    """True when ``proc``'s QMP socket is a temporary twin of ``qmp_socket``: the destination of
    an update of that VM (the one way to tell for memfd RAM, which has no path)."""
    return any(path != qmp_socket and canonical_path(path) == qmp_socket for path in proc.cmdline.qmp_sockets())


def status_of(proc, skip_socket, timeout):
    """Run state of another QEMU over any QMP socket its command line names, or None."""
    for path in proc.cmdline.qmp_sockets():
        for candidate in (path, canonical_path(path)):
            if candidate == skip_socket or not os.path.exists(candidate):
                continue
            try:
                with QMPSession(candidate, timeout) as qmp:
                    if qmp.peer_pid == proc.pid:
                        return qmp.execute('query-status')['status']
            except QMPError:
                continue
    return None


def _discard(proc):
    """End a QEMU that must not run the guest, and remove its temporary files."""
    kill_and_wait(proc.pid)
    remove_files(temporaries(proc))


def recover(src, source, switch, journal, params, check_mode):
    """Settle what an interrupted update left: other QEMUs on ``source``'s memory, names
    still on temporaries, capabilities still as the update set them (``journal``: what
    that update recorded, or None). Returns dict(recovered=[...]) and, when that completed
    an interrupted update (nothing more to do), its take-over result and msg."""
    if journal is not None and not _journal_of(journal, source.proc):
        journal = None  # an update of another process that ran this VM's name: over with it
    try:
        return _recover(src, source, switch, journal, params, check_mode)
    finally:
        if journal and not check_mode:
            thaw(journal.get('frozen'))  # the stream peers that update stopped (see _live_update.spawn)


def _recover(src, source, switch, journal, params, check_mode):
    saved_caps = journal['capabilities'] if journal else None
    outcome = _settle_others(src, source, switch, saved_caps, params, check_mode)
    if not check_mode and source.paths and 'msg' not in outcome:
        # vm.json not rewritten by an update that took the VM over (a full filesystem, a kill).
        source.paths.record_argv(source.proc.argv)
    if journal is None or check_mode or 'msg' in outcome:
        return outcome
    if source.proc.pid != journal['source_pid']:
        outcome.update(_adopt_destination(src, source, switch, journal))
        return outcome
    _settle_source(src, source, switch, journal, params['timeout'])
    restored = restore_capabilities(src, saved_caps)
    if restored:
        outcome['capabilities_restored'] = restored
    return outcome


def _journal_of(journal, proc):
    """Whether ``journal`` is of an update of ``proc``: as its source, or as its destination
    (its command line names the update's temporary files)."""
    return proc.pid == journal.get('source_pid') or any(proc.uses_file(path) for path in journal['temporaries'])


def _settle_others(src, source, switch, saved_caps, params, check_mode):
    backends = memory_backends(src, source.proc.pid)
    memory = set(b['path'] for b in backends if b['share'] and b['path'])
    others = [p for p in qemu_processes()
              if p.pid != source.proc.pid and (maps_shared(p, memory) or serves_twin(p, source.qmp_socket))]
    outcome = dict(recovered=[])
    if not others:
        return outcome
    mine = src.execute('query-status')['status']
    for other in others:
        status = status_of(other, source.qmp_socket, params['timeout'])
        outcome['recovered'].append(dict(pid=other.pid, status=status))
        if check_mode:
            continue
        if mine != 'postmigrate' and status in NEVER_RAN + ('postmigrate', None):
            # A destination that never ran the guest (the source still has it), or a
            # source the switch left behind: neither may run again.
            _discard(other)
        elif mine == 'postmigrate' and status in NEVER_RAN:
            # Migrated, never resumed on the destination: the guest goes back to the source.
            _discard(other)
            switch.resume_source(src, other.pid)
        elif mine == 'postmigrate' and status == 'running':
            # The switch happened: complete it, the destination keeps the guest.
            switch.commit()
            takeover = TakeOver.after_interruption(src, source, other, backends, saved_caps)
            outcome.update(takeover.run(src, params['timeout'], params['shutdown_timeout']), changed=True,
                           msg='completed an interrupted live update: VM %s runs on pid %d' % (source.name, other.pid))
            return outcome
        else:
            raise UpdateFailed('VM %s: QEMU pid %d (%s) and pid %d (%s) both map its memory; settle them first'
                               % (source.name, source.proc.pid, mine, other.pid, status),
                               step='recover', rolled_back=True)
    return outcome


def _settle_source(src, source, switch, journal, timeout):
    """The source of an interrupted update runs alone (its destination is gone): remove the
    destination's files, and resume the guest unless the switch had been committed."""
    remove_files(journal['temporaries'])  # PATH.lu-TOKEN names and its migration socket
    cancel_migration(src, timeout)
    if journal.get('migration_mode') and migration_mode(src) != journal['migration_mode']:
        src.execute('migrate-set-parameters', {'mode': journal['migration_mode']})
    if src.execute('query-status')['status'] != 'postmigrate':
        return
    if journal['phase'] == 'switching':
        raise UpdateFailed('VM %s: the destination of an interrupted live update died after it may have run the '
                           'guest; the source (pid %d) must not run it again: the guest is lost, stop the VM and '
                           'start it again' % (source.name, source.proc.pid), step='recover', rolled_back=False)
    if journal.get('was') == 'running':
        switch.resume_source(src, journal.get('dest_pid'))


def _adopt_destination(src, source, switch, journal):
    """The process that runs the guest is the destination of an interrupted update, alone on
    its memory (the source is gone): give it the canonical names, and resume the guest when
    it has the whole guest and the guest ran before."""
    status = src.execute('query-status')['status']
    incoming = src.execute('query-migrate').get('status')
    if status == 'inmigrate' or (status != 'running' and incoming != 'completed'):
        raise UpdateFailed('VM %s: the source of an interrupted live update is gone and its destination, pid %d, '
                           'never received the whole guest (%s, migration %s): the guest is lost; stop the VM '
                           'and start it again' % (source.name, source.proc.pid, status, incoming),
                           step='recover', rolled_back=False)
    takeover = TakeOver(source, source.proc.pid, source.proc.argv, status, [tuple(r) for r in journal['renames']],
                        journal.get('stray'), [], [], [tuple(f) for f in journal['forwards']],
                        journal['capabilities'])
    takeover.move_names()
    # Alone on the memory, with the whole guest: no other process can run it again.
    resumed = status != 'running' and journal.get('was') == 'running'
    if resumed:
        switch.commit()
        src.execute('cont')
        takeover.dest_status = 'running'
    return dict(changed=True, new=takeover.configure(src), resumed=resumed,
                msg='completed an interrupted live update: VM %s runs on pid %d%s'
                    % (source.name, source.proc.pid, ', resumed' if resumed else ''))
