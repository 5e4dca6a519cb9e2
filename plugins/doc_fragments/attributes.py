# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The support of each attribute, for modules that also take ansible.builtin.action_common_attributes
    # (which describes the attributes). Use exactly one of the variants below; a module overrides one
    # attribute, or adds its details, under its own attributes: (the module's keys win, attribute by attribute).

    # Changes what it manages, in check mode too, and shows the change in diff mode.
    DOCUMENTATION = r'''
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
'''

    # Changes what it manages but shows no diff.
    NO_DIFF = r'''
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
'''

    # Only reads: check mode changes nothing and there is nothing to diff.
    INFO_MODULE = r'''
attributes:
  check_mode:
    support: full
  diff_mode:
    support: N/A
  platform:
    platforms: posix
'''
