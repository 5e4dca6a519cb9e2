# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the guest's state crosses from the source to the destination: one class
per transfer mode. The engine's other steps (preflight, spawn, switch, finish)
do not depend on the mode; a new mode is a new class here and a line in
``choose_transfer``."""

from __future__ import annotations

import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import MIGRATION_END, set_capabilities
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPError
from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import wait_for


class Transfer:
    """A migration over a unix socket beside the destination's QMP socket, with the
    migration capabilities ``capabilities`` set on both sides."""

    mode = None
    capabilities = {}
    full_copy = False

    def source_capabilities(self, before):
        """What the source had of the capabilities this mode sets (to restore them)."""
        return dict((name, before[name]) for name in self.capabilities)

    def run(self, src, dest, dest_qmp_socket, timeout, dest_output, started=None):
        """Migrate; returns when the destination has all of the guest's state, else raises.
        ``dest_output()`` is what the destination wrote, for the error message; ``started()``
        is called once the migration is under way."""
        set_capabilities(dest, self.capabilities)
        uri = 'unix:%s.migrate' % dest_qmp_socket
        dest.execute('migrate-incoming', {'uri': uri})
        set_capabilities(src, self.capabilities)
        src.drain_events()
        dest.drain_events()
        src.execute('migrate', {'uri': uri})
        if started:
            started()
        try:
            event = dest.wait_event('MIGRATION', timeout, lambda e: e['data']['status'] in MIGRATION_END)
        except QMPError:
            src.execute('migrate_cancel')
            raise
        if event['data']['status'] != 'completed':
            time.sleep(0.1)  # let the destination write why
            raise UpdateFailed('the destination reports the migration %s: %s'
                               % (event['data']['status'], dest_output() or 'no message'),
                               step='migrate', rolled_back=True)

    @staticmethod
    def temporaries(dest_qmp_socket):
        """Files this mode creates beside the destination (removed on rollback)."""
        return [dest_qmp_socket + '.migrate']


class IgnoreShared(Transfer):
    """Guest RAM stays in its shared memory file; only device state moves."""

    mode = 'x-ignore-shared'
    capabilities = {'events': True, 'x-ignore-shared': True}


class FullCopy(Transfer):
    """Guest RAM is copied (allow_full_copy): for VMs whose RAM is not a shared file."""

    mode = 'full-copy'
    capabilities = {'events': True}
    full_copy = True


def cancel_migration(src, timeout):
    """Cancel a migration of ``src`` that is under way and wait until it has ended."""
    if src.execute('query-migrate').get('status', 'none') not in MIGRATION_END + ('none',):
        src.execute('migrate_cancel')
        wait_for(lambda: src.execute('query-migrate').get('status') in MIGRATION_END, timeout,
                 'the cancelled migration to end', interval=0.01)


def choose_transfer(full_copy):
    return FullCopy() if full_copy else IgnoreShared()
