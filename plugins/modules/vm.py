#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vm
short_description: Start or stop a live-updatable QEMU VM
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Starts a QEMU VM whose guest RAM is a C(memory-backend-file) with C(share=on) in O(memory_dir) (or, with
    O(memory_backend=memfd), a shared memfd), so that M(liveupdate.qemu.live_update) can later move it to another
    QEMU binary while its RAM stays in place.
  - Each VM gets a runtime directory O(runtime_dir)/O(name) (mode 0700) with its QMP socket C(qmp.sock), pidfile
    C(qemu.pid), the recorded spec and argv C(vm.json), QEMU's own output C(qemu.log) and, with O(serial),
    the serial console socket C(serial.sock) and its log C(serial.log). The memory file and sockets are mode 0600.
  - A VM that already runs with the same spec is left alone. A running VM whose spec differs is an error, not a
    silent restart; a different O(binary) only gives a warning, because moving a running VM to another binary is
    what M(liveupdate.qemu.live_update) does.
  - Stopping uses a ladder (QMP C(quit), then SIGTERM, then SIGKILL, each given O(shutdown_timeout) seconds) and
    removes the memory file and the runtime directory. The guest is not asked to shut down. A live update of the
    VM that is under way is waited for (up to O(shutdown_timeout) seconds) first.
  - Files left by a VM that died are removed before it starts again.
