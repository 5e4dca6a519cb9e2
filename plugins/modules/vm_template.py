#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vm_template
short_description: Turn a running QEMU VM into a template that clones start from in milliseconds
version_added: 0.2.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - O(state=present) saves the running VM O(vm) at the point it has reached (its device state, as
    M(liveupdate.qemu.saved_vm) does), ends its QEMU and moves its memory file into the template's directory,
    read-only from then on. The VM becomes the template. Clones (M(liveupdate.qemu.vm_clone)) map that memory
    file privately and start from the saved point without a boot.
  - The template's disks stay where they are, and clones get copy-on-write overlays of them. They must not change
    afterwards - a clone refuses to start from a template whose memory file or disks changed.
  - Refused, with nothing changed - a VM that is a clone (its RAM is a private copy-on-write mapping of another
    template's memory file, with no file holding what it changed), a VM whose RAM is not in one named shared memory
    file, C(-blockdev) disks (use C(-drive)), and what M(liveupdate.qemu.saved_vm) refuses to save.
  - O(state=absent) deletes a template. Refused while it has clones, running, warm or stopped with overlays.
options:
  name:
    description: The template's name; its files are in O(template_dir)C(/<name>).
    type: str
    required: true
  vm:
    description:
      - With O(state=present), the running VM to make the template of - a VM of M(liveupdate.qemu.vm), or the
        QEMU with C(-name <vm>), unless O(socket) or O(pid) says which QEMU it is.
    type: str
  socket:
    description: The QMP unix socket of the QEMU to make the template of.
    type: path
  pid:
    description: The process id of the QEMU to make the template of.
    type: int
  state:
    description: C(present) or C(absent).
    type: str
    choices: [present, absent]
    default: present
  template_dir:
    description: Where templates are kept, a directory per template.
    type: path
    default: /var/lib/liveupdate-qemu/templates
  migration_timeout:
    description: Seconds the save of the device state may take.
    type: float
    default: 60
  shutdown_timeout:
    description: Seconds each step of the shutdown ladder waits for the VM's QEMU to end after the save.
    type: float
    default: 10
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.attributes.no_diff
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks that the VM can become a template; nothing is saved.
seealso:
  - module: liveupdate.qemu.vm_clone
  - module: liveupdate.qemu.saved_vm
'''

EXAMPLES = r'''
- name: Make template web-base of VM web-golden, booted and warmed up
  liveupdate.qemu.vm_template:
    name: web-base
    vm: web-golden

- name: Delete it once its clones are gone
  liveupdate.qemu.vm_template:
    name: web-base
    state: absent
'''

RETURN = r'''
template:
  description:
    - The template - C(name), C(dir), C(memory_file), C(state_file), C(source_vm), C(binary), C(version),
      C(machine), C(memory_bytes), C(disks) and C(clones) (the names of its clones).
  returned: when the template exists or was deleted
  type: dict
timings:
  description: Milliseconds - C(save_ms) (guest stopped to state written) and C(move_ms) (memory file moved).
  returned: when a template was made
  type: dict
'''

from ansible_collections.liveupdate.qemu.plugins.module_utils._module import LiveUpdateModule
from ansible_collections.liveupdate.qemu.plugins.module_utils._template import DEFAULT_TEMPLATE_DIR, TemplateManager


def main():
    module = LiveUpdateModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            vm=dict(type='str'),
            socket=dict(type='path'),
            pid=dict(type='int'),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            template_dir=dict(type='path', default=DEFAULT_TEMPLATE_DIR),
            migration_timeout=dict(type='float', default=60),
            shutdown_timeout=dict(type='float', default=10),
        ),
        mutually_exclusive=[('socket', 'pid')],
        supports_check_mode=True)
    module.run(lambda: TemplateManager(module.params, module.check_mode).run())


if __name__ == '__main__':
    main()
