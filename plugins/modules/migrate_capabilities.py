#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: migrate_capabilities
short_description: Set QEMU migration capabilities
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Makes each named migration capability true or false on a running QEMU. Only the capabilities whose
    state differs are sent, in one C(migrate-set-capabilities) command.
  - QEMU checks the resulting combination and refuses it whole (for example C(x-ignore-shared) with
    C(postcopy-ram)); the module then fails with QEMU's reason and nothing is changed.
options:
  capabilities:
    description:
      - Capability name to wanted state, for example C(x-ignore-shared=true).
      - A name this QEMU does not know fails the task, listing the ones it knows.
    type: dict
    required: true
seealso:
  - module: liveupdate.qemu.migrate_parameters
  - module: liveupdate.qemu.live_update
    description: Sets the capabilities a live update needs by itself, and gives the operator's back afterwards.
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.common.qmp_target
  - liveupdate.qemu.attributes
  - ansible.builtin.action_common_attributes
'''

EXAMPLES = r'''
- name: Leave guest RAM in place during a local migration
  liveupdate.qemu.migrate_capabilities:
    name: web1
    capabilities:
      x-ignore-shared: true
      events: true
'''

RETURN = r'''
capabilities:
  description: Every capability of this QEMU and its state after the task (as it would be, in check mode).
  returned: success
  type: dict
  sample: {"x-ignore-shared": true, "events": true, "postcopy-ram": false}
sent:
  description: The capabilities that were (or in check mode would be) changed.
  returned: success
  type: dict
  sample: {"x-ignore-shared": true}
known:
  description: The capability names this QEMU knows, when an unknown one was asked for.
  returned: failure
  type: list
  elements: str
'''

from ansible_collections.liveupdate.qemu.plugins.module_utils._migration_settings import run_module


def main():
    run_module('capabilities')


if __name__ == '__main__':
    main()
