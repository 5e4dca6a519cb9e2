# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VMs launched by hand, the way an operator starts QEMU without liveupdate.qemu.vm
(issue 13): a plain command line with -daemonize and -pidfile, RAM in a shared memory
file under /dev/shm, QMP and consoles on unix sockets of the operator's own directory.

Also the console clients of such a VM: a reader that follows the guest's serial socket
(reconnecting when the QEMU behind it changes) and a stalled client that never reads.

Standard library only (plus tools/guestlog.py and harness.qemu_pids_under)."""

from __future__ import annotations

import array
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
import urllib.request

from harness import guestlog, qemu_pids_under

# Under /dev/shm. Deliberately NOT 'liveupdate-qemu-lut-': the runtime_dir fixture of every test
# session unlinks all files with that prefix when it ends, those of concurrent sessions included,
# which pulls the RAM file from under a running VM of another session.
SHM_PREFIX = 'lu-opvm-'
APPEND = 'console=ttyS0 quiet lu.fill_mb=8'


def free_tcp_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def qmp(path, command, arguments=None, timeout=10):
    """One QMP command over a fresh connection (a QMP socket serves one client at a time:
    never hold it while the engine works). Returns the 'return' value; raises on 'error'."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    try:
        reader = sock.makefile('rb')

        def reply():
            while True:
                line = reader.readline()
                if not line:
                    raise ConnectionError('QMP %s closed' % path)
                msg = json.loads(line)
                if 'event' not in msg:
                    return msg

        reply()  # greeting
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        reply()
        req = {'execute': command}
        if arguments:
            req['arguments'] = arguments
        sock.sendall(json.dumps(req).encode() + b'\n')
        msg = reply()
        if 'error' in msg:
            raise RuntimeError('QMP %s: %s' % (command, msg['error']))
        return msg['return']
    finally:
        sock.close()


