# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Migration capabilities and parameters: read, compare with what is wanted,
send only what differs. QEMU validates the combination and refuses it whole,
so a refused change leaves the settings as they were."""

from __future__ import annotations

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput


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


def query_capabilities(qmp):
    return dict((c['capability'], c['state']) for c in qmp.execute('query-migrate-capabilities'))


def set_capabilities(qmp, states):
    """Send migrate-set-capabilities for ``states`` (name -> bool)."""
    qmp.execute('migrate-set-capabilities',
                {'capabilities': [{'capability': n, 'state': v} for n, v in sorted(states.items())]})


def apply_capabilities(qmp, wanted, check_mode=False):
    """Make the capabilities in ``wanted`` (name -> bool) true/false."""
    current = query_capabilities(qmp)
    changes, wanted = _plan(current, wanted, 'capability', lambda n, v, c: _to_bool('capability', n, v))
    result = _result(changes, dict((n, current[n]) for n in wanted), wanted)
    if changes and not check_mode:
        set_capabilities(qmp, changes)
        current = query_capabilities(qmp)
    elif changes:
        current.update(changes)
    result.update(capabilities=current, sent=changes)
    return result


def apply_parameters(qmp, wanted, check_mode=False):
    """Set the parameters in ``wanted`` (name -> value)."""
    current = qmp.execute('query-migrate-parameters')
    changes, wanted = _plan(current, wanted, 'parameter', _coerce_parameter)
    result = _result(changes, dict((n, current[n]) for n in wanted), wanted)
    if changes and not check_mode:
        qmp.execute('migrate-set-parameters', changes)
        current = qmp.execute('query-migrate-parameters')
    elif changes:
        current.update(changes)
    result.update(parameters=current, sent=changes)
    return result