options:
  name:
    description:
      - VM name, unique on the host; 1-64 letters, digits, C(.), C(_) or C(-). Also the QEMU C(-name).
    type: str
    required: true
  state:
    description:
      - C(running) starts the VM if it does not run; C(stopped) stops it and removes its files.
    type: str
    choices: [running, stopped]
    default: running
  memory:
    description:
      - Guest RAM size with a unit, for example C(512M), C(4G) or C(1GiB); a whole number of MiB.
    type: str
    default: 1G
  memory_backend:
    description:
      - V(file) keeps guest RAM in a shared file in O(memory_dir); a live update leaves it there (C(x-ignore-shared),
        any QEMU version) and the file can be inspected or saved.
      - V(memfd) keeps it in anonymous shared memory (C(memory-backend-memfd,share=on) with
        C(-machine aux-ram-share=on)); a live update hands its file descriptors to the new QEMU (C(cpr-transfer)).
        Needs O(binary) to be QEMU 10.0 or later, and so does every target of a later live update.
    type: str
    choices: [file, memfd]
    default: file
  memory_dir:
    description:
      - Existing directory for the guest RAM file C(liveupdate-qemu-<name>.ram). It must have room for O(memory).
      - The default is tmpfs. A persistent filesystem also works (for save and restore) but is slower.
    type: path
    default: /dev/shm
  vcpus:
    description: Number of virtual CPUs.
    type: int
    default: 1
  machine:
    description:
      - Machine type. An alias such as C(pc) is resolved by QEMU; M(liveupdate.qemu.vm_info) reports the resolved type.
    type: str
    default: pc
  accel:
    description:
      - Accelerators to try in order (each becomes C(-accel)); QEMU uses the first that initialises.
      - Use C([tcg]) on hosts where C(/dev/kvm) exists but cannot run guests.
    type: list
    elements: str
    default: [kvm, tcg]
  cpu:
    description: CPU model (C(-cpu)); QEMU's default when omitted.
    type: str
  kernel:
    description: Kernel image for direct boot.
    type: path
  initrd:
    description: Initial ramdisk for direct boot; needs O(kernel).
    type: path
  append:
    description: Kernel command line; needs O(kernel).
    type: str
  disks:
    description: Disk images, attached in order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Existing image file.
        type: path
        required: true
      format:
        description: Image format; C(qcow2) when the path ends in C(.qcow2), else C(raw).
        type: str
        choices: [raw, qcow2]
      interface:
        description: Disk interface.
        type: str
        choices: [virtio, ide, scsi]
        default: virtio
      cache:
        description: Host cache mode.
        type: str
        choices: [writeback, none, writethrough, directsync, unsafe]
        default: writeback
  nics:
    description: Network interfaces, attached in order.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: C(user) for user-mode networking (see O(nics[].backend)), C(tap) for an existing tap device.
        type: str
        choices: [user, tap]
        default: user
      backend:
        description:
          - What runs user-mode networking. C(passt) is a network stack in a process of its own, connected
            to QEMU by C(-netdev stream); it holds the guest's connections, so they survive a live update.
            C(slirp) is QEMU's built-in stack; its connections belong to the QEMU process and are reset by a
            live update (which refuses while any is open unless told otherwise, see
            M(liveupdate.qemu.live_update)'s O(liveupdate.qemu.live_update#module:open_connections)).
          - C(auto) picks C(passt) when the C(passt) command is installed and the binary has C(-netdev stream)
            (QEMU 7.2 and later), else C(slirp).
          - The passt process of a NIC ends with the VM. A VM on passt cannot be saved or made a template
            (M(liveupdate.qemu.saved_vm)); use C(slirp) for those.
          - Both give the guest 10.0.2.15/24 by DHCP with the gateway 10.0.2.2, which reaches the host.
        type: str
        choices: [auto, passt, slirp]
        default: auto
      model:
        description: NIC device model.
        type: str
        default: virtio-net-pci
      mac:
        description: MAC address; QEMU picks one when omitted.
        type: str
      hostfwd:
        description:
          - User-mode host forwarding rules, for example C(tcp:127.0.0.1:2222-:22).
          - With C(passt) each rule becomes a passt port forward (C(-t)/C(-u)); a host port of 0 needs C(slirp).
        type: list
        elements: str
        default: []
      ifname:
        description: Tap interface name; required for C(tap).
        type: str
      queues:
        description: Queue count for a C(multi_queue) tap.
        type: int
  serial:
    description: Give the VM a serial console on C(serial.sock), logged to C(serial.log).
    type: bool
    default: true
  vnc:
    description:
      - VNC display, as for QEMU's C(-vnc) (for example C(127.0.0.1:5)), or C(unix) for C(vnc.sock) in the runtime
        directory. No VNC when omitted.
    type: str
  binary:
    description: QEMU binary, a path or a name looked up in C(PATH).
    type: str
    default: qemu-system-x86_64
  extra_args:
    description: More QEMU arguments, appended as given.
    type: list
    elements: str
    default: []
  shutdown_timeout:
    description: Seconds each step of the stop ladder waits for QEMU to exit.
    type: float
    default: 10
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.attributes
  - ansible.builtin.action_common_attributes
seealso:
  - module: liveupdate.qemu.vm_info
'''

EXAMPLES = r'''
- name: Start a small VM whose RAM lives on tmpfs
  liveupdate.qemu.vm:
    name: web1
    memory: 2G
    vcpus: 2
    disks:
      - path: /var/lib/vms/web1.qcow2
    nics:
      - type: user
        hostfwd: [tcp:127.0.0.1:2201-:22]

- name: Boot a kernel directly, emulated (no KVM), console on the serial socket
  liveupdate.qemu.vm:
    name: test1
    memory: 512M
    accel: [tcg]
    kernel: /srv/guest/vmlinuz
    initrd: /srv/guest/initramfs.gz
    append: console=ttyS0 quiet

- name: Stop it and remove its files
  liveupdate.qemu.vm:
    name: test1
    state: stopped
'''

RETURN = r'''
vm:
  description: The VM after the task.
  returned: success
  type: dict
  contains:
    name: {description: VM name., type: str, returned: always}
    pid: {description: QEMU process id; null when not running., type: int, returned: always}
    status: {description: 'QEMU run state (C(running), C(paused), ...), or C(stopped).', type: str, returned: always}
    runtime_dir: {description: The VM's runtime directory., type: str, returned: always}
    qmp_socket: {description: QMP socket path., type: str, returned: always}
    pidfile: {description: Pidfile path., type: str, returned: always}
    serial_socket: {description: Serial console socket; null without O(serial)., type: str, returned: always}
    serial_log: {description: Serial console log; null without O(serial)., type: str, returned: always}
    memory_file: {description: 'The guest RAM file (C(null) with O(memory_backend=memfd)).', type: str, returned: always}
    binary: {description: The QEMU binary the process runs., type: str, returned: always}
    argv: {description: The QEMU command line., type: list, elements: str, returned: always}
  sample:
    name: web1
    pid: 4242
    status: running
    runtime_dir: /run/liveupdate-qemu/web1
    qmp_socket: /run/liveupdate-qemu/web1/qmp.sock
    memory_file: /dev/shm/liveupdate-qemu-web1.ram
stop_method:
  description: The step of the stop ladder that ended QEMU (C(quit), C(SIGTERM), C(SIGKILL)).
  returned: when a running VM was stopped
  type: str
  sample: quit
stale_files_removed:
  description: Whether files of an earlier, dead instance were (or in check mode would be) removed before starting.
  returned: when state=running and the VM was started
  type: bool
'''

from ansible_collections.liveupdate.qemu.plugins.module_utils._module import LiveUpdateModule
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_manager import VmManager


def main():
    module = LiveUpdateModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            state=dict(type='str', default='running', choices=['running', 'stopped']),
            memory=dict(type='str', default='1G'),
            memory_backend=dict(type='str', default='file', choices=['file', 'memfd']),
            memory_dir=dict(type='path', default='/dev/shm'),
            vcpus=dict(type='int', default=1),
            machine=dict(type='str', default='pc'),
            accel=dict(type='list', elements='str', default=['kvm', 'tcg']),
            cpu=dict(type='str'),
            kernel=dict(type='path'),
            initrd=dict(type='path'),
            append=dict(type='str'),
            disks=dict(type='list', elements='dict', default=[], options=dict(
                path=dict(type='path', required=True),
                format=dict(type='str', choices=['raw', 'qcow2']),
                interface=dict(type='str', default='virtio', choices=['virtio', 'ide', 'scsi']),
                cache=dict(type='str', default='writeback',
                           choices=['writeback', 'none', 'writethrough', 'directsync', 'unsafe']),
            )),
            nics=dict(type='list', elements='dict', default=[], options=dict(
                type=dict(type='str', default='user', choices=['user', 'tap']),
                backend=dict(type='str', default='auto', choices=['auto', 'passt', 'slirp']),
                model=dict(type='str', default='virtio-net-pci'),
                mac=dict(type='str'),
                hostfwd=dict(type='list', elements='str', default=[]),
                ifname=dict(type='str'),
                queues=dict(type='int'),
            )),
            serial=dict(type='bool', default=True),
            vnc=dict(type='str'),
            binary=dict(type='str', default='qemu-system-x86_64'),
            extra_args=dict(type='list', elements='str', default=[]),
            shutdown_timeout=dict(type='float', default=10),
        ),
        supports_check_mode=True)
    module.run(lambda: VmManager(module.params, module.check_mode).run())


if __name__ == '__main__':
    main()
