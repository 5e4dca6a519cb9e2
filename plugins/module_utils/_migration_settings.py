# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Migration capabilities and parameters: read, compare with what is wanted,
send only what differs. QEMU validates the combination and refuses it whole,
so a refused change leaves the settings as they were.

Both kinds take the same path; they differ only in their QMP commands and in
how a wanted value is converted (``SETTINGS``). ``run_module`` is the whole of
the modules migrate_capabilities and migrate_parameters."""

from __future__ import annotations

from collections import namedtuple

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._module import (
    LiveUpdateModule, QMP_TARGET_ARGS, QMP_TARGET_RULES,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import query_capabilities, set_capabilities


def _plan(current, wanted, kind, coerce):
    unknown = sorted(set(wanted) - set(current))
    if unknown:
        raise InvalidInput('unknown migration %s %s; this QEMU knows: %s'
                           % (kind, ', '.join(unknown), ', '.join(sorted(current))),
                           known=sorted(current))
    wanted = dict((name, coerce(name, value, current[name])) for name, value in wanted.items())
    return dict((name, value) for name, value in wanted.items() if current[name] != value), wanted


def _to_bool(kind, name, value):
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise InvalidInput('migration %s %s needs true or false, got %r' % (kind, name, value))


def _coerce_parameter(name, value, current):
    """Convert ``value`` to the type QEMU reports for the parameter."""
    if isinstance(current, bool):
        return _to_bool('parameter', name, value)
    if isinstance(current, int):
        if isinstance(value, bool):
            raise InvalidInput('migration parameter %s needs an integer, got %r' % (name, value))
        try:
            return int(str(value), 0)
        except ValueError:
            raise InvalidInput('migration parameter %s needs an integer, got %r' % (name, value))
    if isinstance(current, str):
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise InvalidInput('migration parameter %s needs a string, got %r' % (name, value))
        return str(value)
    return value


def _result(changes, before, after):
    return dict(changed=bool(changes), diff=dict(before=before, after=after))


def _query_parameters(qmp):
    return qmp.execute('query-migrate-parameters')


def _set_parameters(qmp, values):
    qmp.execute('migrate-set-parameters', values)


# One kind of migration setting: its name in messages, how to read all of them
# (qmp -> {name: value}), send some (qmp, {name: value}) and convert a wanted
# value (name, value, current value -> value).
Setting = namedtuple('Setting', 'kind query send coerce')

# By the option (and result key) of the module that sets them.
SETTINGS = dict(
    capabilities=Setting('capability', query_capabilities, set_capabilities,
                         lambda name, value, current: _to_bool('capability', name, value)),
    parameters=Setting('parameter', _query_parameters, _set_parameters, _coerce_parameter),
)


def apply_settings(qmp, option, wanted, check_mode=False):
    """Give the settings of kind ``SETTINGS[option]`` named in ``wanted`` (name -> value) those values."""
    setting = SETTINGS[option]
    current = setting.query(qmp)
    changes, wanted = _plan(current, wanted, setting.kind, setting.coerce)
    result = _result(changes, dict((n, current[n]) for n in wanted), wanted)
    if changes and not check_mode:
        setting.send(qmp, changes)
        current = setting.query(qmp)
    elif changes:
        current.update(changes)
    result.update({option: current, 'sent': changes})
    return result


def apply_capabilities(qmp, wanted, check_mode=False):
    """Make the capabilities in ``wanted`` (name -> bool) true/false."""
    return apply_settings(qmp, 'capabilities', wanted, check_mode)


def apply_parameters(qmp, wanted, check_mode=False):
    """Set the parameters in ``wanted`` (name -> value)."""
    return apply_settings(qmp, 'parameters', wanted, check_mode)


def run_module(option):
    """Run the module that sets the ``option`` (a key of ``SETTINGS``) of one QEMU, and exit."""
    module = LiveUpdateModule(argument_spec=dict(QMP_TARGET_ARGS, **{option: dict(type='dict', required=True)}),
                              supports_check_mode=True, **QMP_TARGET_RULES)

    def work():
        with module.qmp_session() as qmp:
            return apply_settings(qmp, option, module.params[option], module.check_mode)

    module.run(work)
