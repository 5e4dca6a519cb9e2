# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._migration_settings import (
    apply_capabilities, apply_parameters,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPCommandError

# A subset of what QEMU 7.2 reports.
CAPABILITIES = {'xbzrle': False, 'postcopy-ram': False, 'x-ignore-shared': False, 'events': False,
                'multifd': False}
PARAMETERS = {'max-bandwidth': 134217728, 'downtime-limit': 300, 'multifd-channels': 2,
              'tls-creds': '', 'block-incremental': False, 'announce-rounds': 5}


class FakeQMP:
    """Records commands; answers the queries; refuses what QEMU would refuse."""

    def __init__(self, capabilities=None, parameters=None):
        self.capabilities = dict(CAPABILITIES if capabilities is None else capabilities)
        self.parameters = dict(PARAMETERS if parameters is None else parameters)
        self.commands = []

    @property
    def sets(self):
        return [(cmd, args) for cmd, args in self.commands if not cmd.startswith('query-')]

    def execute(self, cmd, args=None):
        self.commands.append((cmd, copy.deepcopy(args)))
        if cmd == 'query-migrate-capabilities':
            return [dict(capability=k, state=v) for k, v in self.capabilities.items()]
        if cmd == 'query-migrate-parameters':
            return dict(self.parameters)
        if cmd == 'migrate-set-capabilities':
            new = dict(self.capabilities, **dict((c['capability'], c['state']) for c in args['capabilities']))
            if new['postcopy-ram'] and new['x-ignore-shared']:
                raise QMPCommandError(cmd, 'GenericError', 'Postcopy is not compatible with ignore-shared')
            self.capabilities = new
            return {}
        if cmd == 'migrate-set-parameters':
            if args.get('multifd-channels', 1) < 1:
                raise QMPCommandError(cmd, 'GenericError', "Parameter 'multifd-channels' expects a value "
                                                           "between 1 and 255")
            self.parameters.update(args)
            return {}
        raise AssertionError('unexpected command %s' % cmd)


# --- capabilities -----------------------------------------------------------

@pytest.mark.parametrize('value, expected', [
    (True, True), ('yes', True), ('true', True), ('on', True), ('1', True), (1, True),
    (False, False), ('no', False), ('false', False), ('off', False), (0, False),
])
def test_capability_bool_coercion(value, expected):
    qmp = FakeQMP(dict(CAPABILITIES, **{'x-ignore-shared': not expected}))
    result = apply_capabilities(qmp, {'x-ignore-shared': value})
    assert result['changed'] is True
    assert result['sent'] == {'x-ignore-shared': expected}
    assert qmp.sets == [('migrate-set-capabilities',
                         {'capabilities': [{'capability': 'x-ignore-shared', 'state': expected}]})]
    assert result['capabilities']['x-ignore-shared'] is expected


@pytest.mark.parametrize('value', ['maybe', 2, '', None, ['yes']])
def test_capability_non_bool_rejected(value):
    qmp = FakeQMP()
    with pytest.raises(InvalidInput, match='migration capability x-ignore-shared needs true or false'):
        apply_capabilities(qmp, {'x-ignore-shared': value})
    assert qmp.sets == []


def test_capability_unknown_names():
    qmp = FakeQMP()
    with pytest.raises(InvalidInput) as info:
        apply_capabilities(qmp, {'x-ignore-shared': True, 'zero-copy': True, 'bogus': False})
    msg = str(info.value)
    assert 'unknown migration capability bogus, zero-copy' in msg
    assert 'events, multifd, postcopy-ram, x-ignore-shared, xbzrle' in msg
    assert info.value.details['known'] == sorted(CAPABILITIES)
    assert qmp.sets == []


def test_capability_only_changed_sent():
    qmp = FakeQMP(dict(CAPABILITIES, events=True))
    result = apply_capabilities(qmp, {'events': True, 'x-ignore-shared': True, 'xbzrle': False})
    assert qmp.sets == [('migrate-set-capabilities',
                         {'capabilities': [{'capability': 'x-ignore-shared', 'state': True}]})]
    assert result['changed'] is True
    assert result['sent'] == {'x-ignore-shared': True}
    assert result['diff'] == dict(before={'events': True, 'x-ignore-shared': False, 'xbzrle': False},
                                  after={'events': True, 'x-ignore-shared': True, 'xbzrle': False})
    # re-read after the change
    sent = [cmd for cmd, dummy in qmp.commands]
    assert sent == ['query-migrate-capabilities', 'migrate-set-capabilities', 'query-migrate-capabilities']


def test_capability_nothing_to_change():
    qmp = FakeQMP(dict(CAPABILITIES, **{'x-ignore-shared': True}))
    result = apply_capabilities(qmp, {'x-ignore-shared': 'yes', 'postcopy-ram': 'no'})
    assert result['changed'] is False
    assert result['sent'] == {}
    assert qmp.sets == []
    assert result['diff']['before'] == result['diff']['after']


