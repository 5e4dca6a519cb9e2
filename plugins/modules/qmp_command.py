#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: qmp_command
short_description: Run one QMP command on a running QEMU
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Sends one QEMU Machine Protocol command with its arguments and returns QEMU's answer.
  - Commands that only read (C(query-*), C(qom-get), C(qom-list)) report no change and also run in check mode.
    Any other command reports a change and is not sent in check mode.
options:
  command:
    description:
      - The QMP command, for example C(query-status), C(stop), C(cont).
    type: str
    required: true
  arguments:
    description:
      - The command's arguments.
    type: dict
    default: {}
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.common.qmp_target
  - liveupdate.qemu.attributes.no_diff
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: partial
    details: Read-only commands run; other commands are not sent and report a change.
notes:
  - Never point O(socket) at the monitor of a VM that libvirt runs (C(monitor.sock) under C(/var/lib/libvirt/qemu)).
    libvirt holds that monitor - a second client waits on libvirt's connection, and a command sent while libvirt is
    away changes the VM behind libvirt's back. Use C(virsh qemu-monitor-command) for such a VM.
    M(liveupdate.qemu.vm_info) tells which VMs libvirt runs (C(libvirt)).
'''

EXAMPLES = r'''
- name: Read the run state of VM web1
  liveupdate.qemu.qmp_command:
    name: web1
    command: query-status
  register: web1_status

- name: Pause a QEMU started by hand (-qmp unix:/run/vms/db1.qmp,server=on,wait=off)
  liveupdate.qemu.qmp_command:
    socket: /run/vms/db1.qmp
    command: stop

- name: Read the resolved machine type
  liveupdate.qemu.qmp_command:
    name: web1
    command: qom-get
    arguments:
      path: /machine
      property: type
'''

RETURN = r'''
result:
  description: What QEMU returned (the C(return) member of its reply). Empty in check mode for commands not sent.
  returned: success
  type: raw
  sample: {"running": true, "status": "running", "singlestep": false}
socket:
  description: The QMP socket that was used.
  returned: always
  type: str
  sample: /run/liveupdate-qemu/web1/qmp.sock
'''

from ansible_collections.liveupdate.qemu.plugins.module_utils._module import (
    LiveUpdateModule, QMP_TARGET_ARGS, QMP_TARGET_RULES,
)

READ_ONLY_PREFIXES = ('query-', 'qom-get', 'qom-list')


def main():
    module = LiveUpdateModule(
        argument_spec=dict(QMP_TARGET_ARGS, command=dict(type='str', required=True),
                           arguments=dict(type='dict', default={})),
        supports_check_mode=True, **QMP_TARGET_RULES)

    def work():
        command = module.params['command']
        read_only = command.startswith(READ_ONLY_PREFIXES)
        socket = module.qmp_socket()
        if module.check_mode and not read_only:
            return dict(changed=True, result={}, socket=socket)
        with module.qmp_session(socket) as qmp:
            result = qmp.execute(command, module.params['arguments'])
        return dict(changed=not read_only, result=result, socket=socket)

    module.run(work)


if __name__ == '__main__':
    main()
