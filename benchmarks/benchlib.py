# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What benchmarks/live_update.py, benchmarks/soak.py and benchmarks/fleet.py share: the collection on
sys.path, the collection measured (``--git-rev``: built from a commit), the run's lock on its runtime
directory, one Ansible runner (``ansible -m`` for one module, ``ansible-playbook`` with the benchmark
callback for a playbook), QEMU process helpers over the collection's own, the machine and its load,
statistics, logging, JSON output and the clean-up of what a run leaves behind.

The collection is imported from the installed copy in ANSIBLE_COLLECTIONS_PATH
(``source .build/env.sh``), the same copy the Ansible runs use: the source tree is not laid out as
``ansible_collections/liveupdate/qemu``. Import this module before any ``ansible_collections`` one.
This module imports the collection's helpers only when a function needs them, so that soak.py can
put the copy it measures (``--git-rev``) first on sys.path after importing it.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
BENCH_DIR = os.path.join(ROOT, 'benchmarks')
PLAYBOOK_DIR = os.path.join(BENCH_DIR, 'playbooks')
CALLBACK_DIR = os.path.join(BENCH_DIR, 'callback_plugins')
CALLBACK_NAME = 'fleetbench_timer'  # callback_plugins/fleetbench_timer.py
NEWER = '/usr/bin/qemu-system-x86_64'  # the newer build: Debian's QEMU


def import_collection(collections, who):
    """Put ``collections`` (then tools/) first on sys.path, import the collection's module_utils the
    benchmarks drive from it, and return them as a namespace; SystemExit naming ``who`` when the
    engine comes from another copy. Nothing of the collection is imported before this call."""
    os.environ['ANSIBLE_COLLECTIONS_PATH'] = collections
    sys.path.insert(0, collections)
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import guestlog  # tools/guestlog.py
    from ansible_collections.liveupdate.qemu.plugins.module_utils import _live_update
    from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import LiveUpdateError
    from ansible_collections.liveupdate.qemu.plugins.module_utils._module import COMMON_ARGS
    from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import process_alive, qemu_processes, users_of
    from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import binary_version
    from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_state import event_time, qmp_version
    # The collection's QMP session: qemu.qmp's async client, not qemu.qmp.legacy (GPL-2.0-only).
    from ansible_collections.liveupdate.qemu.plugins.module_utils._qmp import QMPSession
    from ansible_collections.liveupdate.qemu.plugins.module_utils._vm import RuntimePaths
    from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_manager import VmManager
    from ansible_collections.liveupdate.qemu.plugins.module_utils._vm_spec import memory_file_for
    from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for
    where = os.path.realpath(_live_update.__file__)
    if not where.startswith(os.path.realpath(collections) + os.sep):
        raise SystemExit('%s: the engine was imported from %s, not from %s' % (who, where, collections))
    return SimpleNamespace(
        guestlog=guestlog, LiveUpdate=_live_update.LiveUpdate, Switch=_live_update.Switch, engine_file=where,
        LiveUpdateError=LiveUpdateError, COMMON_ARGS=COMMON_ARGS, process_alive=process_alive,
        qemu_processes=qemu_processes, users_of=users_of, binary_version=binary_version, event_time=event_time,
        qmp_version=qmp_version, QMPSession=QMPSession, RuntimePaths=RuntimePaths, VmManager=VmManager,
        memory_file_for=memory_file_for, WaitTimeout=WaitTimeout, wait_for=wait_for)


def installed_collections():
    """The entry of ANSIBLE_COLLECTIONS_PATH that holds liveupdate.qemu, or None."""
    for path in os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(':'):
        if path and os.path.isfile(os.path.join(path, 'ansible_collections', 'liveupdate', 'qemu', 'MANIFEST.json')):
            return path
    return None


COLLECTIONS = installed_collections()
if COLLECTIONS and COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

if not any(os.path.isfile(os.path.join(path or '.', 'ansible_collections', 'liveupdate', 'qemu', 'MANIFEST.json'))
           for path in sys.path):
    raise SystemExit('benchmarks: cannot import liveupdate.qemu (not installed on the Python path): '
                     'source .build/env.sh first')
# The functions below import the collection's _proc, _qemu_binary and _wait where they use them: see above.


class BenchError(Exception):
    pass


# --- logging, signals, output ---

_LOG = dict(prefix='bench')


def setup(prefix, signals=(signal.SIGTERM,)):
    """Name the log lines ``[PREFIX HH:MM:SS]``; ``signals`` end the run as Ctrl-C does (KeyboardInterrupt),
    so that its clean-up runs."""
    _LOG['prefix'] = prefix
    for sig in signals:
        signal.signal(sig, _terminate)