def test_capability_check_mode():
    qmp = FakeQMP()
    result = apply_capabilities(qmp, {'x-ignore-shared': True, 'events': 'false'}, check_mode=True)
    assert qmp.sets == []
    assert result['changed'] is True
    assert result['sent'] == {'x-ignore-shared': True}
    assert result['diff'] == dict(before={'x-ignore-shared': False, 'events': False},
                                  after={'x-ignore-shared': True, 'events': False})
    assert result['capabilities'] == dict(CAPABILITIES, **{'x-ignore-shared': True})
    assert qmp.capabilities == CAPABILITIES


def test_capability_refused_by_qemu():
    qmp = FakeQMP(dict(CAPABILITIES, **{'postcopy-ram': True}))
    with pytest.raises(QMPCommandError) as info:
        apply_capabilities(qmp, {'x-ignore-shared': True})
    assert info.value.error_class == 'GenericError'
    assert 'ignore-shared' in info.value.desc
    assert [cmd for cmd, dummy in qmp.commands] == ['query-migrate-capabilities', 'migrate-set-capabilities']
    assert qmp.capabilities['x-ignore-shared'] is False


# --- parameters -------------------------------------------------------------

@pytest.mark.parametrize('wanted, sent', [
    ({'downtime-limit': '1000'}, {'downtime-limit': 1000}),
    ({'downtime-limit': 1000}, {'downtime-limit': 1000}),
    ({'downtime-limit': ' 1000 '}, {'downtime-limit': 1000}),
    ({'max-bandwidth': '0x10000000'}, {'max-bandwidth': 0x10000000}),
    ({'block-incremental': 'yes'}, {'block-incremental': True}),
    ({'tls-creds': 'tls0'}, {'tls-creds': 'tls0'}),
    ({'tls-creds': 5}, {'tls-creds': '5'}),
    ({'downtime-limit': 300, 'multifd-channels': '8'}, {'multifd-channels': 8}),
])
def test_parameter_coercion(wanted, sent):
    qmp = FakeQMP()
    result = apply_parameters(qmp, wanted)
    assert result['changed'] is True
    assert result['sent'] == sent
    assert qmp.sets == [('migrate-set-parameters', sent)]
    assert all(result['parameters'][k] == v for k, v in sent.items())


@pytest.mark.parametrize('wanted, message', [
    ({'downtime-limit': 'fast'}, "downtime-limit needs an integer, got 'fast'"),
    ({'downtime-limit': '1.5'}, 'downtime-limit needs an integer'),
    ({'downtime-limit': True}, 'downtime-limit needs an integer, got True'),
    ({'downtime-limit': None}, 'downtime-limit needs an integer'),
    ({'block-incremental': 'sometimes'}, 'parameter block-incremental needs true or false'),
    ({'tls-creds': True}, 'tls-creds needs a string, got True'),
    ({'tls-creds': ['a']}, 'tls-creds needs a string'),
    ({'bogus': 1, 'downtime-limit': 1}, 'unknown migration parameter bogus; this QEMU knows: announce-rounds, '),
])
def test_parameter_rejected(wanted, message):
    qmp = FakeQMP()
    with pytest.raises(InvalidInput, match=message):
        apply_parameters(qmp, wanted)
    assert qmp.sets == []


def test_parameter_nothing_to_change():
    qmp = FakeQMP()
    result = apply_parameters(qmp, {'downtime-limit': '300', 'tls-creds': '', 'block-incremental': 'no'})
    assert result['changed'] is False
    assert result['sent'] == {}
    assert qmp.sets == []
    assert result['parameters'] == PARAMETERS


def test_parameter_check_mode():
    qmp = FakeQMP()
    result = apply_parameters(qmp, {'downtime-limit': '1000', 'announce-rounds': 5}, check_mode=True)
    assert qmp.sets == []
    assert result['changed'] is True
    assert result['sent'] == {'downtime-limit': 1000}
    assert result['diff'] == dict(before={'downtime-limit': 300, 'announce-rounds': 5},
                                  after={'downtime-limit': 1000, 'announce-rounds': 5})
    assert result['parameters'] == dict(PARAMETERS, **{'downtime-limit': 1000})
    assert qmp.parameters == PARAMETERS


def test_parameter_refused_by_qemu():
    qmp = FakeQMP()
    with pytest.raises(QMPCommandError, match='multifd-channels'):
        apply_parameters(qmp, {'multifd-channels': 0})
    assert [cmd for cmd, dummy in qmp.commands] == ['query-migrate-parameters', 'migrate-set-parameters']
    assert qmp.parameters == PARAMETERS
