# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Starting, stopping and borrowing from QEMU processes: launch_daemonized with a
shell script standing in for QEMU, shutdown_ladder, take_fd and tap_fd_of."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import struct
import subprocess
import time

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils import _proc
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    LaunchError, launch_daemonized, launch_detached, shutdown_ladder, take_fd, tap_fd_of,
)

# --- launch_daemonized ------------------------------------------------------

TAP_BUSY = 'qemu-system-x86_64: -netdev tap,id=net0,ifname=tap0: could not configure /dev/net/tun (tap0): ' \
           'Device or resource busy'


@pytest.fixture
def fake_qemu(tmp_path):
    """write(body): an executable shell script standing in for a daemonizing QEMU."""
    def write(body):
        path = tmp_path / 'qemu-system-x86_64'
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(0o755)
        return str(path)
    return write


@pytest.mark.parametrize('body, log', [
    ('exit 0\n', ''),
    ('echo "qemu-system-x86_64: warning: netdev net0 has no peer" >&2\nexit 0\n',
     'qemu-system-x86_64: warning: netdev net0 has no peer\n'),
], ids=['silent', 'warning'])
def test_launch_ok(tmp_path, fake_qemu, body, log):
    log_path = tmp_path / 'qemu.log'
    assert launch_daemonized([fake_qemu(body), '-daemonize'], str(log_path)) is None
    assert log_path.read_text() == log
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600


def test_launch_fails_with_this_launch_output_only(tmp_path, fake_qemu):
    log_path = tmp_path / 'qemu.log'
    log_path.write_text('qemu-system-x86_64: an older failure\nstill older\n')
    argv = [fake_qemu('echo "%s" >&2\nexit 3\n' % TAP_BUSY), '-netdev', 'tap,id=net0,ifname=tap0', '-daemonize']
    with pytest.raises(LaunchError) as caught:
        launch_daemonized(argv, str(log_path))
    exc = caught.value
    assert isinstance(exc, LiveUpdateError)
    assert str(exc) == 'QEMU exited with code 3 at start: %s' % TAP_BUSY
    assert exc.details == dict(argv=argv, rc=3, output=TAP_BUSY)
    # the log keeps the older lines and gets this launch's
    assert log_path.read_text() == 'qemu-system-x86_64: an older failure\nstill older\n%s\n' % TAP_BUSY


def test_launch_fails_stdout_and_stderr(tmp_path, fake_qemu):
    with pytest.raises(LaunchError) as caught:
        launch_daemonized([fake_qemu('echo out\necho err >&2\nexit 1\n')], str(tmp_path / 'qemu.log'))
    assert caught.value.details['output'] == 'out\nerr'


def test_launch_fails_without_output(tmp_path, fake_qemu):
    with pytest.raises(LaunchError, match=r'^QEMU exited with code 1 at start: \(no output\)$') as caught:
        launch_daemonized([fake_qemu('exit 1\n')], str(tmp_path / 'qemu.log'))
    assert caught.value.details['rc'] == 1


def test_launch_output_is_the_tail(tmp_path, fake_qemu):
    body = 'i=0\nwhile [ $i -lt 100 ]; do echo "line $i: ........................................"; ' \
           'i=$((i+1)); done >&2\nexit 1\n'
    with pytest.raises(LaunchError) as caught:
        launch_daemonized([fake_qemu(body)], str(tmp_path / 'qemu.log'))
    output = caught.value.details['output']
    assert len(output) == 2000
    assert output.endswith('line 99: ........................................')


def test_launch_passes_fds(tmp_path, fake_qemu):
    """The tap fds taken from the source reach the destination under their numbers."""
    read_end, write_end = os.pipe()
    try:
        launch_daemonized([fake_qemu('echo "tap on fd $1" >/proc/self/fd/$1\n'), str(write_end)], str(tmp_path / 'qemu.log'),
                          pass_fds=[write_end])
        os.close(write_end)
        assert os.read(read_end, 100) == b'tap on fd %d\n' % write_end
        assert os.read(read_end, 100) == b''  # no copy of the write end is left open
    finally:
        os.close(read_end)


