#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vm_info
short_description: Find the QEMU VMs on a host and tell which can be live-updated
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Lists every QEMU process on the host, launched by M(liveupdate.qemu.vm) or not.
  - For each process with a unix QMP socket it asks QEMU for its version, run state, resolved machine type,
    migration state and capabilities, and memory backends (size, C(share), path and the filesystem of the path).
  - A VM is C(outdated) when its binary was deleted or replaced on disk, or when its QEMU version or package
    differs from the target binary's.
  - A VM is C(eligible) for a device-state-only live update when it runs or is paused, no migration is under way,
    C(postcopy-ram) is off, and one of two transfer modes can take it onto the target, C(cpr-transfer) (QEMU 10.0 or
    later on both sides, all RAM in C(share=on) memfd or file backends, C(aux-ram-share=on)) or C(x-ignore-shared)
    (all RAM in C(memory-backend-file) objects with C(share=on)). Otherwise C(ineligible_reasons) says why.
  - C(transfer_modes) says, for each mode of M(liveupdate.qemu.live_update)'s O(liveupdate.qemu.live_update#module:transfer_mode),
    why the VM cannot take it (an empty list when it can), and C(transfer_mode) which one C(auto) would use.
  - A QEMU that libvirt runs (a libvirt domain) is listed under its domain name with C(libvirt) set, and is never
    eligible. Its QMP monitor is not asked, so C(running), C(status) and the other QMP facts are C(null); see the notes.
options:
  target_binary:
    description:
      - The QEMU binary VMs should run. When omitted, each VM is compared with the binary of the same name found
        in C(PATH) (the installed one).
    type: str
  query:
    description:
      - A JMESPath expression applied to the list of VMs; the result replaces O(ignore:vms).
      - For example C([?outdated && eligible]) or C([?name=='web1']).
    type: str
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.attributes.info_module
  - ansible.builtin.action_common_attributes
requirements:
  - jmespath (for O(query))
notes:
  - VMs managed by libvirt are not handled by this collection. libvirt holds their QMP monitor (which serves one
    client at a time) and their process, and does not migrate a domain within one host. A second QMP client would
    wait on libvirt's connection, or act behind libvirt's back when libvirt is away, and libvirt's view of the domain
    would no longer match it. Update such VMs through libvirt instead - C(virsh migrate --live) to another host,
    C(virsh managedsave) then C(virsh start) (the domain comes back on the installed QEMU), or a restart of the domain.
  - A process is libvirt's when libvirt's pidfile, cgroup or daemon names it, or when its command line has two of
    libvirt's marks, one of them a libvirt file (see C(libvirt) below, and C(docs/libvirt.md) of the collection).
seealso:
  - module: liveupdate.qemu.vm
'''

EXAMPLES = r'''
- name: Every QEMU on the host
  liveupdate.qemu.vm_info:
  register: host_vms

- name: The libvirt domains on the host (to update through libvirt, not with this collection)
  liveupdate.qemu.vm_info:
    query: "[?libvirt].libvirt.domain"
  register: libvirt_domains

- name: The VMs that run an outdated QEMU and can be updated in place
  liveupdate.qemu.vm_info:
    target_binary: /opt/qemu/7.2.19/bin/qemu-system-x86_64
    query: "[?outdated && eligible].name"
  register: to_update
