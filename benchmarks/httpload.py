# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP/1.1 keep-alive load generator with per-request timing, to see what clients of a guest's
web server notice while its QEMU is live-updated: a pause shows as a few slow requests, a broken
connection as failed ones (reset, EOF) and reconnects.

Python standard library only (asyncio), so it runs on any host with Python 3.11 and no venv:

    from httpload import LoadGenerator
    gen = LoadGenerator('127.0.0.1', 8080, connections=8)
    gen.start()                       # background thread with its own event loop
    gen.wait_ready()                  # every connection open and answered once
    ...                               # live-update the VM
    res = gen.stop()                  # Results
    assert res.failed == 0 and res.reconnects == 0
    res.worst(t_switch - 1, t_switch + 5), res.percentile(99), res.as_dict()

    python3 benchmarks/httpload.py --host 127.0.0.1 --port 8080 --seconds 20 --connections 8 --json

Each connection is one persistent TCP connection doing ``GET PATH`` back to back (``think``
seconds apart). A request's latency runs from its start (including the connect when the connection
had to be re-opened) to the last byte of the body. Any failure (refused, reset, EOF, timeout, a
status other than 200, a response that is not well-formed HTTP/1.1 with Content-Length) is
recorded, the connection is closed, and the next request opens a new one (a reconnect). Bounded by
``max_seconds`` and ``max_requests`` even if nobody calls stop(): a forgotten generator must not
load a server forever.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import errno
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass

__all__ = ['LoadGenerator', 'Results', 'Sample', 'ProtocolError', 'main']

OK = 'ok'
# Outcomes other than OK. A Sample's outcome is one of these, or 'error:<ERRNO NAME>' for another
# OSError (EHOSTUNREACH, ...).
REFUSED, RESET, EOF, TIMEOUT, BAD_STATUS, BAD_RESPONSE, BAD_BODY = (
    'refused', 'reset', 'eof', 'timeout', 'bad_status', 'bad_response', 'bad_body')

MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x response this client understands."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One request. ``latency`` is seconds to the last body byte, or to the failure."""

    conn: int  # connection index, 0 .. connections-1
    start_mono: float  # time.monotonic() at the start
    start_wall: float  # time.time() at the start: to line requests up with other logs
    latency: float
    outcome: str  # 'ok', or the error (see the constants above)
    status: int | None = None  # HTTP status, when a status line was read
    detail: str = ''  # the error message, for failures

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def end_wall(self) -> float:
        return self.start_wall + self.latency


