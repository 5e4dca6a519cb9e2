# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM saved to files: its device state in a state file, its RAM left in its shared memory file.

A save migrates the VM into a file with x-ignore-shared on (and, on QEMU >= 8.2, the migration mode
``cpr-reboot``), so only device state is written (about 0.5 MB at any RAM size); the QEMU then quits.
A restore starts a new QEMU on the same memory file with ``-incoming`` from the state file: the
guest goes on where it stopped (same boot, same memory). The record (``saved.json``) says what the
state belongs to: the command line, binary, machine type, capabilities, and the identity (size,
mtime) of each memory file, which any write after the save changes — that is what keeps a saved
state from ever being loaded onto other RAM, or twice.

Layout under ``<save_dir>/<name>/``: ``state`` (the migration stream) and ``saved.json`` (the record).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts, canonical_value, is_on
from ansible_collections.liveupdate.qemu.plugins.module_utils._destination import pin_machine
from ansible_collections.liveupdate.qemu.plugins.module_utils._eligibility import memory_reasons, state_reasons, version_tuple
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import filesystem_of, tap_is_persistent, tap_name_of
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import (
    MIGRATION_END, event_time, query_capabilities, restore_capabilities, set_capabilities,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._transfer import cancel_migration
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import validate_name

DEFAULT_SAVE_DIR = '/var/lib/liveupdate-qemu/saved'
RECORD_FORMAT = 1
CPR_REBOOT_FROM = (8, 2)
SAVE_CAPABILITIES = {'events': True, 'x-ignore-shared': True}
# Filesystems whose files a host reboot loses.
VOLATILE_FILESYSTEMS = ('tmpfs', 'ramfs', 'hugetlbfs')
COPY_BLOCK = 4 << 20
# The files of a template (_template).
TEMPLATE_MEMORY = 'memory.ram'
TEMPLATE_RECORD = 'template.json'
DROPPED_AT_RESTORE = ('S', 'incoming', 'daemonize', 'loadvm')
STDIO_FLAGS = ('nographic',)


# --- files ---

def file_identity(path):
    """What changes when anyone writes ``path`` (a write through a shared mapping included)."""
    st = os.stat(path)
    return dict(size=st.st_size, mtime_ns=st.st_mtime_ns)


def unchanged(path, recorded):
    """True when ``path`` has the identity ``recorded`` (a stored file_identity) still."""
    return file_identity(path) == dict(size=recorded['size'], mtime_ns=recorded['mtime_ns'])


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_volatile(path):
    """True when ``path`` is on a filesystem that a host reboot empties."""
    return filesystem_of(os.path.dirname(os.path.abspath(path)) if not os.path.exists(path) else path) \
        in VOLATILE_FILESYSTEMS


def _copy_sparse(src, dst):
    """Copy the data of ``src`` into new file ``dst``, holes left as holes (a guest's RAM file is
    mostly holes: only touched pages take room), then fsync ``dst``."""
    size = os.stat(src).st_size
    with open(src, 'rb') as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            offset = 0
            while offset < size:
                try:
                    data = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                hole = os.lseek(fin.fileno(), data, os.SEEK_HOLE)
                while data < hole:  # (copy_file_range refuses tmpfs -> disk)
                    block = os.pread(fin.fileno(), min(COPY_BLOCK, hole - data), data)
                    if not block:
                        raise OSError(errno.EIO, 'short read of %s' % src, src)
                    written = 0
                    while written < len(block):
                        written += os.pwrite(fd, block[written:], data + written)
                    data += len(block)
                offset = hole
            os.fsync(fd)
        finally:
            os.close(fd)


def move_file(src, dst):
    """Move ``src`` to ``dst``: a rename within a filesystem, else a sparse copy that is complete
    and synced before ``src`` goes (a crash leaves one whole file). Returns 'renamed' or 'copied'."""
    if os.path.lexists(dst):
        raise InvalidInput('cannot move %s to %s: %s already exists' % (src, dst, dst))
    try:
        os.rename(src, dst)
        fsync_path(os.path.dirname(dst), directory=True)
        return 'renamed'
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst + '.moving'
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        _copy_sparse(src, tmp)
        os.chmod(tmp, os.stat(src).st_mode & 0o7777)
        os.rename(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(os.path.dirname(dst), directory=True)
    os.unlink(src)
    return 'copied'


class SavedRecord:
    """The files of one saved VM (or template) in ``directory``."""

    def __init__(self, directory, record_name='saved.json'):
        self.dir = directory
        self.state_file = os.path.join(directory, 'state')
        self.path = os.path.join(directory, record_name)

    @classmethod
    def of(cls, save_dir, name):
        return cls(os.path.join(save_dir, validate_name(name)))

    def exists(self):
        return os.path.exists(self.path)

    def read(self):
        """The record, or None when there is none; InvalidInput when it cannot be used."""
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InvalidInput('saved record %s cannot be read: %s' % (self.path, exc))
        if not isinstance(data, dict) or data.get('format') != RECORD_FORMAT:
            raise InvalidInput('saved record %s is not a record of format %d' % (self.path, RECORD_FORMAT))
        return data

    def write(self, data):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        tmp = self.path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            json.dump(dict(data, format=RECORD_FORMAT), handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, self.path)
        fsync_path(self.dir, directory=True)

    def remove(self):
        """Remove the record first (without it the state is nothing), then the rest."""
        for path in (self.path, self.state_file, self.state_file + '.tmp'):
            if os.path.lexists(path):
                os.unlink(path)
        if os.path.isdir(self.dir) and not os.listdir(self.dir):
            os.rmdir(self.dir)


def template_of(memory_file):
    """The template whose memory file ``memory_file`` is (a clone maps it), or None."""
    directory = os.path.dirname(memory_file or '')
    if os.path.basename(memory_file or '') == TEMPLATE_MEMORY and os.path.exists(os.path.join(directory, TEMPLATE_RECORD)):
        return os.path.basename(directory)
    return None


# --- the command line ---

def _on_stdio(name, value, opts):
    return bool(value) and (value == 'stdio' or value.startswith('stdio,')
                            or name == 'chardev' and opts.head() == 'stdio')


def restore_refusals(argv, vm):
    """Why the VM of ``argv`` (``vm``: _qemu_state.query_vm) cannot be saved and started again
    from its state file by a new QEMU of the same command line."""
    reasons = state_reasons(vm) + memory_reasons(vm)
    cmdline = QemuCommandLine.parse(argv)
    for name, value in cmdline.options:
        opts = QemuOpts.parse(value) if value else None
        if name == 'snapshot' or name in ('drive', 'blockdev') and is_on(opts.get('snapshot', 'off')):
            reasons.append('-%s: its disks write to temporary files that end with the QEMU' % name)
        elif name in STDIO_FLAGS or _on_stdio(name, value, opts):
            reasons.append('-%s %s: a console on the stdio of the running QEMU cannot be reopened'
                           % (name, value or ''))
        elif name == 'add-fd':
            reasons.append('-add-fd %s: file descriptors of the running QEMU end with it' % value)
        elif name == 'netdev' and opts.get('type', implied='type') == 'tap' and any(
                opts.get(key) for key in ('fd', 'fds', 'vhostfd', 'vhostfds')):
            reasons.append('-netdev %s: a tap passed by file descriptor, which is not a persistent interface, '
                           'ends with the QEMU; make the interface persistent (ip tuntap add ...)' % value)
        elif name == 'netdev' and opts.get('type', implied='type') == 'stream':
            reasons.append('-netdev %s: the connection to its network process (passt) ends with the QEMU, and '
                           'with it the process; use a tap or QEMU\'s user-mode networking for a VM to save' % value)
    return reasons


def saved_command(proc):
    """The command line to save for QEMU ``proc``: its own, with what a live update changed in it
    undone - temporary socket and pidfile names back to the canonical ones, and each tap handed
    over by fd named by its interface again when that interface outlives the process."""
    options = []
    for name, value in proc.cmdline.options:
        if value is not None:
            value = canonical_value(value)
        if name == 'netdev':
            opts = QemuOpts.parse(value)
            fd = opts.get('fd')
            if opts.get('type', implied='type') == 'tap' and fd and fd.isdigit():
                ifname = tap_name_of(proc.pid, int(fd))
                if ifname and tap_is_persistent(ifname):
                    opts.remove('fd')
                    for key, setting in (('ifname', ifname), ('script', 'no'), ('downscript', 'no')):
                        opts.set(key, setting)
                    value = opts.format()
        options.append((name, value))
    return QemuCommandLine(proc.argv[0], options).argv()


def restore_command(argv, binary, machine_type, incoming=(('incoming', 'defer'),)):
    """The command line that starts a saved VM again: its own, on ``binary``, with the machine type
    pinned to the one it ran, paused (-S) and waiting for its state (``incoming``), not daemonized
    (the engine keeps its output)."""
    source = QemuCommandLine.parse(argv)
    options, machine_seen = [], False
    for name, value in source.options:
        if name in DROPPED_AT_RESTORE:
            continue
        if name in ('machine', 'M'):
            machine_seen = True
            name, value = 'machine', pin_machine(value, machine_type)
        elif name in ('serial', 'parallel') and value and value.startswith('file:'):
            # file:PATH would truncate the VM's console log: the same file, appended to.
            chardev_id = 'lu-%s%d' % (name, sum(1 for n, dummy in options if n == name))
            options.append(('chardev', QemuOpts([(None, 'file'), ('id', chardev_id), ('path', value[len('file:'):]),
                                                 ('append', 'on')]).format()))
            value = 'chardev:' + chardev_id
        elif name == 'chardev':
            # The restored QEMU continues the VM's logs, never truncates them.
            opts = QemuOpts.parse(value)
            if opts.head() == 'file':
                opts.set('append', 'on')
            if opts.get('logfile'):
                opts.set('logappend', 'on')
            value = opts.format()
        options.append((name, value))
    if not machine_seen:
        options.insert(0, ('machine', machine_type))
    return QemuCommandLine(binary, options + [('S', None)] + list(incoming)).argv()


def directories_of(argv):
    """{directory: mode} of the directories the sockets, pidfile and logs of ``argv`` are in
    (a host reboot empties /run: a restore creates them again)."""
    cmdline = QemuCommandLine.parse(argv)
    paths = list(cmdline.chardev_sockets().values()) + cmdline.qmp_sockets() + cmdline.values('pidfile')
    paths += [o.get('logfile') for o in cmdline.opts('chardev') if o.get('logfile')]
    found = {}
    for path in paths:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            found[directory] = os.stat(directory).st_mode & 0o7777
        except OSError:
            continue
    return found


def record_of(source, vm, state_file, saved):
    """What a record holds of VM ``source`` (a _locate.Source; ``vm``: query_vm) saved into
    ``state_file`` by save_state (``saved``, its result)."""
    proc = source.proc
    vm_state = source.paths.read_state() if source.paths else None
    return dict(argv=saved_command(proc),
                # The binary as the VM was started: a staged build runs through a wrapper (QEMU_MODULE_DIR).
                binary=(vm_state or {}).get('binary') or proc.exe,
                version=vm['running'], machine=vm['machine'], run_status=vm['status'], cwd=proc.cwd(),
                memory_files=memory_files(vm), vm_state=vm_state, state_bytes=os.path.getsize(state_file),
                state_sha256=sha256_of(state_file), **saved)


def memory_files(vm):
    """The paths of the VM's memory files (after memory_reasons: all are named, shared files)."""
    return [b['path'] for b in vm['memory_backends']]


# --- save and load ---

def uses_cpr_reboot(version):
    return version_tuple(version) >= CPR_REBOOT_FROM


def save_state(qmp, version, state_file, timeout):
    """Migrate the VM of session ``qmp`` (QEMU ``version``) into ``state_file``: device state only.
    The VM ends stopped ('postmigrate'). Returns dict(transfer, stopped_at, completed_at,
    capabilities (what the VM had before), migration_mode). On failure the migration is cancelled,
    the capabilities are set back and QEMU resumes the guest itself."""
    before = query_capabilities(qmp)
    missing = [name for name in SAVE_CAPABILITIES if name not in before]
    if missing:
        raise InvalidInput('this QEMU has no %s migration capability' % ', '.join(missing))
    mode_before = qmp.execute('query-migrate-parameters').get('mode')
    cpr = uses_cpr_reboot(version)
    tmp = state_file + '.tmp'
    set_capabilities(qmp, SAVE_CAPABILITIES)
    try:
        if cpr:
            qmp.execute('migrate-set-parameters', {'mode': 'cpr-reboot'})
        qmp.drain_events()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if cpr:
                uri = 'file:%s' % tmp
            else:
                qmp.pass_fd(fd, 'liveupdate-save')
                uri = 'fd:liveupdate-save'
        finally:
            os.close(fd)
        qmp.execute('migrate', {'uri': uri})
        stop = qmp.wait_event(('STOP', 'MIGRATION'), timeout,
                              lambda e: e['event'] == 'STOP' or e['data']['status'] in MIGRATION_END)
        end = stop if stop['event'] == 'MIGRATION' else qmp.wait_event(
            'MIGRATION', timeout, lambda e: e['data']['status'] in MIGRATION_END)
        if end['data']['status'] != 'completed':
            info = qmp.execute('query-migrate')
            raise UpdateFailed('saving the device state failed (%s): %s'
                               % (end['data']['status'], info.get('error-desc', 'no message')),
                               step='save', rolled_back=True)
        with open(tmp, 'rb+') as handle:
            os.fsync(handle.fileno())
        os.rename(tmp, state_file)
    except BaseException:
        _undo_save(qmp, before, mode_before, cpr)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return dict(transfer='cpr-reboot' if cpr else 'x-ignore-shared', stopped_at=event_time(stop),
                completed_at=event_time(end), capabilities=dict((n, before[n]) for n in SAVE_CAPABILITIES),
                migration_mode=mode_before)


def _undo_save(qmp, before, mode_before, cpr):
    """After a failed save: cancel, give the VM its capabilities and mode back, let it run."""
    try:
        cancel_migration(qmp, 10)
        set_capabilities(qmp, dict((n, before[n]) for n in SAVE_CAPABILITIES))
        if cpr and mode_before:
            qmp.execute('migrate-set-parameters', {'mode': mode_before})
    except Exception:  # pylint: disable=broad-except
        pass  # the QEMU is gone or does not answer: what it had is reported by the caller's error


def load_state(qmp, record, state_file, timeout):
    """Load ``state_file`` into the new QEMU of session ``qmp`` (started with -S -incoming defer);
    returns when it has the whole state, else raises UpdateFailed."""
    set_capabilities(qmp, SAVE_CAPABILITIES)
    cpr = record['transfer'] == 'cpr-reboot'
    if cpr:
        qmp.execute('migrate-set-parameters', {'mode': 'cpr-reboot'})
    qmp.drain_events()
    if cpr:
        qmp.execute('migrate-incoming', {'uri': 'file:%s' % state_file})
    else:
        fd = os.open(state_file, os.O_RDONLY)
        try:
            qmp.pass_fd(fd, 'liveupdate-restore')
        finally:
            os.close(fd)
        qmp.execute('migrate-incoming', {'uri': 'fd:liveupdate-restore'})
    status = qmp.execute('query-migrate').get('status')
    if status not in MIGRATION_END:
        status = qmp.wait_event('MIGRATION', timeout, lambda e: e['data']['status'] in MIGRATION_END)['data']['status']
    if status != 'completed':
        raise UpdateFailed('loading the saved state failed (%s)' % status, step='load', rolled_back=True)


def give_back_settings(qmp, record):
    """The capabilities and migration mode the VM had before its save."""
    restore_capabilities(qmp, record['capabilities'])
    if record['transfer'] == 'cpr-reboot' and record.get('migration_mode'):
        qmp.execute('migrate-set-parameters', {'mode': record['migration_mode']})