def _terminate(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


def log(msg):
    sys.stderr.write('[%s %s] %s\n' % (_LOG['prefix'], time.strftime('%H:%M:%S'), msg))
    sys.stderr.flush()


def write_json(path, data, indent=1):
    with open(path, 'w') as handle:
        json.dump(data, handle, indent=indent, default=str)


# --- statistics ---

def percentile(values, q):
    """Nearest-rank percentile (docs/performance.md): with fewer than 1/(1-q) values, the maximum."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def stats(values, q=0.99):
    """n, median, the nearest-rank ``q`` percentile (key p99 for 0.99), min and max; None values are
    left out, and with none left the answer is None."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'n': len(values), 'median': statistics.median(values), 'p%d' % round(q * 100): percentile(values, q),
            'min': min(values), 'max': max(values)}


# --- the machine ---

def loadavg():
    with open('/proc/loadavg') as handle:
        return [float(x) for x in handle.read().split()[:3]]


def load_snapshot(runtime_dir):
    """The load average now, and how many QEMU processes run that are not this run's (none of their
    arguments names something under ``runtime_dir``)."""
    from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import qemu_processes
    others = sum(1 for p in qemu_processes() if not any(runtime_dir + '/' in a for a in p.argv))
    return dict(time=time.strftime('%Y-%m-%d %H:%M:%S'), t=round(time.time(), 1), loadavg=loadavg(), other_qemu=others)


def meminfo():
    """/proc/meminfo in bytes."""
    values = {}
    with open('/proc/meminfo') as handle:
        for line in handle:
            key, rest = line.split(':', 1)
            values[key] = int(rest.split()[0]) * 1024
    return values


def machine_info(old, new):
    """The machine and the two QEMU builds (``old`` and ``new`` binaries), for a report."""
    with open('/proc/cpuinfo') as handle:
        model = next((line.split(':', 1)[1].strip() for line in handle if line.startswith('model name')), '?')
    shm = os.statvfs('/dev/shm')
    return dict(cores=os.cpu_count(), cpu=model, mem_total_gib=round(meminfo()['MemTotal'] / 2 ** 30, 1),
                shm_gib=round(shm.f_blocks * shm.f_frsize / 2 ** 30, 1), kernel=os.uname().release,
                accel='tcg', old_qemu=dict(binary=old, version=qemu_version(old)),
                new_qemu=dict(binary=new, version=qemu_version(new)))


def qemu_version(binary):
    """'7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)': the version and package of ``binary --version``."""
    from ansible_collections.liveupdate.qemu.plugins.module_utils._qemu_binary import binary_version
    info = binary_version(binary)
    if info is None:
        raise BenchError('%s --version names no QEMU version' % binary)
    return '%s (%s)' % (info['version'], info['package']) if info['package'] else info['version']


def child_of(pid):
    """The first child of ``pid``, or None."""
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as handle:
            children = handle.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def end_processes(pids, timeout=10):
    """SIGTERM, then SIGKILL, the processes of ``pids`` that still run; each signal is given ``timeout``
    seconds for all of them to be gone. Returns the pids that were signalled."""
    from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import process_alive
    from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for
    signalled = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, sig)
                signalled.add(pid)
            except ProcessLookupError:
                pass
        try:
            wait_for(lambda: not any(process_alive(pid) for pid in alive), timeout,
                     'pids %s to exit on signal %d' % (alive, sig), interval=0.005)
            break
        except WaitTimeout:
            continue
    return sorted(signalled)


def remove_leftovers(runtime_dir, files=()):
    """End every QEMU whose command line names something under ``runtime_dir`` or one of ``files``
    (the benchmark's VMs and the processes it started), then remove ``files``.
    Returns (pids ended, files removed)."""
    from ansible_collections.liveupdate.qemu.plugins.module_utils._proc import qemu_processes
    ours = [p.pid for p in qemu_processes()
            if any(runtime_dir + '/' in a for a in p.argv) or any(p.uses_file(f) for f in files)]
    if ours:
        log('cleanup: ending QEMU pid(s) %s' % ', '.join(str(p) for p in ours))
    ended = end_processes(ours)
    removed = [f for f in files if os.path.lexists(f)]
    for path in removed:
        os.unlink(path)
    return ended, removed


# --- the run's directory and the collection measured ---

COLLECTION_DIR = '.collection'  # under the runtime directory: the collection built for --git-rev
ENGINE_FILES = ('module_utils/_live_update.py', 'module_utils/_transfer.py', 'module_utils/_takeover.py',
                'module_utils/_verify.py', 'module_utils/_proc.py', 'modules/live_update.py')


