#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: live_update
short_description: Move a running VM onto a new QEMU process started from another binary
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Migrates a running (or paused) VM locally onto a new QEMU process started from O(target_binary), with the
    migration capability C(x-ignore-shared) on both sides, so that guest RAM stays in its shared memory file and
    only device state moves. The guest sees a pause of milliseconds.
  - "Steps: B(lock) (one update per VM at a time); B(recover) (an interrupted earlier update is settled, see
    RV(recovered)); B(preflight) (run state, no migration under way, all RAM in C(memory-backend-file) with
    C(share=on), target binary supports C(x-ignore-shared) and the VM's resolved machine type, C(postcopy-ram) off);
    B(spawn) (the destination gets the source's command line with its own socket and pidfile paths, the machine
    type pinned, tap fds handed over, user-mode C(hostfwd) rules left out, C(-S -incoming defer)); B(migrate);
    B(switch) (the destination is told to run); B(finish) (the source is ended, the canonical socket and pidfile
    names move to the destination, forwarding rules are added again)."
  - Anything that fails before the switch rolls back. The destination is killed and its files removed, the source
    goes on in its previous run state, and the task fails with the step and QEMU's message.
  - Once the destination has been told to run the guest, the source is never resumed (it would run the guest a
    second time on the same RAM and crash it). If the destination dies after that point the guest is lost; the
    source is stopped too, the memory file is left in place, and the VM must be started again.
  - A VM that already runs the target's QEMU version and package from a binary that was neither deleted nor
    replaced is left alone, unless O(force).
  - Before it changes anything, an update records what a successor needs (the VM's migration capabilities, the
    destination's temporary names, how far it got) in a journal beside its lock. An update interrupted at any
    point (its module process killed, a process frozen) is settled by the next update of the VM, so that exactly
    one process runs the guest under the canonical socket and pidfile names, with the capabilities the operator
    had (see RV(recovered), RV(capabilities_restored)).
  - After the switch the guest is verified on the new process (run state, vCPUs running, O(health_command)); an
    update is only reported successful when it passed (RV(verified)).
  - What the source holds that a second process cannot share (TCP listeners, VNC on a TCP display, stdio, ptys,
    C(-snapshot)) is refused in preflight, naming the option.
options:
  name:
    description: Name of a VM launched by M(liveupdate.qemu.vm).
    type: str
  socket:
    description: QMP unix socket of a QEMU not launched by this collection.
    type: path
  pid:
    description: Process id of the QEMU to update; its QMP socket is taken from its command line.
    type: int
  vms:
    description:
      - Several VMs to update in one task, each given by O(vms[].name), O(vms[].socket) or O(vms[].pid).
        The result then has one entry per VM in RV(results).
      - Exactly one of O(name), O(socket), O(pid) and O(vms) is required.
    type: list
    elements: dict
    suboptions:
      name:
        description: As O(name).
        type: str
      socket:
        description: As O(socket).
        type: path
      pid:
        description: As O(pid).
        type: int
  concurrency:
    description: With O(vms), how many VMs are updated at the same time.
    type: int
    default: 1
  stop_on_failure:
    description: With O(vms), start no further update after one has failed.
    type: bool
    default: true
  target_binary:
    description: The QEMU binary to move the VM to, a path or a name looked up in C(PATH).
    type: str
    default: qemu-system-x86_64
  transfer_mode:
    description:
      - How the guest's state crosses to the new process.
      - C(cpr-transfer) is QEMU's own CheckPoint-Restart, for source and target QEMU 10.0 or later. The RAM's file
        descriptors are handed over, so RAM stays mapped and only device state moves. Every RAM block must be a
        C(share=on) memfd or file backend and the machine must have C(aux-ram-share=on) (as M(liveupdate.qemu.vm)
        starts VMs with O(liveupdate.qemu.vm#module:memory_backend=memfd)).
      - C(x-ignore-shared) leaves the RAM in its named shared memory file and moves device state only (any version).
      - C(full-copy) copies the RAM (seconds per GiB; see O(allow_full_copy)).
      - C(auto) takes the first of C(cpr-transfer) and C(x-ignore-shared) that the VM and the target allow, then
        C(full-copy) only with O(allow_full_copy). The result's RV(transfer_mode) says which was used;
        M(liveupdate.qemu.vm_info) says which modes each VM can take and why not the others.
    type: str
    choices: [auto, cpr-transfer, x-ignore-shared, full-copy]
    default: auto
  allow_full_copy:
    description:
      - Update a VM whose RAM is not all in shared memory files (C(share=off), anonymous RAM) by copying its RAM.
        This takes seconds per GiB and the guest pause grows with its memory.
      - Under TCG (no KVM) a source QEMU older than 9.0 can lose guest writes while it copies RAM (a QEMU bug fixed
        in 9.0), so such a copy is refused unless O(force) is set.
    type: bool
    default: false
  open_connections:
    description:
      - What to do when TCP connections that QEMU holds itself are open - those of its built-in user-mode
        networking (C(-netdev user), slirp) forwarded to the guest by C(hostfwd) or opened by the guest. They
        belong to the QEMU process, so the update resets them (clients see a reset; the forwarding rules are
        added again for new connections).
      - C(refuse) fails the VM's update in preflight, listing them (RV(connections)); nothing changes.
        C(reset) goes on and lists them in RV(connections_reset), and in the rollout report.
      - Connections through a tap, or through passt (C(-netdev stream), see M(liveupdate.qemu.vm)'s
        O(liveupdate.qemu.vm#module:nics[].backend)), live outside QEMU and are kept.
    type: str
    choices: [refuse, reset]
    default: refuse
  force:
    description:
      - Update even when the VM already runs the target's version.
      - With a full copy, also copy the RAM of a TCG guest whose QEMU is older than 9.0.
    type: bool
    default: false
  migration_timeout:
    description: Seconds the migration may take before it is cancelled and rolled back.
    type: float
    default: 60
  lock_timeout:
    description: Seconds to wait for another live update of the same VM to end; 0 fails at once.
    type: float
    default: 0
  shutdown_timeout:
    description: Seconds each step of the shutdown ladder (QMP quit, SIGTERM, SIGKILL) waits for the source to exit.
    type: float
    default: 10
  verify_timeout:
    description:
      - After the switch, seconds within which the guest must show that it goes on on the new process (its vCPU
        threads run) and O(health_command) must succeed. An update whose guest does not pass fails at step
        C(verify), with RV(verified) saying what was checked; the guest stays on the new process.
    type: float
    default: 5
  health_command:
    description:
      - A shell command run on the hypervisor after the switch; the update fails (step C(verify)) unless it exits 0
        within O(verify_timeout). Its environment has C(LIVEUPDATE_VM), C(LIVEUPDATE_QMP_SOCKET) and
        C(LIVEUPDATE_PID) (the new QEMU process).
    type: str
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.attributes.no_diff
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    details: Runs preflight and returns the plan; no destination is started (the target binary is only probed).
notes:
  - VMs managed by libvirt are refused at the first step, by O(pid) or O(socket) alike, before anything connects to
    their monitor. libvirt holds their QMP monitor and their process and does not migrate a domain within one host;
    an update behind its back would end the process libvirt holds, and libvirt would take the domain for crashed.
    Update such VMs through libvirt - C(virsh migrate --live) to another host, C(virsh managedsave) then
    C(virsh start), or a restart of the domain. M(liveupdate.qemu.vm_info) lists them as not eligible (C(libvirt)).
seealso:
  - module: liveupdate.qemu.vm_info
'''

EXAMPLES = r'''
- name: Move VM web1 to the installed QEMU
  liveupdate.qemu.live_update:
    name: web1
  register: update

- name: Show how long the guest was paused
  ansible.builtin.debug:
    msg: "{{ update.vm.name }}: {{ update.old.package }} -> {{ update.new.package }}, paused {{ update.guest_pause_ms }} ms"
  when: update is changed

- name: Move a QEMU started by other means to a staged build
  liveupdate.qemu.live_update:
    socket: /var/run/vms/db1.qmp
    target_binary: /opt/qemu/7.2.22/bin/qemu-system-x86_64
'''

RETURN = r'''
vm:
  description: The VM (C(name), C(qmp_socket), C(managed)).
  returned: when the VM was found
  type: dict
old:
  description: The source process (C(pid), C(binary), C(version), C(package)).
  returned: when preflight ran
  type: dict
  sample: {"pid": 4242, "binary": "/usr/bin/qemu-system-x86_64", "version": "7.2.15", "package": "Debian 1:7.2+dfsg-7+deb12u15"}
new:
  description: The destination process after the switch (C(pid), C(binary), C(version), C(package), C(status)).
  returned: changed and not check mode
  type: dict
target:
  description: The target binary with its version and package.
  returned: when preflight ran
  type: dict
plan:
  description: >-
    What the update does or would do: the destination C(argv), C(renames) (temporary path, canonical path),
    tap C(taps) and stream netdev sockets C(streams) handed over, the pids of the processes at the other end of
    the streams (passt) C(held_still) while both QEMUs have the sockets, the source's tap C(downscripts) (netdev,
    script) skipped, C(host_forwards) re-added, C(transfer_mode), C(full_copy), and the source's run state C(was).
  returned: changed
  type: dict
connections:
  description:
    - The established TCP connections the source QEMU holds itself (C(local), C(remote) address, and C(kind) -
      forwarded to the guest, or opened by the guest or by QEMU), which the update resets; see O(open_connections).
  returned: when preflight ran
  type: list
  elements: dict
  sample: [{local: 127.0.0.1:8080, remote: 127.0.0.1:51234, kind: forwarded to the guest}]
connections_reset:
  description: The RV(connections) this update reset (with O(open_connections=reset)).
  returned: when the update reset connections
  type: list
  elements: dict
transfer_mode:
  description: The transfer mode used (or, in check mode, that would be used); see O(transfer_mode).
  returned: changed
  type: str
  sample: x-ignore-shared
guest_pause_ms:
  description: Time from the source's STOP event to the destination's RESUME event (host clock), when the VM was running.
  returned: changed, not check mode, VM running
  type: float
  sample: 4.2
migration:
  description: QEMU's figures for the migration (C(total_time_ms), C(downtime_ms), C(setup_time_ms), C(bytes), C(full_copy), C(mode)).
  returned: changed and not check mode
  type: dict
timings:
  description: >-
    Seconds per step (C(locate), C(connect), C(recover), C(preflight), C(spawn), C(migrate), C(switch),
    C(finish), C(verify)), and C(engine) from the destination's start until the source is gone and the names are
    moved. On failure, the steps that ran.
  returned: always
  type: dict
stop_method:
  description:
    - The step of the shutdown ladder that ended the source (C(quit), C(SIGTERM), C(SIGKILL)).
    - C(SIGKILL) at once for a source whose taps have downscripts (C(plan.downscripts)), which C(quit) would run on
      the interfaces the destination now uses.
  returned: changed and not check mode
  type: str
step:
  description: >-
    The step that failed (C(locate), C(lock), C(connect), C(recover), C(preflight), C(spawn), C(migrate),
    C(switch), C(finish) or C(verify)).
  returned: failure
  type: str
dest_pid:
  description: The destination process, when the update failed after the switch (C(msg) says whether it lives).
  returned: failure after the switch
  type: int
rolled_back:
  description: On failure, whether the source runs on in its previous run state.
  returned: failure
  type: bool
reasons:
  description: Why preflight refused the update.
  returned: failure in preflight
  type: list
  elements: str
recovered:
  description:
    - Other QEMU processes found mapping the VM's memory (shared) that an interrupted update left behind, with
      their run state (C(pid), C(status)). They are settled before the update (in check mode only listed) - a
      destination that never ran the guest is killed, a left-over source is quit, and a destination that already
      runs the guest keeps it (then C(msg) says the interrupted update was completed and nothing else is done).
  returned: when such processes were found
  type: list
  elements: dict
verified:
  description:
    - What was checked after the switch, each with C(ok) and what it saw - C(run_state) (C(status),
      C(expected)), C(vcpus) (C(vcpu_ns), CPU time of the vCPU threads within O(verify_timeout)) when the guest
      was running, C(health_command) (C(rc), C(output)) when given.
  returned: changed and not check mode
  type: dict
  sample: {"run_state": {"ok": true, "status": "running", "expected": "running"}, "vcpus": {"ok": true, "vcpu_ns": 1843211}}
console_bytes:
  description:
    - Bytes the engine read from each server-mode socket chardev of the new process (serial console, monitor,
      guest agent channel...), by canonical path. It holds a client on each from its start until the guest has been
      verified, so that a device the source left waiting on a blocked chardev (a console logger that stopped
      reading) can retry on the new process; output in that window goes to the engine, as it would go nowhere
      without a client.
  returned: changed and not check mode
  type: dict
capabilities_restored:
  description: Migration capabilities that an interrupted update had left changed, set back to the operator's values.
  returned: when an interrupted update was settled
  type: dict
resumed:
  description: Whether settling an interrupted update resumed a guest its destination had left paused.
  returned: when an interrupted update was completed
  type: bool
results:
  description:
    - With O(vms), one entry per VM that was started, in order, each with the return values above
      (C(vm), C(old), C(new), C(guest_pause_ms), ...), or C(failed), C(msg), C(step) and C(rolled_back).
  returned: with O(vms)
  type: list
  elements: dict
'''

import signal

from ansible_collections.liveupdate.qemu.plugins.module_utils._batch import run_batch
from ansible_collections.liveupdate.qemu.plugins.module_utils._live_update import LiveUpdate
from ansible_collections.liveupdate.qemu.plugins.module_utils._module import LiveUpdateModule


def main():
    module = LiveUpdateModule(
        argument_spec=dict(
            name=dict(type='str'),
            socket=dict(type='path'),
            pid=dict(type='int'),
            target_binary=dict(type='str', default='qemu-system-x86_64'),
            transfer_mode=dict(type='str', default='auto', choices=['auto', 'cpr-transfer', 'x-ignore-shared',
                                                                    'full-copy']),
            allow_full_copy=dict(type='bool', default=False),
            open_connections=dict(type='str', default='refuse', choices=['refuse', 'reset']),
            force=dict(type='bool', default=False),
            migration_timeout=dict(type='float', default=60),
            lock_timeout=dict(type='float', default=0),
            shutdown_timeout=dict(type='float', default=10),
            verify_timeout=dict(type='float', default=5),
            health_command=dict(type='str'),
            vms=dict(type='list', elements='dict', options=dict(
                name=dict(type='str'), socket=dict(type='path'), pid=dict(type='int'),
            ), mutually_exclusive=[('name', 'socket', 'pid')], required_one_of=[('name', 'socket', 'pid')]),
            concurrency=dict(type='int', default=1),
            stop_on_failure=dict(type='bool', default=True),
        ),
        mutually_exclusive=[('name', 'socket', 'pid', 'vms')],
        required_one_of=[('name', 'socket', 'pid', 'vms')],
        supports_check_mode=True)
    # A controller that goes away mid-update must not leave a VM half-moved: finish it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if module.params['vms'] is not None:
        module.run(lambda: run_batch(module.params, module.check_mode))
    else:
        module.run(lambda: LiveUpdate(module.params, module.check_mode).run())


if __name__ == '__main__':
    main()
