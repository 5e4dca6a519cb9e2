#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vm_clone
short_description: Start a VM from a template in milliseconds, its RAM shared copy-on-write with the template
version_added: 0.2.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - A clone is a new QEMU started from a template of M(liveupdate.qemu.vm_template). Its RAM is the template's
    memory file mapped privately (C(share=off)) - pages stay shared with the template and the other clones until
    the clone writes them, and the template's file never changes. It loads the template's device state and the
    guest goes on from the template's saved point, without a boot.
  - Each clone has its own name, runtime directory under O(runtime_dir) (QMP socket, pidfile, serial console and
    logs), copy-on-write overlays of the template's disks in O(overlay_dir), and MAC addresses (O(nics), by default
    derived from the template's and the clone's names). User-mode NICs lose the template's C(hostfwd) rules unless
    O(nics) gives the clone its own; a tap NIC needs the clone's own tap in O(nics).
  - The guest's memory still holds the template's MAC addresses, and QEMU's migrated NIC state does too, until the
    guest resets its NIC (for example rebinds its driver); RV(guest_macs) shows what the NICs use, and the module
    warns while they are the template's. Clones on one shared network segment need their guest to do that.
  - O(state=warm) starts the clone's QEMU and leaves it waiting for the template's state (C(-incoming defer)); a
    later O(state=running) then only loads the state and resumes it - a warm pool of clones ready in milliseconds.
  - O(state=absent) ends the clone and removes its runtime directory and overlays. The template's files stay.
  - A clone is managed like any VM of the collection - M(liveupdate.qemu.vm_info) reports it with its private
    mapping, M(liveupdate.qemu.live_update) refuses a device-state-only update of it (its RAM is not a shared file;
    O(liveupdate.qemu.live_update#module:allow_full_copy) copies it), and M(liveupdate.qemu.vm_template) refuses
    to make a template of it.
options:
  name:
    description: The clone's name, a VM name unique on the host.
    type: str
    required: true
  template:
    description: The template to start from.
    type: str
    required: true
  state:
    description: C(running), C(warm) (started, waiting for the template's state) or C(absent).
    type: str
    choices: [running, warm, absent]
    default: running
  template_dir:
    description: Where the templates are kept (as in M(liveupdate.qemu.vm_template)).
    type: path
    default: /var/lib/liveupdate-qemu/templates
  overlay_dir:
    description: Where the clone's disk overlays go, in a directory per clone.
    type: path
    default: /var/lib/liveupdate-qemu/clones
  nics:
    description: The clone's NICs, in the order of the template's C(-netdev) options.
    type: list
    elements: dict
    suboptions:
      mac:
        description: The NIC's MAC address; by default one derived from the template's and the clone's names.
        type: str
      ifname:
        description: The clone's own tap interface, for a template's tap NIC.
        type: str
      hostfwd:
        description: User-mode forwarding rules of the clone (C(tcp::8080-:80)).
        type: list
        elements: str
  migration_timeout:
    description: Seconds the load of the template's state may take.
    type: float
    default: 30
  shutdown_timeout:
    description: Seconds each step of the shutdown ladder waits for the clone's QEMU to end (O(state=absent)).
    type: float
    default: 10
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.attributes.no_diff
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Says what would change.
seealso:
  - module: liveupdate.qemu.vm_template
  - module: liveupdate.qemu.vm
'''

EXAMPLES = r'''
- name: Keep three warm clones of web-base ready
  liveupdate.qemu.vm_clone:
    name: "web-{{ item }}"
    template: web-base
    state: warm
  loop: [1, 2, 3]

- name: Start one (milliseconds from a warm clone)
  liveupdate.qemu.vm_clone:
    name: web-1
    template: web-base
    nics:
      - hostfwd: ["tcp::8081-:80"]

- name: Remove it
  liveupdate.qemu.vm_clone:
    name: web-1
    template: web-base
    state: absent
'''

RETURN = r'''
vm:
  description:
    - The clone as M(liveupdate.qemu.vm) reports a VM (C(name), C(pid), C(status), C(qmp_socket), C(pidfile),
      C(serial_log), C(argv), ...) with C(template), C(overlays) and C(macs) (its own MAC addresses).
  returned: always, but after O(state=absent) of a clone that did not exist
  type: dict
guest_macs:
  description: NIC name to the MAC address the NIC uses now (QEMU's C(query-rx-filter)).
  returned: when the clone was started
  type: dict
timings:
  description:
    - Milliseconds - C(start_ms) (QEMU started and ready for its state), C(load_to_running_ms) (state load requested
      to guest running, all a warm clone needs) and C(total_ms).
  returned: when the clone was started or warmed
  type: dict
'''

from ansible_collections.liveupdate.qemu.plugins.module_utils._module import LiveUpdateModule
from ansible_collections.liveupdate.qemu.plugins.module_utils._template import (
    DEFAULT_OVERLAY_DIR, DEFAULT_TEMPLATE_DIR, CloneManager,
)


def main():
    module = LiveUpdateModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            template=dict(type='str', required=True),
            state=dict(type='str', default='running', choices=['running', 'warm', 'absent']),
            template_dir=dict(type='path', default=DEFAULT_TEMPLATE_DIR),
            overlay_dir=dict(type='path', default=DEFAULT_OVERLAY_DIR),
            nics=dict(type='list', elements='dict', options=dict(
                mac=dict(type='str'), ifname=dict(type='str'), hostfwd=dict(type='list', elements='str'),
            )),
            migration_timeout=dict(type='float', default=30),
            shutdown_timeout=dict(type='float', default=10),
        ),
        supports_check_mode=True)
    module.run(lambda: CloneManager(module.params, module.check_mode).run())


if __name__ == '__main__':
    main()