def peer_pid(path):
    """Pid of the process listening on unix socket ``path`` (SO_PEERCRED)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return array.array('i', creds)[0]
    finally:
        sock.close()


def unix_greeting(path, size=12, timeout=5):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(path)
    try:
        return sock.recv(size)
    finally:
        sock.close()


class OperatorVM:
    """A QEMU started by hand. Keyword options:

    machine     'q35' or 'pc'
    smp         vCPUs
    serial      'socket' (-chardev socket,server=on,wait=off + -serial chardev:ser0) or
                'file' (-serial file:PATH)
    disk        path of a qcow2 image (virtio-blk, the guest writes records: lu.disk=1)
    net         user networking on virtio-net; with a port, hostfwd of that port to the guest's
                httpd (lu.http=1). True: QEMU's own (slirp); 'passt': a passt started by hand
                beforehand, and -netdev stream to it in libvirt's JSON form
    qga         a guest agent channel on a unix socket (virtio-serial)
    vnc         VNC on a unix socket
    """

    def __init__(self, root, name, binary, guest_dir, machine='q35', smp=1, memory_mb=256, serial='socket',
                 disk=None, net=False, http_port=None, qga=False, vnc=False, extra_append=''):
        token = secrets.token_hex(3)
        self.name = name
        self.binary = binary
        self.dir = os.path.join(root, '%s-%s' % (name, token))
        self.memory_file = '/dev/shm/%s%d-%s-%s' % (SHM_PREFIX, os.getpid(), name, token)
        self.qmp_socket = os.path.join(self.dir, 'qmp.sock')
        self.serial_socket = os.path.join(self.dir, 'serial.sock') if serial == 'socket' else None
        self.serial_file = os.path.join(self.dir, 'serial.log') if serial == 'file' else None
        self.qga_socket = os.path.join(self.dir, 'qga.sock') if qga else None
        self.vnc_socket = os.path.join(self.dir, 'vnc.sock') if vnc else None
        self.pidfile = os.path.join(self.dir, 'qemu.pid')
        self.passt_socket = os.path.join(self.dir, 'passt.sock') if net == 'passt' else None
        self.passt = None  # its Popen, once started
        self.disk = disk
        self.http_port = http_port
        self.smp = smp
        self.machine = machine
        append = APPEND
        if disk:
            append += ' lu.disk=1'
        if net and http_port:
            append += ' lu.http=1'
        if extra_append:
            append += ' ' + extra_append
        argv = [binary, '-name', 'op-%s' % name,
                '-machine', '%s,memory-backend=mem0' % machine, '-accel', 'tcg',
                '-m', '%dM' % memory_mb,
                '-object', 'memory-backend-file,id=mem0,size=%dM,mem-path=%s,share=on' % (memory_mb, self.memory_file),
                '-smp', str(smp),
                '-kernel', os.path.join(guest_dir, 'vmlinux'), '-initrd', os.path.join(guest_dir, 'initramfs.gz'),
                '-append', append,
                '-display', 'none']
        if serial == 'socket':
            argv += ['-chardev', 'socket,id=ser0,path=%s,server=on,wait=off' % self.serial_socket,
                     '-serial', 'chardev:ser0']
        elif serial == 'file':
            argv += ['-serial', 'file:%s' % self.serial_file]
        else:
            raise ValueError(serial)
        if disk:
            argv += ['-drive', 'file=%s,format=qcow2,if=virtio' % disk]
        if net == 'passt':
            netdev = json.dumps({'type': 'stream', 'addr': {'type': 'unix', 'path': self.passt_socket},
                                 'server': False, 'id': 'net0'})
            argv += ['-netdev', netdev, '-device', 'virtio-net-pci,netdev=net0']
        elif net:
            netdev = 'user,id=net0'
            if http_port:
                netdev += ',hostfwd=tcp:127.0.0.1:%d-:80' % http_port
            argv += ['-netdev', netdev, '-device', 'virtio-net-pci,netdev=net0']
        if qga:
            argv += ['-chardev', 'socket,path=%s,server=on,wait=off,id=qga0' % self.qga_socket,
                     '-device', 'virtio-serial',
                     '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0']
        if vnc:
            argv += ['-vnc', 'unix:%s' % self.vnc_socket]
        argv += ['-qmp', 'unix:%s,server=on,wait=off' % self.qmp_socket,
                 '-pidfile', self.pidfile, '-daemonize']
        self.argv = argv
        self.pid = None

    # --- life cycle ---

    def start(self):
        os.makedirs(self.dir, mode=0o700)
        if self.passt_socket:
            passt = ['passt', '--foreground', '--one-off', '--quiet', '--runas', '0', '--socket', self.passt_socket,
                     '--address', '10.0.2.15', '--netmask', '24', '--gateway', '10.0.2.2', '--ipv4-only']
            if self.http_port:
                passt += ['--tcp-ports', '127.0.0.1/%d:80' % self.http_port]
            self.passt = subprocess.Popen(passt, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 10
            while not os.path.exists(self.passt_socket) and time.monotonic() < deadline:
                time.sleep(0.02)
        proc = subprocess.run(self.argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)
        if proc.returncode != 0:
            raise AssertionError('hand-launched QEMU failed (rc %d): %s\nargv: %s'
                                 % (proc.returncode, proc.stderr.strip(), self.argv))
        with open(self.pidfile) as handle:
            self.pid = int(handle.read().strip())
        return self

    def pids(self):
        """Every QEMU of this VM: its memory file or its directory is on the command line
        (a live update's destination has both)."""
        return sorted(set(qemu_pids_under(self.memory_file)) | set(qemu_pids_under(self.dir)))

    def destroy(self):
        """Kill every QEMU of this VM and remove its files. Returns what was left over
        after that (must be nothing)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.passt is not None:
            self.passt.kill()
            self.passt.wait()
        if os.path.exists(self.memory_file):
            os.unlink(self.memory_file)
        shutil.rmtree(self.dir, ignore_errors=True)
        left = ['QEMU pid %d' % pid for pid in self.pids()]
        left += [p for p in (self.memory_file, self.dir) if os.path.exists(p)]
        return left

    # --- state ---

    def qmp(self, command, arguments=None):
        return qmp(self.qmp_socket, command, arguments)

    def status(self):
        return self.qmp('query-status')['status']

    def pidfile_pid(self):
        with open(self.pidfile) as handle:
            return int(handle.read().strip())

    def temporaries(self):
        return sorted(f for f in os.listdir(self.dir) if '.lu-' in f)

    def http_boot_id(self):
        with urllib.request.urlopen('http://127.0.0.1:%d/' % self.http_port, timeout=10) as reply:
            return reply.read().decode().strip()

    def serial_summary(self):
        return guestlog.parse_file(self.serial_file)

    def wait_serial_file(self, predicate, timeout):
        return guestlog.wait_for(self.serial_file, predicate, timeout)


class SerialReader:
    """Reads a serial console socket in a thread and parses what arrives (tools/guestlog.py).
    When the QEMU behind the socket goes (EOF) it connects again to the same path, so it
    follows the console across a live update; ``connections`` counts the connections."""

    def __init__(self, path, reconnect=True):
        self.path = path
        self.reconnect = reconnect
        self.parser = guestlog.LogParser()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.connections = 0
        self.bytes = 0
        self.arrivals = []  # (monotonic time, counter) of each heartbeat as it arrived
        self.sock = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _connect(self):
        while not self.stop_event.is_set():
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                time.sleep(0.02)
                continue
            sock.settimeout(0.2)
            self.connections += 1
            return sock
        return None

    def _run(self):
        while not self.stop_event.is_set():
            sock = self.sock = self._connect()
            if sock is None:
                return
            try:
                while not self.stop_event.is_set():
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    with self.lock:
                        self.bytes += len(data)
                        before = self.parser.summary.hb_count
                        summary = self.parser.feed(data.decode('utf-8', 'replace'))
                        now = time.monotonic()
                        self.arrivals += [(now, hb[0]) for hb in summary.heartbeats[before:]]
            finally:
                sock.close()
            if not self.reconnect:
                return

    def summary(self):
        with self.lock:
            return self.parser.summary

    def heartbeats(self):
        with self.lock:
            return list(self.parser.summary.heartbeats)

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(self.parser.summary):
                    return self.parser.summary
            if time.monotonic() >= deadline:
                raise TimeoutError('%s: condition not met within %gs (%d bytes, %d heartbeats, %d connections)'
                                   % (self.path, timeout, self.bytes, self.summary().hb_count, self.connections))
            time.sleep(0.05)

    def close(self):
        self.stop_event.set()
        self.thread.join(timeout=5)


def unread_bytes(sock):
    """Bytes queued on ``sock`` that nobody has read yet (SIOCINQ)."""
    buf = array.array('i', [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


class StalledClient:
    """A console client that connects and then never reads: a logger that hung. With the
    1-byte writes of the emulated UART the socket's send buffer is full after a few hundred
    bytes, and QEMU's UART then waits for the chardev to become writable again."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)

    def wait_full(self, settle=1.5, timeout=30):
        """Wait until the bytes queued for this client stop growing for ``settle`` seconds
        (the guest prints 10 lines a second, so a stop means QEMU is blocked). Returns the
        number of bytes queued."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = unread_bytes(self.sock)
            if now != last:
                last, since = now, time.monotonic()
            elif now > 0 and time.monotonic() - since >= settle:
                return now
            time.sleep(0.05)
        raise TimeoutError('stalled client on %s: queued bytes still growing (or none) after %ds: %d'
                           % (self.path, timeout, last))

    def drain(self, timeout=5):
        """Read what was queued until EOF (or ``timeout``); returns the bytes."""
        self.sock.settimeout(timeout)
        data = b''
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data

    def close(self):
        self.sock.close()