def test_launch_closes_other_fds(tmp_path, fake_qemu):
    inheritable = os.open('/dev/null', os.O_RDONLY)
    os.set_inheritable(inheritable, True)
    try:
        with pytest.raises(LaunchError, match='closed'):
            launch_daemonized([fake_qemu('[ -e /proc/self/fd/%d ] && echo open || echo closed\nexit 1\n' % inheritable)],
                              str(tmp_path / 'qemu.log'))
    finally:
        os.close(inheritable)


def test_launch_missing_binary(tmp_path):
    with pytest.raises(OSError):
        launch_daemonized([str(tmp_path / 'no-such-qemu')], str(tmp_path / 'qemu.log'))


def test_bug_launch_timeout_is_not_a_launch_error(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setattr(_proc, 'LAUNCH_TIMEOUT', 0.2)
    with pytest.raises(LaunchError, match='did not start within') as caught:
        launch_daemonized([fake_qemu('echo "waiting for a client" >&2\nexec sleep 10\n')], str(tmp_path / 'qemu.log'))
    assert caught.value.details['rc'] is None


# --- launch_detached: started without -daemonize, output kept for its whole life ----

def test_launch_detached_keeps_output_after_ready(tmp_path, fake_qemu):
    log_path, ready = tmp_path / 'qemu.log', tmp_path / 'ready'
    argv = [fake_qemu('touch %s\nsleep 0.2\necho "load of migration failed: Invalid argument" >&2\n'
                      'exec sleep 30\n' % ready)]
    child = launch_detached(argv, str(log_path), ready.exists, timeout=10)
    try:
        assert child.poll() is None
        assert os.getsid(child.pid) == child.pid  # a session of its own
        deadline = time.monotonic() + 5
        while 'Invalid argument' not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log_path.read_text() == 'load of migration failed: Invalid argument\n'
    finally:
        child.kill()
        child.wait()


def test_launch_detached_exits_before_ready(tmp_path, fake_qemu):
    log_path = tmp_path / 'qemu.log'
    log_path.write_text('an older failure\n')
    argv = [fake_qemu('echo "%s" >&2\nexit 3\n' % TAP_BUSY)]
    with pytest.raises(LaunchError) as caught:
        launch_detached(argv, str(log_path), lambda: False, timeout=10)
    assert str(caught.value) == 'QEMU exited with code 3 at start: %s' % TAP_BUSY
    assert caught.value.details['rc'] == 3


def test_launch_detached_never_ready(tmp_path, fake_qemu):
    start = time.monotonic()
    with pytest.raises(LaunchError, match=r'QEMU did not start within 0.3s: \(no output\)') as caught:
        launch_detached([fake_qemu('exec sleep 30\n')], str(tmp_path / 'qemu.log'), lambda: False, timeout=0.3)
    assert time.monotonic() - start < 3
    assert caught.value.details['rc'] is None


# --- shutdown_ladder ----------------------------------------------------------

STEP = 0.15


def _started(child, comm):
    """Wait until the child has exec'd ``comm`` (its signal dispositions are set by then)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open('/proc/%d/comm' % child.pid) as handle:
                if handle.read().strip() == comm:
                    return child
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError('child did not start %s' % comm)


@pytest.fixture
def children():
    started = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def _quit_fails():
    raise LiveUpdateError('QMP command quit failed: the peer went away')


# the child, what request_quit does, the step that ends it
LADDER = [
    pytest.param('reads-quit', 'write', 'quit', id='quit'),
    pytest.param('default', 'nothing', 'SIGTERM', id='quit-ignored-SIGTERM'),
    pytest.param('default', 'raise', 'SIGTERM', id='quit-failed-SIGTERM'),
    pytest.param('ignores-term', 'nothing', 'SIGKILL', id='SIGTERM-ignored-SIGKILL'),
    pytest.param('ignores-term', 'raise', 'SIGKILL', id='quit-failed-SIGTERM-ignored-SIGKILL'),
]


@pytest.mark.parametrize('kind, quit, method', LADDER)
def test_shutdown_ladder(children, kind, quit, method):
    if kind == 'reads-quit':
        child = subprocess.Popen(['sh', '-c', 'read line; exec sleep 0'], stdin=subprocess.PIPE)
        _started(child, 'sh')
    elif kind == 'default':
        child = _started(subprocess.Popen(['sleep', '30']), 'sleep')
    else:
        # the ignored SIGTERM survives the exec into sleep
        child = _started(subprocess.Popen(['sh', '-c', "trap '' TERM; exec sleep 30"]), 'sleep')
    children.append(child)
    requests = []

    def request_quit():
        requests.append(time.monotonic())
        if quit == 'write':
            child.stdin.write(b'quit\n')
            child.stdin.flush()
        elif quit == 'raise':
            _quit_fails()

    start = time.monotonic()
    assert shutdown_ladder(child.pid, request_quit, STEP) == method
    elapsed = time.monotonic() - start
    assert len(requests) == 1
    child.wait()
    expected_signal = {'quit': None, 'SIGTERM': signal.SIGTERM, 'SIGKILL': signal.SIGKILL}[method]
    assert child.returncode == (0 if expected_signal is None else -expected_signal)
    # each step waits at most STEP; a failed quit request is not waited for
    steps = {'quit': 1, 'SIGTERM': 2, 'SIGKILL': 3}[method] - (1 if quit == 'raise' else 0)
    assert elapsed < steps * STEP + 0.3


def test_shutdown_ladder_process_already_gone():
    child = subprocess.Popen(['true'])
    child.wait()
    assert shutdown_ladder(child.pid, _quit_fails, STEP) == 'SIGTERM'


# --- take_fd ----------------------------------------------------------------

@pytest.fixture
def holder(tmp_path, children):
    """A child process holding ``data.bin`` open (read-write) on fd 'fd'; the parent's copy is closed."""
    path = tmp_path / 'data.bin'
    path.write_bytes(b'0123456789')
    fd = os.open(str(path), os.O_RDWR)
    return _sleeper_holding(fd, children), fd, path


def _sleeper_holding(fd, children):
    """A ``sleep`` child that inherits ``fd`` under the same number; the parent's copy is closed."""
    try:
        child = subprocess.Popen(['sleep', '30'], pass_fds=(fd,))
    finally:
        os.close(fd)
    children.append(_started(child, 'sleep'))
    return child


def test_take_fd_duplicates_the_open_file(holder):
    child, fd, path = holder
    taken = take_fd(child.pid, fd)
    try:
        st = os.fstat(taken)
        assert (st.st_dev, st.st_ino) == (os.stat(path).st_dev, os.stat(path).st_ino)
        # the same open file description, not a second open: the child's offset moves
        os.write(taken, b'ab')
        with open('/proc/%d/fdinfo/%d' % (child.pid, fd)) as handle:
            assert 'pos:\t2\n' in handle.read()
        assert path.read_bytes() == b'ab23456789'
        # close-on-exec until launch_daemonized passes it on (pass_fds)
        assert not os.get_inheritable(taken)
    finally:
        os.close(taken)


def test_take_fd_not_open(holder):
    child, dummy, dummy2 = holder
    with pytest.raises(LiveUpdateError, match='cannot take fd 99 of pid %d: Bad file descriptor' % child.pid):
        take_fd(child.pid, 99)


def test_take_fd_process_gone():
    child = subprocess.Popen(['true'])
    child.wait()
    with pytest.raises(OSError):
        take_fd(child.pid, 0)


# --- tap_fd_of --------------------------------------------------------------

TUNSETIFF = 0x400454ca
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


@pytest.fixture
def tap_holder(children):
    """A child process holding a (non-persistent) tap interface open, as QEMU does."""
    ifname = 'lut%d' % (os.getpid() % 100000)
    try:
        fd = os.open('/dev/net/tun', os.O_RDWR)
    except OSError as exc:
        pytest.skip('no /dev/net/tun: %s' % exc)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', ifname.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        pytest.skip('cannot create a tap here: %s' % exc)
    return _sleeper_holding(fd, children), fd, ifname


def test_tap_fd_of(tap_holder):
    child, fd, ifname = tap_holder
    assert tap_fd_of(child.pid, ifname) == fd
    assert tap_fd_of(child.pid, ifname + '0') is None
    assert tap_fd_of(child.pid, ifname[:-1]) is None
    # the fd taken from it is the same tap
    taken = take_fd(child.pid, fd)
    try:
        assert 'iff:\t%s\n' % ifname in open('/proc/self/fdinfo/%d' % taken).read()
    finally:
        os.close(taken)


def test_tap_fd_of_no_tap(children):
    child = _started(subprocess.Popen(['sleep', '30']), 'sleep')
    children.append(child)
    assert tap_fd_of(child.pid, 'tap0') is None
