#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: migrate_parameters
short_description: Set QEMU migration parameters
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Sets named migration parameters (C(max-bandwidth), C(downtime-limit), ...) on a running QEMU.
    Only the parameters whose value differs are sent, in one C(migrate-set-parameters) command.
  - Each value is converted to the type QEMU reports for that parameter (integer, boolean or string);
    a value that does not convert fails the task and nothing is sent.
options:
  parameters:
    description:
      - Parameter name to wanted value.
      - A name this QEMU does not report in C(query-migrate-parameters) fails the task, listing the ones it knows.
    type: dict
    required: true
seealso:
  - module: liveupdate.qemu.migrate_capabilities
extends_documentation_fragment:
  - liveupdate.qemu.common
  - liveupdate.qemu.common.qmp_target
  - liveupdate.qemu.attributes
  - ansible.builtin.action_common_attributes
'''

EXAMPLES = r'''
- name: Let a full-copy migration use all the bandwidth it can
  liveupdate.qemu.migrate_parameters:
    name: web1
    parameters:
      max-bandwidth: 0
      downtime-limit: 300
'''

RETURN = r'''
parameters:
  description: Every parameter of this QEMU and its value after the task (as it would be, in check mode).
  returned: success
  type: dict
  sample: {"max-bandwidth": 134217728, "downtime-limit": 300}
sent:
  description: The parameters that were (or in check mode would be) changed.
  returned: success
  type: dict
  sample: {"downtime-limit": 300}
known:
  description: The parameter names this QEMU knows, when an unknown one was asked for.
  returned: failure
  type: list
  elements: str
'''

from ansible_collections.liveupdate.qemu.plugins.module_utils._migration_settings import run_module


def main():
    run_module('parameters')


if __name__ == '__main__':
    main()
