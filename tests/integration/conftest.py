# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration tests: real ansible-playbook runs against real QEMU processes
and real guests (TCG). scripts/setup.sh provides the environment:

- ANSIBLE_COLLECTIONS_PATH: the installed collection
- LIVEUPDATE_GUEST_DIR: vmlinux + initramfs.gz of the test guest (tools/build-guest.sh)
- LIVEUPDATE_DEBIAN_GUEST_DIR: the Debian 12 guest with systemd and nginx (tools/build-debian-guest.sh)
- LIVEUPDATE_OLD_QEMU: the older QEMU build staged side by side (roles/qemu_build/files/stage-qemu.sh)
- LIVEUPDATE_NEW_QEMU, LIVEUPDATE_NEW_QEMU_VERSION: QEMU 10.0 of bookworm-backports staged side by side,
  and its Debian version (empty when setup.sh could not reach that suite: the tests that need them fail)
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import Ansible, guest_log, qemu_pids_under  # noqa: E402
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import QemuProcess  # noqa: E402
from operator_vm import SHM_PREFIX, OperatorVM  # noqa: E402


def _required_env(name):
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError('%s is not set: run the tests through scripts/test.sh (or source .build/env.sh)' % name)
    return value


@pytest.fixture(scope='session')
def guest_dir():
    path = _required_env('LIVEUPDATE_GUEST_DIR')
    for name in ('vmlinux', 'initramfs.gz'):
        assert os.path.isfile(os.path.join(path, name)), 'test guest incomplete: %s/%s' % (path, name)
    return path


@pytest.fixture(scope='session')
def debian_guest():
    """The Debian 12 guest (systemd, nginx; tools/build-debian-guest.sh): its guest.json, with
    the directory as ``dir``."""
    path = _required_env('LIVEUPDATE_DEBIAN_GUEST_DIR')
    with open(os.path.join(path, 'guest.json')) as handle:
        guest = json.load(handle)
    for key in ('vmlinux', 'initrd', 'rootfs'):
        assert os.path.isfile(os.path.join(path, guest[key])), 'Debian guest incomplete: %s/%s' % (path, guest[key])
    return dict(guest, dir=path)


@pytest.fixture(scope='session')
def old_qemu():
    path = _required_env('LIVEUPDATE_OLD_QEMU')
    assert os.access(path, os.X_OK), 'staged old QEMU %s is not executable' % path
    return path


@pytest.fixture(scope='session')
def new_qemu():
    """The wrapper of QEMU 10.0 (bookworm-backports) that setup.sh staged. Its tests fail, not
    skip, without it: a major upgrade is what they prove."""
    path = _required_env('LIVEUPDATE_NEW_QEMU')
    assert os.access(path, os.X_OK), 'staged new QEMU %s is not executable' % path
    return path


@pytest.fixture(scope='session')
def new_qemu_version():
    """The Debian version of new_qemu's build (1:10.0.2+ds-...)."""
    return _required_env('LIVEUPDATE_NEW_QEMU_VERSION')


@pytest.fixture(scope='session')
def runtime_dir():
    """A runtime directory of this session; every QEMU left under it is killed at the end."""
    path = '/run/liveupdate-qemu-test-%d' % os.getpid()
    os.makedirs(path, mode=0o755)
    yield path
    # Only this session's memory files: another test session may run beside this one.
    memory_files = set()
    for pid in qemu_pids_under(path):
        proc = QemuProcess.from_pid(pid)
        if proc is not None:
            memory_files.update(b.get('mem-path') for b in proc.cmdline.memory_backends())
            os.kill(pid, signal.SIGKILL)
    for state in glob.glob(os.path.join(path, '*', 'vm.json')):
        with open(state) as handle:
            memory_files.add(json.load(handle).get('memory_file'))
    time.sleep(0.2)
    for memory_file in memory_files:
        if memory_file and os.path.basename(memory_file).startswith('liveupdate-qemu-lut-') \
                and os.path.exists(memory_file):
            os.unlink(memory_file)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='session')
def ansible(runtime_dir, tmp_path_factory):
    _required_env('ANSIBLE_COLLECTIONS_PATH')
    return Ansible(tmp_path_factory.mktemp('playbooks'), runtime_dir)


@pytest.fixture(scope='session')
def guest_spec(guest_dir):
    """Module arguments for a VM that boots the test guest (TCG: /dev/kvm may not run guests)."""
    def spec(name, **extra):
        args = dict(name=name, memory='256M', accel=['tcg'],
                    kernel=os.path.join(guest_dir, 'vmlinux'), initrd=os.path.join(guest_dir, 'initramfs.gz'),
                    append='console=ttyS0 quiet lu.fill_mb=8')
        args.update(extra)
        return args
    return spec


@pytest.fixture(scope='session')
def bare_spec():
    """Module arguments for a VM with no guest OS (its firmware finds nothing to boot and
    waits): a real QEMU that starts in 0.1 s."""
    def spec(name, **extra):
        args = dict(name=name, memory='128M', accel=['tcg'], serial=False)
        args.update(extra)
        return args
    return spec


@pytest.fixture(scope='session')
def shared_vm(ansible, guest_spec):
    """One booted guest shared by the tests that only read it or restore what they change."""
    args = guest_spec('lut-shared')
    result = ansible.module('vm', args)
    assert result['changed'], result
    vm = result['vm']
    log = guest_log(vm['serial_log'])
    log.wait(lambda s: s.mem_ok >= 1, timeout=120)
    vm['args'] = args
    yield vm
    ansible.module('vm', dict(name='lut-shared', state='stopped'))


@pytest.fixture(scope='session')
def operator_root():
    """Where hand-launched VMs (operator_vm) keep their sockets and pidfiles: a directory of
    the operator's, not the collection's runtime directory. Anything left under it is killed
    and removed at the end of the session."""
    path = '/run/lu-op-%d' % os.getpid()
    os.makedirs(path, mode=0o755)
    yield path
    for pid in qemu_pids_under(path):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    for entry in os.listdir('/dev/shm'):
        if entry.startswith('%s%d-' % (SHM_PREFIX, os.getpid())):
            os.unlink(os.path.join('/dev/shm', entry))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def operator_vm(operator_root, guest_dir, old_qemu):
    """Factory of VMs launched by hand (tests/integration/operator_vm.py), by default on the
    older QEMU build: ``operator_vm('name', machine='pc', serial='file', ...)`` starts one and
    returns its OperatorVM. Each is killed at teardown, with its memory file and sockets, and
    the teardown fails if a QEMU, the memory file or the directory is still there after that."""
    vms = []

    def launch(name, binary=None, **options):
        vm = OperatorVM(operator_root, name, binary or old_qemu, guest_dir, **options)
        vms.append(vm)
        return vm.start()

    yield launch
    left = []
    for vm in vms:
        left += vm.destroy()
    assert left == [], 'left behind by hand-launched VMs: %s' % left
