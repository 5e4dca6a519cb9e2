# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU processes that libvirt runs. libvirt holds their QMP monitor (which serves one client
at a time) and their life cycle, and it does not migrate a domain within one host: this
collection leaves them alone and never speaks QMP to them (docs/libvirt.md).

A process is libvirt's when libvirt's own bookkeeping names it (its pidfile, its cgroup, its
daemon as parent), or when its command line carries at least two of the things libvirt writes
on every one, one of them a libvirt file: a hand-made command line that borrows libvirt's
option style (``-name guest=...,debug-threads=on``, a monitor chardev called ``charmonitor``)
is not enough."""

from __future__ import annotations

import os
import re

from ansible_collections.liveupdate.qemu.plugins.module_utils._cmdline import is_on

# Where libvirt's QEMU driver keeps per-domain files: /var/lib/libvirt/qemu/domain-<id>-<name>/
# (master key, monitor socket), /run/libvirt/qemu, ~/.config/libvirt/qemu/lib (session daemon).
# Its own tests run domain id -1 under /tmp/lib.
LIBVIRT_PATH_RE = re.compile(r'/libvirt/qemu/|/domain-(-1|\d+)-[^/]+/')
STATE_DIR = '/run/libvirt/qemu'  # libvirt writes <domain>.pid here; QEMU's command line does not say so
DAEMONS = ('libvirtd', 'virtqemud')
# systemd-machined's scope (machine-qemu\x2d<id>\x2d<name>.scope), or libvirt's own cgroup
# (<name>.libvirt-qemu) when it runs without machined.
CGROUP_RE = re.compile(r'machine-qemu\\x2d|\.libvirt-qemu(/|$)', re.M)
# Command-line markers that name a libvirt file: one of them must be among the two.
FILE_MARKERS = ('master-key', 'libvirt-path')


def in_libvirt_dir(path):
    """True when ``path`` lies in one of libvirt's QEMU directories (or a domain directory)."""
    return bool(LIBVIRT_PATH_RE.search(path))


def command_line_markers(cmdline):
    """The marks of libvirt on a QemuCommandLine, in a fixed order."""
    found = []
    if any(o.get('guest') and is_on(o.get('debug-threads', 'off')) for o in cmdline.opts('name')):
        found.append('name-debug-threads')
    # The key libvirt encrypts the domain's other secrets with: every domain gets one.
    if any(o.get('qom-type', implied='qom-type') == 'secret' and o.get('id') == 'masterKey0'
           and os.path.basename(o.get('file') or '') == 'master-key.aes' for o in cmdline.opts('object')):
        found.append('master-key')
    if any(o.get('chardev') == 'charmonitor' and o.get('id') == 'monitor' and o.get('mode') == 'control'
           for o in cmdline.opts('mon')):
        found.append('charmonitor')
    if any(value and in_libvirt_dir(value) for dummy, value in cmdline.options):
        found.append('libvirt-path')
    return found


def process_markers(facts):
    """The marks of libvirt in ``facts`` (process_facts()): its pidfile holds the pid, the process
    is in a libvirt cgroup, or its parent is libvirt's daemon (seldom: libvirt daemonizes QEMU)."""
    found = []
    if facts.get('pidfile_pid') is not None and facts.get('pidfile_pid') == facts.get('pid'):
        found.append('libvirt-pidfile')
    if CGROUP_RE.search(facts.get('cgroup') or ''):
        found.append('libvirt-cgroup')
    if facts.get('parent') in DAEMONS:
        found.append('libvirt-parent')
    return found


def recognise(cmdline, facts=None):
    """{'domain': libvirt's name of the VM, 'markers': [...]} when libvirt runs the QEMU of
    ``cmdline`` (with process ``facts``), else None."""
    on_line = command_line_markers(cmdline)
    of_process = process_markers(facts or {})
    if of_process or (len(on_line) >= 2 and any(m in FILE_MARKERS for m in on_line)):
        return dict(domain=cmdline.name(), markers=on_line + of_process)
    return None


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def process_facts(pid, name):
    """What the system says of QEMU ``pid`` named ``name`` (-name): its parent's command name,
    its cgroups, and the pid in libvirt's pidfile for a domain of that name."""
    stat = _read('/proc/%d/stat' % pid) or ''
    fields = stat.rsplit(')', 1)[-1].split()
    parent = _read('/proc/%s/comm' % fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    pidfile = _read(os.path.join(STATE_DIR, '%s.pid' % name)) if name and '/' not in name else None
    return dict(pid=pid, parent=parent.strip() if parent else None, cgroup=_read('/proc/%d/cgroup' % pid),
                pidfile_pid=int(pidfile) if pidfile and pidfile.strip().isdigit() else None)


def libvirt_domain(proc):
    """recognise() for a running QemuProcess."""
    return recognise(proc.cmdline, process_facts(proc.pid, proc.cmdline.name()))


def refusal(domain=None):
    """Why a VM of libvirt's (domain name ``domain``) is not live-updated, and what to do instead."""
    return ('managed by libvirt%s: libvirt holds its QMP monitor and its process and does not migrate a VM within '
            'one host, so it is neither live-updated nor sent QMP commands here; update it through libvirt: '
            'virsh migrate --live to another host, virsh managedsave then virsh start (it comes back on the '
            'installed QEMU), or a restart of the domain' % (' (domain %s)' % domain if domain else ''))
