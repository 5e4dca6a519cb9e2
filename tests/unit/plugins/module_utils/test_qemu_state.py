# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a running QEMU reports over QMP, parsed: host_forwards from 'info usernet'."""

from __future__ import annotations

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import host_forwards

from fakes import FakeQMP


# --- host_forwards: 'info usernet' of QEMU 7.2 --------------------------------

# Real replies of QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18+b3) to human-monitor-command 'info usernet'.
# -netdev user,id=net0,hostfwd=tcp:127.0.0.1:25999-:80,hostfwd=udp::26000-:53
USERNET_ONE = (
    'Hub -1 (net0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   8       127.0.0.1 25999       10.0.2.15    80     0     0\r\n'
    '  UDP[HOST_FORWARD]   3               * 26000       10.0.2.15    53     0     0\r\n')
# -netdev user,id=net0,hostfwd=tcp:127.0.0.1:25999-:80 -device virtio-net-pci,netdev=net0
# -netdev user,id=lan1,hostfwd=tcp::26001-10.0.2.20:22,hostfwd=tcp:0.0.0.0:26002-:443 -device e1000,netdev=lan1
# -netdev user,id=nofwd -device e1000,netdev=nofwd
USERNET_THREE = (
    'Hub -1 (net0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   3       127.0.0.1 25999       10.0.2.15    80     0     0\r\n'
    'Hub -1 (lan1):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   9               * 26001       10.0.2.20    22     0     0\r\n'
    '  TCP[HOST_FORWARD]   8               * 26002       10.0.2.15   443     0     0\r\n'
    'Hub -1 (nofwd):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n')
# the same net0 while a host client connects through the forward (no guest answers)
USERNET_CONNECTING = (
    'Hub -1 (net0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[SYN_SENT]      12       127.0.0.1 25999       10.0.2.15    80     0     0\r\n'
    '  TCP[HOST_FORWARD]  11       127.0.0.1 25999       10.0.2.15    80     0     0\r\n')
# -netdev user,id=n0 (no forwards)
USERNET_NONE = (
    'Hub -1 (n0):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n')
# -net nic -net user,hostfwd=tcp::26003-:22 (legacy: a hub port with a generated id)
USERNET_LEGACY = (
    'Hub 0 (#net132):\r\n'
    '  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n'
    '  TCP[HOST_FORWARD]   3               * 26003       10.0.2.15    22     0     0\r\n')


@pytest.mark.parametrize('text, rules', [
    (USERNET_ONE, [('net0', 'tcp:127.0.0.1:25999-10.0.2.15:80'), ('net0', 'udp::26000-10.0.2.15:53')]),
    (USERNET_THREE, [('net0', 'tcp:127.0.0.1:25999-10.0.2.15:80'), ('lan1', 'tcp::26001-10.0.2.20:22'),
                     ('lan1', 'tcp::26002-10.0.2.15:443')]),
    (USERNET_CONNECTING, [('net0', 'tcp:127.0.0.1:25999-10.0.2.15:80')]),
    (USERNET_NONE, []),
    (USERNET_LEGACY, [('#net132', 'tcp::26003-10.0.2.15:22')]),
    ('', []),
], ids=['one-netdev', 'three-netdevs', 'connection-in-progress', 'no-forwards', 'legacy-net', 'no-user-netdev'])
def test_host_forwards(text, rules):
    qmp = FakeQMP(human_monitor_command=text)
    assert host_forwards(qmp) == rules
    assert qmp.calls == [('human-monitor-command', {'command-line': 'info usernet'})]


def test_host_forwards_rules_are_hostfwd_add_syntax():
    """Every rule reads back as 'hostfwd_add NETDEV RULE' takes it
    (PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT); measured: hostfwd_add of the
    rules of USERNET_ONE on a bare net0 gives the same 'info usernet' lines."""
    for dummy, rule in host_forwards(FakeQMP(human_monitor_command=USERNET_THREE + USERNET_ONE)):
        proto, rest = rule.split(':', 1)
        host, guest = rest.split('-')
        assert proto in ('tcp', 'udp')
        assert host.rsplit(':', 1)[1].isdigit() and guest.rsplit(':', 1)[1].isdigit()
        assert '*' not in host and '0.0.0.0' not in host
