# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Options every module of the collection takes (module_utils/_module.py COMMON_ARGS).
    DOCUMENTATION = r'''
options:
  runtime_dir:
    description:
      - Directory that holds one runtime directory per VM launched by M(liveupdate.qemu.vm)
        (QMP socket, pidfile, serial socket and log, the recorded spec).
      - Set it once for all modules with C(module_defaults) and the action group C(group/liveupdate.qemu.qemu).
    type: path
    default: /run/liveupdate-qemu
  timeout:
    description:
      - Seconds to wait for a QMP answer (greeting or command reply) before failing.
    type: float
    default: 10
requirements:
  - python >= 3.9
  - qemu.qmp == 0.0.6 (on the hypervisor; the role C(liveupdate.qemu.hypervisor) installs it)
notes:
  - Modules run on the hypervisor, where the QMP sockets are.
'''

    # For the modules that talk to one QEMU (module_utils/_module.py QMP_TARGET_ARGS).
    QMP_TARGET = r'''
options:
  socket:
    description:
      - Path of the unix QMP socket of the QEMU to talk to.
      - Mutually exclusive with O(name).
    type: path
  name:
    description:
      - Name of a VM launched by M(liveupdate.qemu.vm); its QMP socket is found under O(runtime_dir).
      - Mutually exclusive with O(socket).
    type: str
'''