def lock_runtime_dir(runtime_dir, lock_name):
    """Create ``runtime_dir`` and take the exclusive lock ``lock_name`` (a file in it): one run at a time
    uses the directory. Returns the lock's descriptor (release_runtime_dir), or None when another run
    holds it."""
    os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
    lock = os.open(os.path.join(runtime_dir, lock_name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None
    return lock


def release_runtime_dir(runtime_dir, lock_name, lock):
    """The end of a run that holds ``lock`` (lock_runtime_dir): remove the collection built for it and,
    when only lock files are left, the directory; then let the lock go."""
    shutil.rmtree(os.path.join(runtime_dir, COLLECTION_DIR), ignore_errors=True)
    if not [e for e in os.listdir(runtime_dir) if e not in (lock_name, '.locks')]:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    os.close(lock)


def build_collection(rev, workdir):
    """The collection as committed at ``rev`` (git archive), built and installed under ``workdir``, so that
    edits in the working tree or a reinstall of .build/collections during the run do not change what is
    measured. Returns (commit, collections path)."""
    src, out, dest = (os.path.join(workdir, d) for d in ('src', 'build', 'collections'))
    os.makedirs(src)
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', rev], capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(['git', '-C', ROOT, 'archive', commit], capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', src], input=archive, check=True)
    subprocess.run(['ansible-galaxy', 'collection', 'build', '--output-path', out, src], capture_output=True, check=True)
    tarball = [os.path.join(out, f) for f in os.listdir(out) if f.endswith('.tar.gz')][0]
    subprocess.run(['ansible-galaxy', 'collection', 'install', '--offline', '--force', '-p', dest, tarball],
                   capture_output=True, check=True)
    return commit, dest