'''

RETURN = r'''
vms:
  description: One entry per QEMU process, or what O(query) made of that list.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: 'VM name from C(-name); for a libvirt domain, its domain name.', type: str, returned: always}
    pid: {description: Process id., type: int, returned: always}
    managed: {description: Whether M(liveupdate.qemu.vm) launched it., type: bool, returned: always}
    runtime_dir: {description: Its runtime directory when managed., type: str, returned: always}
    qmp_socket:
      description: The unix QMP socket used; null when it has none, or when libvirt runs the VM (the monitor is libvirt's).
      type: str
      returned: always
    libvirt:
      description: >-
        When libvirt runs the VM, its C(domain) name and the C(markers) that told so - on its command line
        C(name-debug-threads), C(master-key), C(charmonitor), C(libvirt-path), of the process C(libvirt-pidfile),
        C(libvirt-cgroup), C(libvirt-parent). C(null) for any other QEMU. Such a VM is never eligible.
      type: dict
      returned: always
      sample: {"domain": "db", "markers": ["name-debug-threads", "master-key", "charmonitor", "libvirt-path"]}
    argv: {description: Command line., type: list, elements: str, returned: always}
    binary:
      description: The binary the process runs, C(deleted) and C(replaced) on disk since it started.
      type: dict
      returned: always
      sample: {"path": "/usr/bin/qemu-system-x86_64", "deleted": true, "replaced": false}
    running:
      description: QEMU version and package of the process (C(query-version)).
      type: dict
      returned: always
      sample: {"version": "7.2.19", "package": "Debian 1:7.2+dfsg-7+deb12u15"}
    target:
      description: Path, version and package of the target binary.
      type: dict
      returned: always
    outdated: {description: Whether the VM should move to the target binary., type: bool, returned: always}
    outdated_reasons: {description: Why it is outdated., type: list, elements: str, returned: always}
    kvm: {description: 'Whether the VM runs with KVM (C(query-kvm)); C(false) means TCG.', type: bool, returned: always}
    machine: {description: 'Resolved machine type, for example C(pc-i440fx-7.2).', type: str, returned: always}
    status: {description: Run state (C(query-status))., type: str, returned: always}
    migration: {description: 'Migration state (C(query-migrate)), C(none) when never migrated.', type: str, returned: always}
    capabilities: {description: Migration capabilities and their state., type: dict, returned: always}
    memory_backends:
      description: >-
        Memory backends with C(id), C(type), C(size), C(share), C(path), C(filesystem) and C(mapped) (whether the
        file now at C(path) is the one QEMU maps - C(mapped), C(replaced) or C(deleted)).
      type: list
      elements: dict
      returned: always
    ram_size: {description: 'Guest RAM in bytes, base and plugged.', type: int, returned: always}
    clone_of:
      description: >-
        The template (M(liveupdate.qemu.vm_template)) whose memory file this VM maps privately (C(share=off)) - a
        clone of M(liveupdate.qemu.vm_clone). Its RAM is not that file, so it is never eligible for a
        device-state-only update. C(null) for other VMs.
      type: str
      returned: always
    eligible: {description: Whether a device-state-only live update is possible now., type: bool, returned: always}
    ineligible_reasons: {description: Why not., type: list, elements: str, returned: always}
    transfer_modes:
      description: >-
        For each transfer mode (C(cpr-transfer), C(x-ignore-shared), C(full-copy)), the reasons it cannot move the VM
        onto the target; an empty list when it can (for C(full-copy), the risks that need
        O(liveupdate.qemu.live_update#module:force)). Judged on the target's version; the target's capabilities and
        machine types are checked by M(liveupdate.qemu.live_update)'s preflight.
      type: dict
      returned: always
      sample: {"cpr-transfer": ["this VM runs QEMU 7.2.22; cpr-transfer needs 10.0 or later"], "x-ignore-shared": [], "full-copy": []}
    transfer_mode:
      description: The device-state-only mode that C(auto) would use, or C(null) when there is none.
      type: str
      returned: always
    qmp_error: {description: 'Why QMP could not be asked, if so.', type: str, returned: always}
    interrupted_update:
      description: >-
        Whether an update of this VM was interrupted (its journal is there); the next
        M(liveupdate.qemu.live_update) of the VM settles it.
      type: bool
      returned: always
'''

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.liveupdate.qemu.plugins.module_utils._discovery import discover
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, shorten
from ansible_collections.liveupdate.qemu.plugins.module_utils._module import LiveUpdateModule
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import resolve_binary

try:
    import jmespath
    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError:
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = traceback.format_exc()


def main():
    module = LiveUpdateModule(argument_spec=dict(target_binary=dict(type='str'), query=dict(type='str')),
                              supports_check_mode=True)
    query = module.params['query']
    if query and not HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib('jmespath'), exception=JMESPATH_IMPORT_ERROR)
    try:
        compiled = jmespath.compile(query) if query else None
    except (jmespath.exceptions.JMESPathError, RecursionError) as exc:
        module.fail_json(msg=shorten('query is not valid JMESPath: %s' % exc))

    def work():
        target = module.params['target_binary']
        vms = discover(module.params['runtime_dir'], resolve_binary(target) if target else None,
                       module.params['timeout'])
        if compiled is None:
            return dict(changed=False, vms=vms)
        try:
            return dict(changed=False, vms=compiled.search(vms))
        except (jmespath.exceptions.JMESPathError, RecursionError, TypeError, ValueError) as exc:
            raise InvalidInput('query failed on the VM list: %s' % exc)

    module.run(work)


if __name__ == '__main__':
    main()
