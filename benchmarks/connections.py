# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: a client's view of live updates. A Debian 12 guest (systemd, nginx;
tools/build-debian-guest.sh) serves HTTP/1.1 keep-alive requests from a load generator on the host
(benchmarks/httpload.py) while the VM is live-updated --updates times, alternating between two
QEMU builds, on each network kind:

- ``tap``: a tap on the host (10.0.3.1/24), the guest at 10.0.3.2;
- ``slirp``: QEMU's own user-mode networking, a hostfwd port (the updates reset its connections:
  open_connections=reset);
- ``passt``: user-mode networking through passt (-netdev stream), the same hostfwd port.

Per kind: failed requests and reconnects, the worst request latency in a quiet baseline window
against the worst of the requests in flight at each switch (from the update's start to one second
after it ended), the guest pause (the module's guest_pause_ms) and the engine time. The updates
are the engine in-process (LiveUpdate with the live_update module's defaults), the VMs started by
VmManager, both from a private copy of the installed collection.

    source .build/env.sh
    python benchmarks/connections.py --kinds tap,slirp,passt --updates 10 --json /tmp/connections.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import benchlib
from benchlib import log
from httpload import LoadGenerator

PREFIX = 'lubench-conn-'
TAP = 'lubconn0'
HTTP_PORT = 25891
LOCK_NAME = '.connections.lock'
SLOW = 0.1  # seconds: a request slower than this at a switch


TCP_COUNTERS = ('TcpRetransSegs', 'TcpExtTCPLossProbes', 'TcpExtTCPTimeouts')


def tcp_counters():
    """The host's TCP retransmission counters (nstat; host-wide, so other traffic counts too)."""
    out = subprocess.run(['nstat', '-az'] + list(TCP_COUNTERS), capture_output=True, text=True, check=False).stdout
    return dict((line.split()[0], int(line.split()[1])) for line in out.splitlines()[1:] if line.strip())


def run_quiet(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Bench:
    def __init__(self, args, lib, collections):
        self.args = args
        self.lib = lib
        self.defaults = dict((m, benchlib.module_defaults(collections, m)) for m in ('vm', 'live_update'))
        with open(os.path.join(args.guest_dir, 'guest.json')) as handle:
            self.guest = json.load(handle)

    def params(self, module, **given):
        return dict(self.defaults[module], runtime_dir=self.args.runtime_dir, **given)

    def start_vm(self, kind):
        name = PREFIX + kind
        overlay = os.path.join(self.args.work_dir, name + '.qcow2')
        if os.path.exists(overlay):
            os.unlink(overlay)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b',
                        os.path.join(self.args.guest_dir, self.guest['rootfs']), overlay], check=True)
        append = self.guest['append']
        if kind == 'tap':
            nics = [dict(type='tap', ifname=TAP)]
            append += ' ip=10.0.3.2::10.0.3.1:255.255.255.0::eth0:off'
        else:
            nics = [dict(type='user', backend=kind, hostfwd=['tcp:127.0.0.1:%d-:80' % HTTP_PORT])]
        result = self.lib.VmManager(self.params(
            'vm', name=name, binary=self.args.old, memory=self.args.memory, accel=['tcg'],
            kernel=os.path.join(self.args.guest_dir, self.guest['vmlinux']),
            initrd=os.path.join(self.args.guest_dir, self.guest['initrd']),
            append=append, disks=[dict(path=overlay, format='qcow2', interface='virtio', cache='writeback')],
            nics=nics), False).run()
        serial = result['vm']['serial_log']
        started = time.monotonic()
        self.lib.wait_for(lambda: 'LU-READY' in _read(serial), self.args.boot_timeout, 'the guest to be ready')
        log('%s: guest ready in %.1f s' % (name, time.monotonic() - started))
        return name, ('10.0.3.2', 80) if kind == 'tap' else ('127.0.0.1', HTTP_PORT)

    def stop_vm(self, name):
        self.lib.VmManager(self.params('vm', name=name, state='stopped'), False).run()

    def update(self, name, target, kind):
        params = self.params('live_update', name=name, target_binary=target, force=True,
                             open_connections='reset' if kind == 'slirp' else 'refuse')
        return self.lib.LiveUpdate(params, False).run()

    def kind(self, kind):
        name, (host, port) = self.start_vm(kind)
        try:
            load = LoadGenerator(host, port, path='/', connections=self.args.connections, think=self.args.think)
            load.start()
            load.wait_ready()  # every connection up (a first connect through slirp can take a second)
            time.sleep(1)
            base_start = time.time()
            time.sleep(self.args.baseline)
            base_end = time.time()
            switches = []
            for index in range(self.args.updates):
                target = self.args.new if index % 2 == 0 else self.args.old
                counters = tcp_counters()
                begin = time.time()
                result = self.update(name, target, kind)
                end = time.time()
                time.sleep(self.args.pause_between)
                after = tcp_counters()
                switches.append(dict(begin=begin, end=end, guest_pause_ms=result.get('guest_pause_ms'),
                                     engine_s=result['timings'].get('engine'),
                                     spawn_s=result['timings'].get('spawn'),
                                     reset=len(result.get('connections_reset') or []),
                                     tcp=dict((k, after.get(k, 0) - counters.get(k, 0)) for k in TCP_COUNTERS)))
            results = load.stop()
        finally:
            self.stop_vm(name)
        for switch in switches:
            switch['worst_ms'] = _ms(results.worst(switch['begin'], switch['end'] + 1.0))
            # One slow connection is a lost packet; all of them at once, a guest that ran slowly.
            switch['slow_connections'] = len(set(
                r.conn for r in results.window(switch['begin'], switch['end'] + 1.0) if r.latency > SLOW))
        out = dict(kind=kind, requests=results.requests, failed=results.failed, reconnects=results.reconnects,
                   baseline_worst_ms=_ms(results.worst(base_start, base_end)),
                   baseline_p99_ms=_ms(results.percentile(99)), switches=switches)
        out['worst_at_switch_ms'] = max((s['worst_ms'] or 0) for s in switches) if switches else None
        log('%s: %d requests, %d failed, %d reconnects; worst baseline %s ms, worst at a switch %s ms'
            % (kind, out['requests'], out['failed'], out['reconnects'], out['baseline_worst_ms'],
               out['worst_at_switch_ms']))
        return out


def _read(path):
    try:
        with open(path, errors='replace') as handle:
            return handle.read()
    except OSError:
        return ''


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def make_tap():
    run_quiet('ip', 'tuntap', 'add', 'dev', TAP, 'mode', 'tap')
    run_quiet('ip', 'addr', 'add', '10.0.3.1/24', 'dev', TAP)
    run_quiet('ip', 'link', 'set', TAP, 'up')


def table(report):
    lines = ['| network | requests | failed | reconnects | baseline worst (ms) | worst at a switch (ms) | '
             'switches over baseline + 50 ms | connections slower than 100 ms per switch | tail-loss probes / '
             'retransmissions / timeouts per switch | guest pause median / max (ms) | engine median (s) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for kind in report['kinds']:
        pauses = sorted(s['guest_pause_ms'] for s in kind['switches'] if s['guest_pause_ms'] is not None)
        engines = sorted(s['engine_s'] for s in kind['switches'] if s['engine_s'] is not None)
        over = sum(1 for s in kind['switches'] if (s['worst_ms'] or 0) > (kind['baseline_worst_ms'] or 0) + 50)
        per_switch = [s['slow_connections'] for s in kind['switches']]
        tcp = ['%(TcpExtTCPLossProbes)d/%(TcpRetransSegs)d/%(TcpExtTCPTimeouts)d' % s['tcp'] for s in kind['switches']]
        lines.append('| %s | %d | %d | %d | %s | %s | %d of %d | %s | %s | %s / %s | %s |' % (
            kind['kind'], kind['requests'], kind['failed'], kind['reconnects'], kind['baseline_worst_ms'],
            kind['worst_at_switch_ms'], over, len(kind['switches']), ' '.join(map(str, per_switch)), ', '.join(tcp),
            pauses[len(pauses) // 2] if pauses else '-', pauses[-1] if pauses else '-',
            engines[len(engines) // 2] if engines else '-'))
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--kinds', default='tap,slirp,passt')
    ap.add_argument('--updates', type=int, default=10)
    ap.add_argument('--connections', type=int, default=8)
    ap.add_argument('--think', type=float, default=0.01, help='seconds between two requests of a connection')
    ap.add_argument('--baseline', type=float, default=10, help='seconds of load before the first update')
    ap.add_argument('--pause-between', type=float, default=3)
    ap.add_argument('--memory', default='1G')
    ap.add_argument('--boot-timeout', type=float, default=300)
    ap.add_argument('--old', default=os.environ.get('LIVEUPDATE_OLD_QEMU'))
    ap.add_argument('--new', default='/usr/bin/qemu-system-x86_64')
    ap.add_argument('--guest-dir', help='the Debian guest (default: build or find it with tools/build-debian-guest.sh)')
    ap.add_argument('--runtime-dir', default='/run/liveupdate-qemu-bench-conn')
    ap.add_argument('--work-dir', default='/var/tmp/liveupdate-qemu-bench-conn')
    ap.add_argument('--git-rev', help='measure the collection as committed at this revision (e.g. one before a fix)')
    ap.add_argument('--json')
    args = ap.parse_args(argv)
    if not benchlib.COLLECTIONS or not args.old:
        ap.error('source .build/env.sh first')
    if not args.guest_dir:
        out = subprocess.run(['bash', os.path.join(benchlib.ROOT, 'tools', 'build-debian-guest.sh')],
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        args.guest_dir = os.path.dirname(out)
    benchlib.setup('connbench')
    lock = benchlib.lock_runtime_dir(args.runtime_dir, LOCK_NAME)
    if lock is None:
        ap.error('another connections run uses %s' % args.runtime_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    if args.git_rev:
        commit, collections = benchlib.collection_to_measure(args.git_rev, args.runtime_dir)
    else:
        commit, collections = None, benchlib.snapshot_collection(os.path.join(args.work_dir, 'collection'))
    lib = benchlib.import_collection(collections, 'connections')
    bench = Bench(args, lib, collections)
    report = dict(command=' '.join(['python', os.path.relpath(sys.argv[0], benchlib.ROOT)] + sys.argv[1:]),
                  started=time.strftime('%Y-%m-%d %H:%M:%S'), machine=benchlib.machine_info(args.old, args.new),
                  guest=bench.guest, commit=commit, kinds=[])
    tap_made = False
    try:
        for kind in args.kinds.split(','):
            if kind == 'tap' and not tap_made:
                make_tap()
                tap_made = True
            report['kinds'].append(bench.kind(kind))
    finally:
        if tap_made:
            subprocess.run(['ip', 'link', 'del', TAP], check=False, capture_output=True)
        benchlib.release_runtime_dir(args.runtime_dir, LOCK_NAME, lock)
    print(table(report))
    if args.json:
        benchlib.write_json(args.json, report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