def _quantile(sorted_values, p):
    """Linear interpolation between closest ranks (numpy's default); p in [0, 100]."""
    if not sorted_values:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f'percentile must be within [0, 100], not {p}')
    pos = (len(sorted_values) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Results:
    """What a run measured. Counts and statistics are over the recorded samples; percentiles over
    successful requests only (a timeout's 5 s is a failure, not a latency)."""

    def __init__(self, samples, reconnects, started, stopped, params):
        self.samples: list[Sample] = list(samples)
        self.reconnects: int = reconnects
        self.started: float = started  # wall clock
        self.stopped: float = stopped
        self.params: dict = dict(params)
        self._ok_sorted = sorted(s.latency for s in self.samples if s.ok)

    @property
    def requests(self) -> int:
        return len(self.samples)

    @property
    def ok(self) -> int:
        return len(self._ok_sorted)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def errors(self) -> dict[str, int]:
        """Failed requests by outcome."""
        return dict(collections.Counter(s.outcome for s in self.samples if not s.ok))

    @property
    def duration(self) -> float:
        return max(self.stopped - self.started, 0.0)

    def window(self, start=None, end=None) -> list[Sample]:
        """Requests whose [start, end] (wall clock) overlaps [start, end]; None = unbounded."""
        lo = float('-inf') if start is None else start
        hi = float('inf') if end is None else end
        return [s for s in self.samples if s.start_wall <= hi and s.end_wall >= lo]

    def worst(self, start=None, end=None) -> float | None:
        """Worst latency (seconds) of the requests overlapping the wall-clock window, failed ones
        included (their time to failure): a request stalled across a VM pause overlaps the pause
        even when it started before it. None when no request overlaps."""
        return max((s.latency for s in self.window(start, end)), default=None)

    def percentile(self, p) -> float | None:
        """Latency percentile (seconds, p in [0, 100]) of the successful requests; None if none."""
        return _quantile(self._ok_sorted, p)

    def as_dict(self, samples=False) -> dict:
        """A JSON-ready summary (latencies in ms); with samples=True also every request."""
        failures = self.failures
        d = {
            **self.params,
            'started': self.started,
            'stopped': self.stopped,
            'duration_s': round(self.duration, 3),
            'requests': self.requests,
            'ok': self.ok,
            'failed': self.failed,
            'reconnects': self.reconnects,
            'errors': self.errors,
            'rate_rps': round(self.requests / self.duration, 1) if self.duration else None,
            'latency_ms': {
                'min': ms(self._ok_sorted[0]) if self._ok_sorted else None,
                'mean': ms(sum(self._ok_sorted) / self.ok) if self.ok else None,
                'p50': ms(self.percentile(50)),
                'p90': ms(self.percentile(90)),
                'p99': ms(self.percentile(99)),
                'p99.9': ms(self.percentile(99.9)),
                'max': ms(self._ok_sorted[-1]) if self._ok_sorted else None,
            },
            'worst_ms': ms(self.worst()),
            'first_failure': min(s.start_wall for s in failures) if failures else None,
            'last_failure': max(s.end_wall for s in failures) if failures else None,
        }
        if samples:
            d['samples'] = [asdict(s) for s in self.samples]
        return d


def ms(seconds):
    """Seconds as milliseconds (None stays None)."""
    return None if seconds is None else round(seconds * 1000.0, 3)


async def read_response(reader: asyncio.StreamReader):
    """Read one response; return (status, body, keep_alive). EOF before the first byte or inside
    the response raises EOFError; anything not HTTP/1.x with a Content-Length body (chunked, a
    missing or bad length, garbage) raises ProtocolError: this client only talks to servers whose
    answers it can frame exactly."""
    line = await reader.readline()
    if not line.endswith(b'\n'):
        raise EOFError('connection closed before the status line' if not line
                       else 'connection closed inside the status line')
    parts = line.rstrip(b'\r\n').split(b' ', 2)
    if len(parts) < 2 or parts[0] not in (b'HTTP/1.1', b'HTTP/1.0') or \
            len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError(f'bad status line {line[:80]!r}')
    version, status = parts[0], int(parts[1])
    headers = {}
    for dummy in range(MAX_HEADERS + 1):
        line = await reader.readline()
        if not line.endswith(b'\n'):
            raise EOFError('connection closed inside the headers')
        if line in (b'\r\n', b'\n'):
            break
        name, sep, value = line.partition(b':')
        if not sep or not name or name != name.strip():
            raise ProtocolError(f'bad header line {line[:80]!r}')
        name = name.decode('latin-1').lower()
        value = value.strip().decode('latin-1')
        if name in headers and name == 'content-length' and headers[name] != value:
            raise ProtocolError('conflicting Content-Length headers')
        headers[name] = value
    else:
        raise ProtocolError(f'more than {MAX_HEADERS} headers')
    if 'transfer-encoding' in headers:
        raise ProtocolError(f'Transfer-Encoding {headers["transfer-encoding"]!r} not supported')
    length = headers.get('content-length')
    if length is None or not length.isdigit() or int(length) > MAX_BODY:
        raise ProtocolError(f'no usable Content-Length ({length!r})')
    try:
        body = await reader.readexactly(int(length))
    except asyncio.IncompleteReadError as e:
        raise EOFError(f'connection closed after {len(e.partial)} of {length} body bytes') from None
    conn = headers.get('connection', '').lower()
    keep_alive = 'close' not in conn if version == b'HTTP/1.1' else 'keep-alive' in conn
    return status, body, keep_alive


def _classify(exc):
    """(outcome, detail) of a failed request."""
    if isinstance(exc, TimeoutError):
        return TIMEOUT, 'no complete response within the request timeout'
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED, str(exc)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return RESET, str(exc)
    if isinstance(exc, (EOFError, asyncio.IncompleteReadError)):
        return EOF, str(exc)
    if isinstance(exc, ProtocolError):
        return BAD_RESPONSE, str(exc)
    if isinstance(exc, ValueError):  # StreamReader: a line longer than its limit
        return BAD_RESPONSE, str(exc)
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__
        return f'error:{name}', str(exc)
    return f'error:{type(exc).__name__}', str(exc)


class LoadGenerator:
    """``connections`` persistent HTTP/1.1 connections to host:port, each doing ``GET path`` back
    to back with ``think`` seconds between requests, until stop() (or ``max_seconds`` /
    ``max_requests``). ``timeout`` bounds each request, connect included. ``expect``: bytes (or
    str) the body must contain, else the request fails as 'bad_body' (e.g. the guest's boot id:
    proves the same guest answers throughout). After a failure the connection waits
    ``retry_delay`` before reconnecting, so a refused port is not hammered."""

    def __init__(self, host, port, path='/', connections=8, think=0.01, timeout=5.0, *,
                 expect=None, retry_delay=0.1, max_seconds=3600.0, max_requests=None):
        if connections < 1:
            raise ValueError('connections must be >= 1')
        self.host, self.port, self.path = host, int(port), path
        self.connections, self.think, self.timeout = connections, think, timeout
        self.expect = expect.encode() if isinstance(expect, str) else expect
        self.retry_delay, self.max_seconds, self.max_requests = retry_delay, max_seconds, max_requests
        self._request = (f'GET {path} HTTP/1.1\r\nHost: {host}:{self.port}\r\n'
                         'User-Agent: liveupdate-httpload\r\nAccept: */*\r\n\r\n').encode('latin-1')
        self._samples: list[Sample] = []  # appended by the loop thread only
        self._reconnects = 0
        self._thread = None
        self._loop = None
        self._stop = None  # asyncio.Event, created in the loop
        self._started = self._stopped = None
        self._error = None
        self._results = None

    def params(self):
        return {'host': self.host, 'port': self.port, 'path': self.path,
                'connections': self.connections, 'think': self.think, 'timeout': self.timeout}

    def start(self):
        """Start the load in a background thread (its own event loop); returns once it runs."""
        if self._thread is not None:
            raise RuntimeError('LoadGenerator.start() called twice')
        running = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(running,),
                                        name='httpload', daemon=True)
        self._thread.start()
        running.wait()
        if self._error is not None:
            raise self._error
        return self

    def wait_ready(self, timeout=10.0) -> bool:
        """Block until every connection has had one successful request; False if that takes longer
        than ``timeout``. Worth waiting for before the event being measured: the first request
        pays for the connect, and through QEMU's user-mode hostfwd a few of several simultaneous
        connects take ~1 s (a SYN retransmission), which is not what a test wants to measure."""
        deadline = time.monotonic() + timeout
        seen, pos = set(), 0
        while len(seen) < self.connections:
            samples = self._samples
            for sample in samples[pos:]:
                if sample.ok:
                    seen.add(sample.conn)
            pos = len(samples)
            if time.monotonic() >= deadline or self._error is not None or not self._thread.is_alive():
                return len(seen) == self.connections
            time.sleep(0.01)
        return True

    def stop(self) -> Results:
        """Stop issuing requests and return the Results. Requests in flight are let finish (each is
        bounded by ``timeout``), so every recorded request has its real outcome."""
        if self._results is not None:
            return self._results
        if self._thread is None:
            raise RuntimeError('LoadGenerator.stop() before start()')
        if self._loop is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed on its own (max_seconds / max_requests)
                pass
        self._thread.join(self.timeout + max(self.think, self.retry_delay) + 10)
        if self._thread.is_alive():
            raise RuntimeError('httpload: the load thread did not stop')
        if self._error is not None:
            raise self._error
        self._results = Results(self._samples, self._reconnects, self._started, self._stopped,
                                self.params())
        return self._results

    def snapshot(self) -> Results:
        """Results so far, while the load goes on."""
        return Results(list(self._samples), self._reconnects, self._started or time.time(),
                       self._stopped or time.time(), self.params())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _thread_main(self, running):
        try:
            asyncio.run(self._main(running))
        except BaseException as e:  # noqa: B036 -- handed to the caller by stop()
            self._error = e
        finally:
            running.set()

    async def _main(self, running):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started = time.time()
        deadline = time.monotonic() + self.max_seconds if self.max_seconds else None
        running.set()
        try:
            await asyncio.gather(*(self._connection(i, deadline) for i in range(self.connections)))
        finally:
            self._stopped = time.time()

    def _done(self, deadline):
        return (self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline) or
                (self.max_requests is not None and len(self._samples) >= self.max_requests))

    async def _connection(self, idx, deadline):
        """One client connection: request, record, think; reconnect after a failure."""
        reader = writer = None
        opened_before = False
        while not self._done(deadline):
            t_mono, t_wall = time.monotonic(), time.time()
            status = None
            try:
                async with asyncio.timeout(self.timeout):
                    if writer is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                        if opened_before:
                            self._reconnects += 1
                        opened_before = True
                    writer.write(self._request)
                    await writer.drain()
                    status, body, keep_alive = await read_response(reader)
                if status != 200:
                    outcome, detail = BAD_STATUS, f'HTTP status {status}'
                elif self.expect is not None and self.expect not in body:
                    outcome, detail = BAD_BODY, f'body {body[:80]!r} lacks {self.expect[:80]!r}'
                else:
                    outcome, detail = OK, ''
            except Exception as e:  # noqa: BLE001 -- every failure is a recorded outcome
                outcome, detail = _classify(e)
                keep_alive = False
            self._samples.append(Sample(idx, t_mono, t_wall, time.monotonic() - t_mono,
                                        outcome, status, detail))
            if outcome != OK or not keep_alive:
                await _close(writer)
                reader = writer = None
            delay = self.think if outcome == OK else max(self.think, self.retry_delay)
            if delay > 0:
                await asyncio.sleep(delay)
        await _close(writer)


