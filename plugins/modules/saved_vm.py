#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: saved_vm
short_description: Save a running QEMU VM in milliseconds and restore it later, its RAM left in place
version_added: 0.2.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - O(state=saved) writes the VM's device state (about 0.5 MB whatever its RAM) to a state file and ends its QEMU.
    Its RAM stays in its shared memory file (C(memory-backend-file), C(share=on)) - the migration runs with
    C(x-ignore-shared) on, and on QEMU 8.2 or later in QEMU's own C(cpr-reboot) migration mode.
  - O(state=running) starts a new QEMU with the VM's own command line (machine type pinned) on the same memory
    file and loads the state, and the guest goes on where it stopped, without a boot. The saved state is then removed,
    because the guest's RAM has moved on from it.
  - O(state=absent) discards a saved VM - its state and its memory file. A running VM is not touched; only an
    outdated saved state of it is removed.
  - Refused with nothing changed - a VM that is neither running nor paused, is migrating or has C(postcopy-ram)
    on, a VM whose RAM is not in named shared memory files, a libvirt domain, disks in C(-snapshot) mode, consoles
    on stdio, taps or other resources passed by file descriptor; a restore whose memory
    file is missing or was written after the save (size or modification time differ), whose state file does not
    match its record, whose VM was reconfigured since, whose memory file on persistent storage was not flushed
    before the host restarted (O(sync=never)), that already runs (a QEMU maps its memory file, or has its
    name), or onto a binary without C(x-ignore-shared), the machine type, a device of the VM or (for a state saved
    with C(cpr-reboot)) that mode.
  - For a host reboot the memory file must survive it, in O(memory_dir) on persistent storage (a copy of the
    touched RAM), or on a DAX/pmem device. See C(docs/save-restore.md) of the collection.
options:
  name:
    description:
      - The VM's name; its saved state is in O(save_dir)C(/<name>).
      - A running VM is found under O(runtime_dir) (launched by M(liveupdate.qemu.vm)), else as the QEMU with
        C(-name <name>), unless O(socket) or O(pid) says which QEMU it is.
    type: str
    required: true
  socket:
    description: The QMP unix socket of the QEMU to save (a VM not launched by this collection).
    type: path
  pid:
    description: The process id of the QEMU to save.
    type: int
  state:
    description: C(saved), C(running) (restored from its save if it has one) or C(absent) (save discarded).
    type: str
    choices: [saved, running, absent]
    required: true
  save_dir:
    description: Where saved VMs are kept, a directory per VM.
    type: path
    default: /var/lib/liveupdate-qemu/saved
  memory_dir:
    description:
      - With O(state=saved), move the memory file into this directory after the save (a rename on the same
        filesystem, else a sparse copy of the touched RAM), for example persistent storage before a host reboot.
        The restore moves it back to where the VM had it.
    type: path
  sync:
    description:
      - Whether the save flushes the memory file to its storage (C(fsync)) before it reports success. Pages the
        guest wrote stay dirty in the host's page cache after the QEMU ends, and a host crash before the kernel
        writes them back would leave a state file newer than the RAM on disk.
      - C(auto) syncs memory files that are not on tmpfs (which a reboot empties anyway).
    type: str
    choices: [auto, always, never]
    default: auto
  binary:
    description: With O(state=running), the QEMU binary to restore the VM onto; by default the one it was saved from.
    type: str
  migration_timeout:
    description: Seconds the save or the load of the state may take.
    type: float
    default: 60
  lock_timeout:
    description: Seconds to wait for a live update, save or stop of the same VM to end; 0 fails at once.
    type: float
    default: 0
  shutdown_timeout:
    description: Seconds each step of the shutdown ladder (QMP quit, SIGTERM, SIGKILL) waits after the save.
    type: float
    default: 10
  verify_timeout:
    description: After a restore, seconds within which the guest's vCPUs must run and O(health_command) succeed.
    type: float
    default: 5
  health_command:
    description:
      - A shell command run on the host after a restore; the module fails unless it exits 0 within
        O(verify_timeout). Its environment has C(LIVEUPDATE_VM), C(LIVEUPDATE_QMP_SOCKET) and C(LIVEUPDATE_PID).
    type: str
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.attributes
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    details: Runs every check of the save or restore and says what would change.
  diff_mode:
    details: The state before and after (running, saved, absent).
