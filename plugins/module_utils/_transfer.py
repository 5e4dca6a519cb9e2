# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the guest's state crosses from the source to the destination: one class
per transfer mode. The engine's other steps (preflight, spawn, switch, finish)
do not depend on the mode; a new mode is a new class here and a line in
``choose_transfer``."""

from __future__ import annotations

import json
import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import MIGRATION_END, set_capabilities
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import wait_for


def _unix_channel(kind, path):
    return {'channel-type': kind, 'addr': {'transport': 'socket', 'type': 'unix', 'path': path}}


class Transfer:
    """A migration over a unix socket beside the destination's QMP socket, with the
    migration capabilities ``capabilities`` set on both sides. The destination starts with
    ``-S -incoming defer`` and its monitor up (``monitor_before_migrate``)."""

    mode = None
    capabilities = {}
    full_copy = False
    monitor_before_migrate = True

    def source_capabilities(self, before):
        """What the source had of the capabilities this mode sets (to restore them)."""
        return dict((name, before[name]) for name in self.capabilities)

    @staticmethod
    def incoming_options(dest_qmp_socket):
        """The destination's -incoming options."""
        return [('incoming', 'defer')]

    @staticmethod
    def ready_path(dest_qmp_socket):
        """The file whose existence says the destination has started far enough (spawn waits for it)."""
        return dest_qmp_socket

    def run(self, src, spawned, dest_qmp_socket, timeout, started=None):
        """Migrate; returns when the destination has all of the guest's state, else raises.
        ``started()`` is called once the migration is under way."""
        dest = spawned.qmp
        set_capabilities(dest, self.capabilities)
        uri = 'unix:%s.migrate' % dest_qmp_socket
        dest.execute('migrate-incoming', {'uri': uri})
        set_capabilities(src, self.capabilities)
        src.drain_events()
        dest.drain_events()
        src.execute('migrate', {'uri': uri})
        if started:
            started()
        self.wait_completed(src, spawned, timeout)

    @staticmethod
    def wait_completed(src, spawned, timeout):
        try:
            event = spawned.qmp.wait_event('MIGRATION', timeout, lambda e: e['data']['status'] in MIGRATION_END)
        except QMPError:
            src.execute('migrate_cancel')
            raise
        if event['data']['status'] != 'completed':
            time.sleep(0.1)  # let the destination write why
            raise UpdateFailed('the destination reports the migration %s: %s'
                               % (event['data']['status'], spawned.output() or 'no message'),
                               step='migrate', rolled_back=True)

    @staticmethod
    def temporaries(dest_qmp_socket):
        """Files this mode creates beside the destination (removed on rollback)."""
        return [dest_qmp_socket + '.migrate']

    def restore_source(self, src, vm):
        """Give the source back what this mode changed (its capabilities are restored apart)."""


class IgnoreShared(Transfer):
    """Guest RAM stays in its named shared memory file; only device state moves."""

    mode = 'x-ignore-shared'
    capabilities = {'events': True, 'x-ignore-shared': True}


class FullCopy(Transfer):
    """Guest RAM is copied (allow_full_copy): for VMs whose RAM is not a shared file."""

    mode = 'full-copy'
    capabilities = {'events': True}
    full_copy = True


class CprTransfer(Transfer):
    """QEMU's own CheckPoint-Restart (>= 10.0): the source hands the file descriptors of its RAM
    (memfd or file, share=on, aux-ram-share=on) over a second channel, so RAM stays mapped and
    only device state moves. The destination waits on that channel before it even starts its
    monitor: the source's ``migrate`` comes first (QEMU's docs/devel/migration/CPR.rst), and the
    main channel is deferred until the engine has attached to the destination's consoles."""

    mode = 'cpr-transfer'
    capabilities = {'events': True}
    monitor_before_migrate = False

    @staticmethod
    def incoming_options(dest_qmp_socket):
        return [('incoming', 'defer'),
                ('incoming', json.dumps(_unix_channel('cpr', dest_qmp_socket + '.cpr'), sort_keys=True))]

    @staticmethod
    def ready_path(dest_qmp_socket):
        return dest_qmp_socket + '.cpr'

    def run(self, src, spawned, dest_qmp_socket, timeout, started=None):
        main = _unix_channel('main', dest_qmp_socket + '.migrate')
        set_capabilities(src, self.capabilities)
        src.execute('migrate-set-parameters', {'mode': 'cpr-transfer'})
        src.drain_events()
        # The source sends its RAM's fds, then waits (in 'setup', the guest running) until the
        # destination accepts the main channel.
        src.execute('migrate', {'channels': [main, _unix_channel('cpr', dest_qmp_socket + '.cpr')]})
        if started:
            started()
        spawned.connect(timeout)
        dest = spawned.qmp
        set_capabilities(dest, self.capabilities)
        dest.drain_events()
        dest.execute('migrate-incoming', {'channels': [main]})
        self.wait_completed(src, spawned, timeout)

    @staticmethod
    def temporaries(dest_qmp_socket):
        return [dest_qmp_socket + '.migrate', dest_qmp_socket + '.cpr']

    def restore_source(self, src, vm):
        if vm.get('migration_mode') not in (None, self.mode):
            src.execute('migrate-set-parameters', {'mode': vm['migration_mode']})


MODES = dict((cls.mode, cls) for cls in (CprTransfer, IgnoreShared, FullCopy))


def cancel_migration(src, timeout):
    """Cancel a migration of ``src`` that is under way and wait until it has ended."""
    if src.execute('query-migrate').get('status', 'none') not in MIGRATION_END + ('none',):
        src.execute('migrate_cancel')
        wait_for(lambda: src.execute('query-migrate').get('status') in MIGRATION_END, timeout,
                 'the cancelled migration to end', interval=0.01)


def transfer_for(mode):
    """The Transfer of a mode of _eligibility.TRANSFER_MODES."""
    return MODES[mode]()
