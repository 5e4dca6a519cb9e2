# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""liveupdate.qemu.migrate_capabilities and migrate_parameters on a real QEMU."""

from __future__ import annotations

import pytest


@pytest.fixture(scope='module')
def settings_vm(ansible, bare_spec):
    result = ansible.module('vm', bare_spec('lut-settings'))
    assert result['changed'], result
    yield result['vm']
    ansible.module('vm', dict(name='lut-settings', state='stopped'))


def query(ansible, command):
    return ansible.module('qmp_command', {'name': 'lut-settings', 'command': command})['result']


def capabilities(ansible):
    return dict((c['capability'], c['state']) for c in query(ansible, 'query-migrate-capabilities'))


def test_capabilities_check_real_again(ansible, settings_vm):
    args = {'name': 'lut-settings', 'capabilities': {'x-ignore-shared': True, 'events': 'yes', 'xbzrle': False}}
    task = [{'liveupdate.qemu.migrate_capabilities': args}]
    check = ansible.play(task, check=True, diff=True)
    assert check.results[0]['changed'] is True
    assert check.results[0]['sent'] == {'x-ignore-shared': True, 'events': True}
    assert check.results[0]['diff'] == {'before': {'x-ignore-shared': False, 'events': False, 'xbzrle': False},
                                        'after': {'x-ignore-shared': True, 'events': True, 'xbzrle': False}}
    assert '+    "x-ignore-shared": true' in check.stdout
    assert capabilities(ansible)['x-ignore-shared'] is False

    real = ansible.module('migrate_capabilities', args)
    assert real['changed'] is True and real['capabilities']['x-ignore-shared'] is True
    live = capabilities(ansible)
    assert live['x-ignore-shared'] is True and live['events'] is True

    again = ansible.module('migrate_capabilities', args)
    assert again['changed'] is False and again['sent'] == {}


def test_capabilities_refused_by_qemu_change_nothing(ansible, settings_vm):
    ansible.module('migrate_capabilities', {'name': 'lut-settings', 'capabilities': {'x-ignore-shared': True}})
    before = capabilities(ansible)
    result = ansible.module('migrate_capabilities', {'name': 'lut-settings',
                                                     'capabilities': {'postcopy-ram': True, 'xbzrle': True}})
    assert result['failed'] and result['error_class'] == 'GenericError'
    assert 'Postcopy is not compatible with ignore-shared' in result['msg']
    assert capabilities(ansible) == before


@pytest.mark.parametrize('capabilities_arg, expected', [
    ({'no-such-capability': True}, 'unknown migration capability no-such-capability; this QEMU knows: '),
    ({'events': 'maybe'}, "migration capability events needs true or false, got 'maybe'"),
])
def test_capabilities_bad_input(ansible, settings_vm, capabilities_arg, expected):
    before = capabilities(ansible)
    result = ansible.module('migrate_capabilities', {'name': 'lut-settings', 'capabilities': capabilities_arg})
    assert result['failed'] and expected in result['msg']
    if 'unknown' in expected:
        assert 'x-ignore-shared' in result['known']
    assert capabilities(ansible) == before


def test_parameters_check_real_again(ansible, settings_vm):
    args = {'name': 'lut-settings', 'parameters': {'max-bandwidth': '1000000', 'downtime-limit': 250}}
    check = ansible.play([{'liveupdate.qemu.migrate_parameters': args}], check=True, diff=True)
    assert check.results[0]['changed'] is True
    assert check.results[0]['sent'] == {'max-bandwidth': 1000000, 'downtime-limit': 250}
    assert check.results[0]['diff']['after'] == {'max-bandwidth': 1000000, 'downtime-limit': 250}
    assert '+    "downtime-limit": 250' in check.stdout
    assert query(ansible, 'query-migrate-parameters')['downtime-limit'] == 300

    real = ansible.module('migrate_parameters', args)
    assert real['changed'] is True and real['parameters']['max-bandwidth'] == 1000000
    assert query(ansible, 'query-migrate-parameters')['downtime-limit'] == 250

    again = ansible.module('migrate_parameters', args)
    assert again['changed'] is False and again['sent'] == {}


@pytest.mark.parametrize('parameters_arg, expected', [
    ({'no-such-parameter': 1}, 'unknown migration parameter no-such-parameter; this QEMU knows: '),
    ({'max-bandwidth': 'fast'}, "migration parameter max-bandwidth needs an integer, got 'fast'"),
    ({'max-bandwidth': True}, 'migration parameter max-bandwidth needs an integer, got True'),
    ({'downtime-limit': 999999999}, 'Parameter'),
])
def test_parameters_bad_input(ansible, settings_vm, parameters_arg, expected):
    before = query(ansible, 'query-migrate-parameters')
    result = ansible.module('migrate_parameters', {'name': 'lut-settings', 'parameters': parameters_arg})
    assert result['failed'] and expected in result['msg'], result['msg']
    assert query(ansible, 'query-migrate-parameters') == before