def collection_to_measure(rev, runtime_dir):
    """(commit, collections path) of the collection a run measures: with ``rev`` (--git-rev), the
    collection as committed at ``rev``, built into RUNTIME_DIR/.collection; without, (None,
    ANSIBLE_COLLECTIONS_PATH as it is set, '' when it is not). Raises BenchError when the build fails."""
    if not rev:
        return None, os.environ.get('ANSIBLE_COLLECTIONS_PATH', '')
    workdir = os.path.join(runtime_dir, COLLECTION_DIR)
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        return build_collection(rev, workdir)
    except (subprocess.CalledProcessError, OSError, IndexError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise BenchError('cannot build the collection at %s: %s %s' % (rev, exc, getattr(exc, 'stderr', '') or ''))


def start_run(ap, runtime_dir, lock_name, rev, other):
    """The start of a run: the lock on ``runtime_dir`` (lock_runtime_dir) and the collection it measures
    (collection_to_measure); ``ap.error`` (argparse) when another run holds the lock ('OTHER uses DIR') or
    the build fails. Returns (lock, commit, collections path)."""
    lock = lock_runtime_dir(runtime_dir, lock_name)
    if lock is None:
        ap.error('%s uses %s' % (other, runtime_dir))
    try:
        commit, collections = collection_to_measure(rev, runtime_dir)
    except BenchError as exc:
        ap.error(str(exc))
    return lock, commit, collections


def collection_identity(collections):
    """sha256 (16 hex digits) of the installed engine files (ENGINE_FILES), to tell which code was measured."""
    base = os.path.join(collections.split(':')[0], 'ansible_collections', 'liveupdate', 'qemu', 'plugins')
    ident = {}
    for rel in ENGINE_FILES:
        with open(os.path.join(base, rel), 'rb') as handle:
            ident[rel] = hashlib.sha256(handle.read()).hexdigest()[:16]
    return ident


# --- Ansible ---

def snapshot_collection(dest):
    """A copy of the installed collection (ANSIBLE_COLLECTIONS_PATH) under ``dest`` for one run alone:
    scripts/setup.sh reinstalls .build/collections whenever a source changes, and a run must not see it
    half-installed. Returns the collections path to use."""
    from ansible_collections.liveupdate.qemu.plugins.module_utils._wait import WaitTimeout, wait_for
    if COLLECTIONS is None:
        raise BenchError('liveupdate.qemu is not installed in ANSIBLE_COLLECTIONS_PATH: source .build/env.sh first')
    source = os.path.join(COLLECTIONS, 'ansible_collections', 'liveupdate', 'qemu')
    target = os.path.join(dest, 'ansible_collections', 'liveupdate', 'qemu')
    if os.path.isdir(target):
        return dest

    def copied():
        try:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__'))
            if os.path.isfile(os.path.join(target, 'MANIFEST.json')):
                return dest
        except (OSError, shutil.Error):
            pass
        shutil.rmtree(target, ignore_errors=True)  # being reinstalled right now: again in a moment
        return None

    try:
        return wait_for(copied, 20, 'a complete copy of %s' % source, interval=2)
    except WaitTimeout:
        raise BenchError('could not copy the installed collection from %s' % source)


class Ansible:
    """Ansible runs against one installed copy of the collection (``collections``).

    ``module``: ``ansible localhost -m liveupdate.qemu.MODULE`` with ``module_args`` added to the
    arguments; the module's result, with the command's wall time in ``_wall_s``.
    ``playbook``: ``ansible-playbook`` with the benchmark callback (callback_plugins/), its output
    in a log file under ``workdir``; wall time, exit code, output and the callback's records."""

    def __init__(self, collections, workdir=None, module_args=None):
        self.workdir = workdir
        self.module_args = dict(module_args or {})
        self.runs = itertools.count(1)  # playbook() is called from several threads at once
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, PYTHONPATH=collections,
                        ANSIBLE_CALLBACK_PLUGINS=CALLBACK_DIR, ANSIBLE_CALLBACKS_ENABLED=CALLBACK_NAME,
                        ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_LOCALHOST_WARNING='0',
                        ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_DEPRECATION_WARNINGS='0',
                        ANSIBLE_HOST_KEY_CHECKING='False', ANSIBLE_RETRY_FILES_ENABLED='False')

    def module(self, module, args, timeout=900):
        args = dict(args, **self.module_args)
        cmd = ['ansible', 'localhost', '-e', 'ansible_python_interpreter=%s' % sys.executable,
               '-m', 'liveupdate.qemu.%s' % module, '-a', json.dumps(args)]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        wall = time.monotonic() - start
        out = proc.stdout
        marker = out.find('=>')
        if marker < 0:
            raise BenchError('ansible -m %s printed no result (rc %d):\n%s\n%s' % (module, proc.returncode, out, proc.stderr))
        result = json.JSONDecoder().raw_decode(out[marker + 2:].lstrip())[0]
        result['_wall_s'] = wall
        return result

    def playbook(self, label, playbook, inventory, extra, extra_env=None, timeout=1800, check=True):
        """Run ``playbook`` (a path, or the name of one in benchmarks/playbooks) with ``extra`` as extra vars."""
        if os.sep not in playbook:
            playbook = os.path.join(PLAYBOOK_DIR, playbook)
        tag = '%03d-%s' % (next(self.runs), label)
        vars_file = os.path.join(self.workdir, tag + '.vars.json')
        with open(vars_file, 'w') as handle:
            json.dump(extra, handle)
        timer = os.path.join(self.workdir, tag + '.timer.json')
        logfile = os.path.join(self.workdir, tag + '.log')
        env = dict(self.env, FLEETBENCH_TIMER_OUT=timer, **(extra_env or {}))
        argv = ['ansible-playbook', '-i', inventory, '-e', '@' + vars_file, playbook]
        launched = time.time()
        start = time.monotonic()
        with open(logfile, 'w') as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
        wall = time.monotonic() - start
        with open(logfile) as handle:
            output = handle.read()
        if check and proc.returncode != 0:
            raise BenchError('%s failed (exit %d), log %s:\n%s' % (' '.join(argv), proc.returncode, logfile, output[-4000:]))
        records = None
        if os.path.exists(timer):
            with open(timer) as handle:
                records = json.load(handle)
            records['launched'] = launched
        return dict(wall=wall, rc=proc.returncode, output=output, records=records, log=logfile)


def module_defaults(collections, module):
    """The defaults of ``module``'s options (its argument_spec, read from the installed module file) plus
    the common options: the params the module hands its manager when given nothing else, for benchmarks
    that drive the managers in-process."""
    import ast
    from ansible_collections.liveupdate.qemu.plugins.module_utils._module import COMMON_ARGS
    path = os.path.join(collections, 'ansible_collections', 'liveupdate', 'qemu', 'plugins', 'modules', module + '.py')
    with open(path) as handle:
        tree = ast.parse(handle.read())
    spec = next(kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                for kw in node.keywords if kw.arg == 'argument_spec')
    names = None  # the module's own globals, for defaults that name a constant (DEFAULT_SAVE_DIR)
    params = {}
    for option in spec.keywords:
        default = next((kw.value for kw in option.value.keywords if kw.arg == 'default'), None)
        if isinstance(default, ast.Name):
            if names is None:
                import importlib
                names = vars(importlib.import_module('ansible_collections.liveupdate.qemu.plugins.modules.' + module))
            params[option.arg] = names[default.id]
        else:
            params[option.arg] = ast.literal_eval(default) if default is not None else None
    for name, option in COMMON_ARGS.items():
        params[name] = option.get('default')
    return params