seealso:
  - module: liveupdate.qemu.vm
  - module: liveupdate.qemu.live_update
'''

EXAMPLES = r'''
- name: Save VM web1 (its RAM stays in its memory file on tmpfs)
  liveupdate.qemu.saved_vm:
    name: web1
    state: saved

- name: Restore it; the guest goes on where it stopped
  liveupdate.qemu.saved_vm:
    name: web1
    state: running
  register: restored

- name: Before a host reboot, keep the memory file on disk
  liveupdate.qemu.saved_vm:
    name: web1
    state: saved
    memory_dir: /var/lib/liveupdate-qemu/memory

- name: Save a VM that another tool started, found by its QMP socket
  liveupdate.qemu.saved_vm:
    name: db1
    socket: /run/vms/db1/qmp.sock
    state: saved
'''

RETURN = r'''
vm:
  description: The VM after the task - C(name), C(pid) (C(null) once saved), C(qmp_socket), C(status).
  returned: when a VM was saved, restored or found running
  type: dict
saved:
  description:
    - The saved VM - C(name), C(dir), C(state_file), C(state_bytes), C(memory_file) (where the VM has it),
      C(stored_memory_file) (where it is now), C(binary), C(version), C(machine), C(transfer) (C(cpr-reboot) or
      C(x-ignore-shared)), C(saved_at) and C(synced) (the memory file was flushed to its storage).
  returned: when there is a saved state
  type: dict
timings:
  description:
    - Milliseconds - C(save_ms) (guest stopped to state written), C(quit_ms), C(move_ms), C(sync_ms),
      C(spawn_ms) (new QEMU started to its QMP connected), C(incoming_ms) (state loaded), C(load_ms) (the two),
      C(restore_ms) (new QEMU started to guest running), C(verify_ms). Only the steps that ran.
  returned: always
  type: dict
guest_pause_ms:
  description: After a restore, milliseconds from the guest's stop at the save to its resumption.
  returned: after a restore of a VM that was running
  type: float
stopped_at:
  description: After a restore, when the guest stopped at the save (QEMU's STOP event, seconds since the epoch).
  returned: after a restore
  type: float
resumed_at:
  description: After a restore, when the guest resumed (QEMU's RESUME event, seconds since the epoch).
  returned: after a restore of a VM that was running
  type: float
verified:
  description: After a restore, the checks of the guest (C(ok) and C(checks)), as M(liveupdate.qemu.live_update) has them.
  returned: after a restore
  type: dict
memory_removed:
  description: With O(state=absent), whether the memory file went too (not when the VM runs).
  returned: when a saved state was discarded
  type: bool
'''

import signal

from ansible_collections.liveupdate.qemu.plugins.module_utils._module import LiveUpdateModule
from ansible_collections.liveupdate.qemu.plugins.module_utils._saved import DEFAULT_SAVE_DIR
from ansible_collections.liveupdate.qemu.plugins.module_utils._saved_vm import SavedVmManager


def main():
    module = LiveUpdateModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            socket=dict(type='path'),
            pid=dict(type='int'),
            state=dict(type='str', required=True, choices=['saved', 'running', 'absent']),
            save_dir=dict(type='path', default=DEFAULT_SAVE_DIR),
            memory_dir=dict(type='path'),
            sync=dict(type='str', default='auto', choices=['auto', 'always', 'never']),
            binary=dict(type='str'),
            migration_timeout=dict(type='float', default=60),
            lock_timeout=dict(type='float', default=0),
            shutdown_timeout=dict(type='float', default=10),
            verify_timeout=dict(type='float', default=5),
            health_command=dict(type='str'),
        ),
        mutually_exclusive=[('socket', 'pid')],
        supports_check_mode=True)
    # A controller that goes away mid-save must not leave the VM half-saved.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    module.run(lambda: SavedVmManager(module.params, module.check_mode).run())


if __name__ == '__main__':
    main()