async def _close(writer):
    """Close without waiting on a peer that may be gone (a paused or killed VM)."""
    if writer is None:
        return
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except Exception:  # noqa: BLE001 -- already failed or closed: nothing to report
        pass


def main(argv=None):
    """CLI: run for --seconds, print a summary (JSON with --json); exit 1 if any request failed."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--path', default='/')
    ap.add_argument('--seconds', type=float, default=10.0, help='how long to run (default 10)')
    ap.add_argument('--connections', type=int, default=8)
    ap.add_argument('--think', type=float, default=0.01, help='seconds between requests (0.01)')
    ap.add_argument('--timeout', type=float, default=5.0, help='per-request timeout (5)')
    ap.add_argument('--expect', help='text every response body must contain')
    ap.add_argument('--json', action='store_true', help='print the summary as JSON')
    ap.add_argument('--samples', metavar='FILE', help='also write every request to FILE (JSON)')
    args = ap.parse_args(argv)
    if not 0 < args.seconds <= 24 * 3600:
        ap.error('--seconds must be within (0, 86400]')

    gen = LoadGenerator(args.host, args.port, args.path, args.connections, args.think,
                        args.timeout, expect=args.expect, max_seconds=args.seconds + 1)
    gen.start()
    try:
        time.sleep(args.seconds)
    except KeyboardInterrupt:
        pass
    res = gen.stop()
    summary = res.as_dict()
    if args.samples:
        with open(args.samples, 'w', encoding='utf-8') as f:
            json.dump(res.as_dict(samples=True), f)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
    else:
        lat = summary['latency_ms']
        print(f"{res.requests} requests in {summary['duration_s']} s ({summary['rate_rps']}/s) "
              f"on {args.connections} connections: {res.failed} failed, {res.reconnects} reconnects")
        print('latency ms: ' + ' '.join(f'{k}={v}' for k, v in lat.items()) +
              f" worst={summary['worst_ms']}")
        if res.failed:
            print('errors: ' + ', '.join(f'{k}={v}' for k, v in sorted(res.errors.items())))
    return 1 if res.failed else 0


if __name__ == '__main__':
    sys.exit(main())
