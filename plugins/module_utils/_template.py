# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM templates and their clones (modules vm_template and vm_clone).

A template is a VM saved at a ready point (_saved.save_state) whose memory file moved into the
template's directory and is read-only from then on. A clone is a new QEMU started from it: its
RAM is the template's memory file mapped privately (``share=off``), so pages stay shared with
the template and the other clones until the clone writes them; it loads the template's device
state and resumes. Each clone has its own name, runtime directory (sockets, pidfile, logs),
copy-on-write overlays of the template's disks, and MAC addresses.

Layout under ``<template_dir>/<template>/``: ``template.json`` (the record), ``state``,
``memory.ram`` (0444), ``clones/<clone>`` (one file per clone, naming its runtime directory).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import QemuCommandLine, QemuOpts, is_on
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, UpdateFailed
from ansible_collections.liveupdate.qemu.plugins.module_utils._lock import UpdateLock
from ansible_collections.liveupdate.qemu.plugins.module_utils._locate import connect_source, find_running
from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import (
    launch_detached, qemu_processes, shutdown_ladder,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import event_time, query_vm, set_capabilities
from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPSession
from ansible_collections.liveupdate.qemu.plugins.module_utils._saved import (
    SAVE_CAPABILITIES, SavedRecord, file_identity, load_state, move_file, record_of, restore_command,
    restore_refusals, save_state, saved_command, template_of, unchanged, TEMPLATE_MEMORY, TEMPLATE_RECORD,
)
from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import Vm, validate_name

DEFAULT_TEMPLATE_DIR = '/var/lib/liveupdate-qemu/templates'
DEFAULT_OVERLAY_DIR = '/var/lib/liveupdate-qemu/clones'


def _ms(seconds):
    return round(seconds * 1000, 1)


def clone_mac(template, clone, index):
    """A stable, locally administered MAC address for NIC ``index`` of ``clone``."""
    digest = hashlib.sha256(('%s/%s/%d' % (template, clone, index)).encode()).digest()
    return '52:54:%02x:%02x:%02x:%02x' % tuple(digest[:4])


class Template:
    """The files of template ``name`` under ``template_dir``."""

    def __init__(self, template_dir, name):
        self.name = validate_name(name)
        self.record = SavedRecord(os.path.join(template_dir, name), TEMPLATE_RECORD)
        self.dir = self.record.dir
        self.memory_file = os.path.join(self.dir, TEMPLATE_MEMORY)
        self.clones_dir = os.path.join(self.dir, 'clones')

    def read(self):
        return self.record.read()

    def registered_clones(self):
        try:
            return sorted(os.listdir(self.clones_dir))
        except FileNotFoundError:
            return []

    def clone_processes(self):
        return [p for p in qemu_processes() if p.uses_file(self.memory_file)]

    def info(self, data):
        return dict(name=self.name, dir=self.dir, memory_file=self.memory_file, state_file=self.record.state_file,
                    source_vm=data['source_vm'], binary=data['binary'], version=data['version'],
                    machine=data['machine'], memory_bytes=data['stored'][0]['size'],
                    disks=[d['path'] for d in data['disks']], clones=self.registered_clones())


def clone_of(state):
    """The template a VM's recorded state (vm.json) says it is a clone of, or None."""
    return ((state or {}).get('clone') or {}).get('template')


# --- vm_template ---

class TemplateManager:

    def __init__(self, params, check_mode):
        self.params = params
        self.check_mode = check_mode
        self.template = Template(params['template_dir'], params['name'])
        self.timings = {}

    def run(self):
        return self.ensure_present() if self.params['state'] == 'present' else self.ensure_absent()

    def ensure_present(self):
        data = self.template.read()
        if data:
            return dict(changed=False, template=self.template.info(data))
        if not self.params.get('vm'):
            raise InvalidInput('template %s does not exist: give vm, the running VM to make it from' % self.template.name)
        params = dict(self.params, name=self.params['vm'])
        qmp_socket, proc = find_running(params)
        if qmp_socket is None:
            raise InvalidInput('VM %s is not running: a template is made from a running VM' % self.params['vm'])
        with UpdateLock(self.params['runtime_dir'], qmp_socket, 0):
            with QMPSession(qmp_socket, self.params['timeout']) as qmp:
                source = connect_source(qmp, proc, self.params['runtime_dir'])
                vm = query_vm(qmp, source.proc.pid)
                disks = self._check(source, vm)
                if self.check_mode:
                    return dict(changed=True, template=dict(name=self.template.name, dir=self.template.dir))
                return self._make(qmp, source, vm, disks)

    def _check(self, source, vm):
        """The template's disks [(path, format)], or why the VM cannot become a template."""
        name = self.params['vm']
        template = clone_of(source.paths.read_state() if source.paths else None) or next(
            (template_of(b['path']) for b in vm['memory_backends'] if not b['share'] and template_of(b['path'])), None)
        if template:
            raise InvalidInput('VM %s is a clone of template %s and cannot be made a template: its RAM is that '
                               "template's memory file mapped privately (copy-on-write), so what it changed lives "
                               'only in its process, not in a file a template could keep' % (name, template))
        reasons = restore_refusals(saved_command(source.proc), vm)
        if len(vm['memory_backends']) != 1:
            reasons.append('a template has one memory backend; this VM has %d' % len(vm['memory_backends']))
        disks = []
        for opts in source.proc.cmdline.opts('drive'):
            if opts.get('file'):
                disks.append(dict(path=os.path.abspath(opts.get('file')), format=opts.get('format') or 'raw'))
        if source.proc.cmdline.has('blockdev'):
            reasons.append('-blockdev disks cannot be given an overlay per clone; use -drive file=...')
        if reasons:
            raise InvalidInput('cannot make a template of VM %s: %s' % (name, '; '.join(reasons)), reasons=reasons)
        return disks

    def _make(self, qmp, source, vm, disks):
        template = self.template
        os.makedirs(template.dir, mode=0o700)
        try:
            saved = save_state(qmp, vm['running']['version'], template.record.state_file,
                               self.params['migration_timeout'])
        except BaseException:
            template.record.remove()
            raise
        self.timings['save_ms'] = _ms(saved['completed_at'] - saved['stopped_at'])
        data = record_of(source, vm, template.record.state_file, saved)
        original = data['memory_files'][0]
        data.update(name=template.name, source_vm=self.params['vm'],
                    disks=[dict(d, **file_identity(d['path'])) for d in disks])
        shutdown_ladder(source.proc.pid, lambda: qmp.execute('quit'), self.params['shutdown_timeout'])
        start = time.monotonic()
        move_file(original, template.memory_file)
        self.timings['move_ms'] = _ms(time.monotonic() - start)
        os.chmod(template.memory_file, 0o444)
        data['stored'] = [dict(path=template.memory_file, **file_identity(template.memory_file))]
        template.record.write(data)
        if source.paths:  # the VM became the template: its runtime directory goes
            Vm(self.params['runtime_dir'], self.params['vm']).remove_files()
        return dict(changed=True, template=template.info(data), timings=self.timings)

    def ensure_absent(self):
        template = self.template
        data = template.read()
        if data is None:
            return dict(changed=False)
        live = template.clone_processes()
        clones = template.registered_clones()
        if live or clones:
            raise InvalidInput('template %s has clones (%s%s): remove them first (liveupdate.qemu.vm_clone state: '
                               'absent); they map its memory file and their disks are overlays of its disks'
                               % (template.name, ', '.join(clones) or 'unregistered',
                                  '; QEMU pids %s' % ', '.join(str(p.pid) for p in live) if live else ''),
                               clones=clones, pids=[p.pid for p in live])
        if not self.check_mode:
            if os.path.exists(template.memory_file):
                os.unlink(template.memory_file)
            if os.path.isdir(template.clones_dir):
                os.rmdir(template.clones_dir)
            template.record.remove()
        return dict(changed=True, template=template.info(data))


# --- vm_clone ---

def clone_command(data, template, name, paths, overlays, nics):
    """The clone's command line: the template's, with the clone's name, runtime paths, private
    mapping of the template's memory file, disk overlays and NICs; paused, waiting for the state."""
    source = QemuCommandLine.parse(data['argv'])
    control = (source.qmp_sockets() or [None])[0]
    used = set()

    def own(path, default=None):
        """A file of the clone in its runtime directory, named like the template's."""
        base = 'qmp.sock' if path == control else default or os.path.basename(path)
        candidate, index = base, 1
        while candidate in used:
            candidate, index = '%s.%d' % (base, index), index + 1
        used.add(candidate)
        return os.path.join(paths.root, candidate)

    options, drive, nic = [], 0, 0
    netdev_nics = {}
    for opt, value in source.options:
        opts = QemuOpts.parse(value) if value else None
        if opt == 'name':
            opts = QemuOpts([(None, name)] + [(k, v) for k, v in opts.items if k not in (None, 'guest')])
        elif opt == 'object' and opts.get('mem-path') == data['memory_files'][0]:
            opts.set('mem-path', template.memory_file)
            opts.set('share', 'off')
        elif opt in ('qmp', 'qmp-pretty', 'monitor', 'serial', 'parallel') and value.startswith(('unix:', 'file:')):
            kind, rest = value.split(':', 1)
            inner = QemuOpts.parse(rest)
            inner.items[0] = (None, own(inner.head()))
            options.append((opt, '%s:%s' % (kind, inner.format())))
            continue
        elif opt == 'chardev':
            if opts.get('path') and opts.head() in ('socket', 'unix', 'file'):
                opts.set('path', own(opts.get('path')))
            if opts.get('logfile'):
                opts.set('logfile', own(opts.get('logfile')))
            if opts.head() in ('socket', 'unix') and is_on(opts.get('server', 'off')) and not opts.get('path'):
                raise InvalidInput('template %s listens on a TCP chardev (%s): clones cannot all listen there'
                                   % (template.name, value))
        elif opt == 'pidfile':
            opts = None
            value = own(value, 'qemu.pid')
        elif opt == 'vnc':
            if not (opts.head() or '').startswith(('unix:', 'none')):
                raise InvalidInput('template %s has VNC on a TCP display (%s): clones cannot all listen there; use '
                                   '-vnc unix:PATH' % (template.name, value))
            if opts.head().startswith('unix:'):
                opts.items[0] = (None, 'unix:' + own(opts.head()[len('unix:'):], 'vnc.sock'))
        elif opt == 'drive' and opts.get('file'):
            opts.set('file', overlays[drive])
            opts.set('format', 'qcow2')
            drive += 1
        elif opt == 'netdev':
            kind = opts.get('type', implied='type')
            given = nics[nic] if nic < len(nics) else {}
            if kind == 'user':
                opts.remove('hostfwd')
                for rule in given.get('hostfwd') or []:
                    opts.items.append(('hostfwd', rule))
            elif kind == 'tap':
                if not given.get('ifname'):
                    raise InvalidInput('template %s has a tap NIC (%s): give the clone its own tap in nics[%d].ifname'
                                       % (template.name, value, nic))
                for key in ('ifname', 'fd', 'fds', 'queues'):
                    opts.remove(key)
                opts.set('ifname', given['ifname'])
            else:
                raise InvalidInput('template %s has a %s network backend, which clones cannot each have'
                                   % (template.name, kind))
            netdev_nics[opts.get('id')] = nic
            nic += 1
        elif opt == 'device' and opts.get('netdev') in netdev_nics:
            index = netdev_nics[opts.get('netdev')]
            given = nics[index] if index < len(nics) else {}
            opts.set('mac', given.get('mac') or clone_mac(template.name, name, index))
        options.append((opt, opts.format() if opts is not None else value))
    if 'qmp.sock' not in used:
        raise InvalidInput('template %s has no unix QMP socket on its command line' % template.name)
    argv = QemuCommandLine(data['binary'], options).argv()
    return restore_command(argv, data['binary'], data['machine'])


class CloneManager:

    def __init__(self, params, check_mode):
        self.params = params
        self.check_mode = check_mode
        self.name = validate_name(params['name'])
        self.vm = Vm(params['runtime_dir'], self.name)
        self.timings = {}
        self.warnings = []

    def run(self):
        state = self.params['state']
        result = dict(running=self.ensure_running, warm=self.ensure_warm, absent=self.ensure_absent)[state]()
        result['warnings'] = self.warnings
        return result

    def _template(self):
        template = Template(self.params['template_dir'], self.params['template'])
        data = template.read()
        if data is None:
            raise InvalidInput('template %s does not exist in %s' % (template.name, self.params['template_dir']))
        if not unchanged(template.memory_file, data['stored'][0]):
            raise InvalidInput('the memory file of template %s changed after it was made: its clones would not start '
                               'from the saved point' % template.name)
        for disk in data['disks']:
            if not unchanged(disk['path'], disk):
                raise InvalidInput('disk %s of template %s changed after the template was made: overlays of it would '
                                   'show the clone another disk' % (disk['path'], template.name))
        return template, data

    def _current(self):
        """(process, recorded clone facts) of this clone, or (None, None)."""
        state = self.vm.state
        if not state:
            return None, None
        if not clone_of(state):
            raise InvalidInput('%s is a VM of its own, not a clone (%s)' % (self.name, self.vm.paths.state_file))
        if state['clone']['template'] != self.params['template']:
            raise InvalidInput('%s is a clone of template %s, not of %s'
                               % (self.name, state['clone']['template'], self.params['template']))
        return self.vm.process(), state['clone']

    def _info(self, proc, status, clone):
        info = self.vm.info(proc, status)
        info.update(template=self.params['template'], overlays=clone.get('overlays', []) if clone else [],
                    macs=clone.get('macs', []) if clone else [])
        if os.path.exists(self.vm.paths.serial_log):
            info['serial_log'] = self.vm.paths.serial_log
        return info

    def ensure_warm(self):
        proc, clone = self._current()
        if proc is not None:
            return dict(changed=False, vm=self._info(proc, clone['state'], clone))
        if self.check_mode:
            return dict(changed=True, vm=dict(name=self.name, status='warm'))
        proc, clone = self._start()
        return dict(changed=True, vm=self._info(proc, 'warm', clone), timings=self.timings)

    def ensure_running(self):
        proc, clone = self._current()
        if proc is not None and clone['state'] == 'running':
            return dict(changed=False, vm=self._info(proc, 'running', clone))
        if self.check_mode:
            return dict(changed=True, vm=dict(name=self.name, status='running'))
        start = time.monotonic()
        if proc is None:
            proc, clone = self._start()
        template, data = self._template()
        with QMPSession(self.vm.paths.qmp_socket, self.params['timeout']) as qmp:
            if qmp.execute('query-status')['status'] != 'inmigrate':
                raise InvalidInput('clone %s (pid %d) is neither running nor waiting for its state' % (self.name, proc.pid))
            requested = time.monotonic()
            load_state(qmp, data, template.record.state_file, self.params['migration_timeout'])
            resumed_at = None
            if data['run_status'] == 'running':
                qmp.drain_events()
                qmp.execute('cont')
                resumed_at = event_time(qmp.wait_event('RESUME', self.params['timeout']))
            self.timings['load_to_running_ms'] = _ms(time.monotonic() - requested)
            self.timings['total_ms'] = _ms(time.monotonic() - start)
            macs = dict((f['name'], f['main-mac']) for f in qmp.execute('query-rx-filter'))
        clone['state'] = 'running'
        self.vm.paths.write_state(dict(self.vm.state, clone=clone))
        if any(mac not in clone['macs'] for mac in macs.values()):
            self.warnings.append('the guest of clone %s still uses the MAC addresses of its template (%s) until it '
                                 'resets its NICs; its own are %s (see docs/templates.md)'
                                 % (self.name, ', '.join(sorted(macs.values())), ', '.join(clone['macs'])))
        result = dict(changed=True, vm=self._info(proc, 'running', clone), timings=self.timings,
                      guest_macs=macs, resumed_at=resumed_at)
        return result

    def _start(self):
        """Launch the clone's QEMU waiting for its state: (process, clone facts)."""
        template, data = self._template()
        if self.vm.leftovers():
            self.vm.remove_files()
        if any(p.cmdline.name() == self.name for p in qemu_processes()):
            raise InvalidInput('a QEMU named %s already runs; VM names must be unique on a host' % self.name)
        overlay_dir = os.path.join(self.params['overlay_dir'], self.name)
        overlays = [os.path.join(overlay_dir, 'disk%d.qcow2' % i) for i in range(len(data['disks']))]
        nics = self.params.get('nics') or []
        os.makedirs(os.path.dirname(self.vm.paths.root), mode=0o755, exist_ok=True)
        argv = clone_command(data, template, self.name, self.vm.paths, overlays, nics)
        os.mkdir(self.vm.paths.root, 0o700)
        os.makedirs(overlay_dir, mode=0o700, exist_ok=True)
        for disk, overlay in zip(data['disks'], overlays):
            if not os.path.exists(overlay):
                subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', disk['format'], '-b', disk['path'],
                                overlay], check=True, capture_output=True)
        macs = [o.get('mac') for o in QemuCommandLine.parse(argv).opts('device') if o.get('mac')]
        clone = dict(template=template.name, template_dir=self.params['template_dir'], overlays=overlays,
                     overlay_dir=overlay_dir, macs=macs, state='warm')
        self.vm.state = dict(argv=argv, binary=argv[0], memory_file=template.memory_file, memory_shared=False,
                             clone=clone, spec={})
        self.vm.paths.write_state(self.vm.state)
        os.makedirs(template.clones_dir, mode=0o700, exist_ok=True)
        with open(os.path.join(template.clones_dir, self.name), 'w') as handle:
            handle.write(self.vm.paths.root + '\n')
        start = time.monotonic()
        try:
            child = launch_detached(argv, self.vm.paths.qemu_log, lambda: os.path.exists(self.vm.paths.qmp_socket),
                                    cwd=data['cwd'])
            qmp = QMPSession(self.vm.paths.qmp_socket, self.params['timeout'])
            try:
                qmp.connect(starting=True)
                set_capabilities(qmp, SAVE_CAPABILITIES)
            finally:
                qmp.close()
        except BaseException:
            self._remove(None, clone)
            raise
        self.timings['start_ms'] = _ms(time.monotonic() - start)
        proc = self.vm.process()
        if proc is None or proc.pid != child.pid:
            raise UpdateFailed('clone %s started (pid %d) but is not found as its VM' % (self.name, child.pid),
                               step='start', rolled_back=False)
        return proc, clone

    def ensure_absent(self):
        if not self.vm.state:
            # Stopped by liveupdate.qemu.vm (state stopped), which leaves overlays and registration.
            clone = dict(template=self.params['template'], template_dir=self.params['template_dir'],
                         overlay_dir=os.path.join(self.params['overlay_dir'], self.name))
            clone['overlays'] = [os.path.join(clone['overlay_dir'], f) for f in sorted(os.listdir(clone['overlay_dir']))
                                 if f.endswith('.qcow2')] if os.path.isdir(clone['overlay_dir']) else []
            registered = os.path.exists(os.path.join(Template(clone['template_dir'], clone['template']).clones_dir,
                                                     self.name))
            if not clone['overlays'] and not registered:
                return dict(changed=False)
            if not self.check_mode:
                self._remove(None, clone)
            return dict(changed=True, vm=dict(name=self.name, status='absent', overlays=clone['overlays']))
        proc, clone = self._current()
        if not self.check_mode:
            self._remove(proc, clone)
        return dict(changed=True, vm=self._info(proc, 'absent', clone))

    def _remove(self, proc, clone):
        """End the clone's QEMU and remove its files: runtime directory, overlays, registration.
        The template's memory file is never removed here (the clone only maps it)."""
        if proc is None:
            proc = self.vm.process()
        if proc is not None:
            self.vm.stop(proc, self.params['timeout'], self.params['shutdown_timeout'])
        self.vm.remove_files()
        for overlay in clone.get('overlays', []):
            if os.path.exists(overlay):
                os.unlink(overlay)
        if clone.get('overlay_dir') and os.path.isdir(clone['overlay_dir']) and not os.listdir(clone['overlay_dir']):
            os.rmdir(clone['overlay_dir'])
        registration = os.path.join(Template(clone['template_dir'], clone['template']).clones_dir, self.name)
        if os.path.exists(registration):
            os.unlink(registration)
