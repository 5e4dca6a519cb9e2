"""Parse the serial log of the live-update test guest (tools/guest-init.sh).

The guest prints these lines on its console (one per line, possibly ending in CR LF)::

    LU-BOOT <boot_id>
    LU-HB <counter> <boot_id> <uptime_seconds>
    LU-MEM-READY <md5> <mb>
    LU-MEM OK <md5>  |  LU-MEM BAD <md5>
    LU-DISK <n>      |  LU-DISK-ERR <n>
    LU-NET <ifname> <addr/prefix>
    LU-HTTP <port>

The log is appended to by a running QEMU and kernel messages interleave, so anything that does
not match exactly is counted as garbage, and a last line without its newline is held back until
it is completed (or until the caller says the log is final).

Library use::

    s = guestlog.parse_file("serial.log")
    s.last_counter, s.hb_gaps, s.mem_bad, s.disk_gaps
    guestlog.wait_for("serial.log", guestlog.heartbeats_at_least(20), timeout=60)

CLI: ``guestlog.py LOG`` prints a JSON summary; ``--wait-heartbeats N``, ``--wait-mem-ready``,
``--wait-disk N``, ``--wait-http`` with ``--timeout S`` wait first (exit 1 on timeout).
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_MD5 = r"[0-9a-f]{32}"
# Anchored at the end of the line, but anything may precede the marker: a kernel message can
# land on the same console line before it. A line cut short by interleaving does not match
# (uptime always has two decimals in /proc/uptime, md5 and boot id have fixed lengths).
_PATTERNS = [
    ("hb", re.compile(rf"LU-HB (\d+) ({_UUID}) (\d+\.\d\d)$")),
    ("boot", re.compile(rf"LU-BOOT ({_UUID})$")),
    ("mem_ready", re.compile(rf"LU-MEM-READY ({_MD5}) (\d+)$")),
    ("mem", re.compile(rf"LU-MEM (OK|BAD) ({_MD5}|none)$")),
    ("disk", re.compile(r"LU-DISK (\d+)$")),
    ("disk_err", re.compile(r"LU-DISK-ERR (\d+)$")),
    ("net", re.compile(r"LU-NET (\S+) (\S+)$")),
    ("http", re.compile(r"LU-HTTP (\d+)$")),
]
# Where a marker could start: anywhere, since a kernel message without its newline may run into
# it ("...renamedLU-HB 3 ..."). The strict formats keep false matches out.
_MARKER = re.compile(r"LU-")


@dataclass
class Gap:
    """A place where a sequence did not go on as previous + 1 (within one boot)."""

    before: int  # last value seen before the gap
    after: int  # first value seen after it
    missing: int  # values skipped (negative when the sequence went backwards)
    boot_id: Optional[str] = None
    uptime_delta: Optional[float] = None  # heartbeats: uptime difference across the gap

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Summary:
    """What the log showed so far. Built incrementally by LogParser."""

    boot_ids: List[str] = field(default_factory=list)  # in order of first appearance
    boots: int = 0  # LU-BOOT lines
    heartbeats: List[Tuple[int, str, float]] = field(default_factory=list)
    hb_gaps: List[Gap] = field(default_factory=list)
    max_uptime_gap: Optional[float] = None  # largest uptime step between consecutive heartbeats
    max_uptime_gap_at: Optional[int] = None  # counter after that step
    mem_ready_md5: Optional[str] = None
    mem_ready_mb: Optional[int] = None
    mem_ok: int = 0
    mem_bad: int = 0
    mem_last_md5: Optional[str] = None
    mem_md5_changed: bool = False  # some verdict's md5 differed from the READY md5
    disk_records: List[int] = field(default_factory=list)
    disk_gaps: List[Gap] = field(default_factory=list)
    disk_errors: int = 0
    net: Optional[Tuple[str, str]] = None
    http_port: Optional[int] = None
    lines: int = 0
    garbage: int = 0  # lines that were not well-formed LU-* lines (kernel messages included)
    partial: bool = False  # the log ended in an unterminated line (held back)

    @property
    def last_counter(self) -> Optional[int]:
        return self.heartbeats[-1][0] if self.heartbeats else None

    @property
    def last_boot_id(self) -> Optional[str]:
        return self.boot_ids[-1] if self.boot_ids else None

    @property
    def last_uptime(self) -> Optional[float]:
        return self.heartbeats[-1][2] if self.heartbeats else None

    @property
    def hb_count(self) -> int:
        return len(self.heartbeats)

    @property
    def last_disk_record(self) -> Optional[int]:
        return self.disk_records[-1] if self.disk_records else None

    @property
    def continuous(self) -> bool:
        """One boot, no heartbeat gap, memory never bad, no disk gap."""
        return (
            len(self.boot_ids) <= 1
            and not self.hb_gaps
            and self.mem_bad == 0
            and not self.mem_md5_changed
            and not self.disk_gaps
        )

    def as_dict(self) -> dict:
        hb = self.heartbeats
        return {
            "boot_ids": list(self.boot_ids),
            "boots": self.boots,
            "heartbeats": {
                "count": len(hb),
                "first": hb[0][0] if hb else None,
                "last": self.last_counter,
                "last_uptime": self.last_uptime,
                "gaps": [g.as_dict() for g in self.hb_gaps],
                "max_uptime_gap": self.max_uptime_gap,
                "max_uptime_gap_at": self.max_uptime_gap_at,
            },
            "mem": {
                "ready_md5": self.mem_ready_md5,
                "ready_mb": self.mem_ready_mb,
                "ok": self.mem_ok,
                "bad": self.mem_bad,
                "last_md5": self.mem_last_md5,
                "md5_changed": self.mem_md5_changed,
            },
            "disk": {
                "count": len(self.disk_records),
                "first": self.disk_records[0] if self.disk_records else None,
                "last": self.last_disk_record,
                "gaps": [g.as_dict() for g in self.disk_gaps],
                "errors": self.disk_errors,
            },
            "net": list(self.net) if self.net else None,
            "http_port": self.http_port,
            "lines": self.lines,
            "garbage": self.garbage,
            "partial": self.partial,
            "continuous": self.continuous,
        }


def match_line(line: str) -> Optional[Tuple[str, tuple]]:
    """(kind, groups) of an LU-* line, or None. Tolerates text before the marker."""
    line = line.rstrip("\r\n").rstrip()
    for m in reversed(list(_MARKER.finditer(line))):
        tail = line[m.start():]
        for kind, rx in _PATTERNS:
            mm = rx.match(tail)
            if mm:
                return kind, mm.groups()
    return None


class LogParser:
    """Incremental parser: feed() text as it arrives, read .summary at any time."""

    def __init__(self) -> None:
        self.summary = Summary()
        self._buf = ""
        self._hb_boot: Optional[str] = None  # boot id of the previous heartbeat
        self._disk_boot = 0  # LU-BOOT count when the previous disk record was seen

    def feed(self, text: str) -> Summary:
        self._buf += text
        *complete, self._buf = re.split(r"\r?\n|\r(?!$)", self._buf)
        for line in complete:
            self._line(line)
        self.summary.partial = bool(self._buf.strip())
        return self.summary

    def finish(self) -> Summary:
        """The log is complete: parse the last line even without its newline."""
        if self._buf:
            self._line(self._buf)
            self._buf = ""
        self.summary.partial = False
        return self.summary

    def _add_boot_id(self, boot_id: str) -> None:
        if boot_id not in self.summary.boot_ids:
            self.summary.boot_ids.append(boot_id)

    def _line(self, line: str) -> None:
        s = self.summary
        if not line.strip():
            return
        s.lines += 1
        got = match_line(line)
        if got is None:
            s.garbage += 1
            return
        kind, g = got
        if kind == "hb":
            counter, boot_id, up = int(g[0]), g[1], float(g[2])
            self._add_boot_id(boot_id)
            if s.heartbeats and self._hb_boot == boot_id:
                pc, pu = s.heartbeats[-1][0], s.heartbeats[-1][2]
                du = round(up - pu, 2)
                if counter != pc + 1:
                    s.hb_gaps.append(Gap(pc, counter, counter - pc - 1, boot_id, du))
                if s.max_uptime_gap is None or du > s.max_uptime_gap:
                    s.max_uptime_gap, s.max_uptime_gap_at = du, counter
            self._hb_boot = boot_id
            s.heartbeats.append((counter, boot_id, up))
        elif kind == "boot":
            s.boots += 1
            self._add_boot_id(g[0])
        elif kind == "mem_ready":
            s.mem_ready_md5, s.mem_ready_mb = g[0], int(g[1])
            s.mem_last_md5 = g[0]
        elif kind == "mem":
            verdict, md5 = g
            if verdict == "OK":
                s.mem_ok += 1
            else:
                s.mem_bad += 1
            if s.mem_last_md5 is not None and md5 != s.mem_last_md5:
                s.mem_md5_changed = True
            if s.mem_ready_md5 is not None and md5 != s.mem_ready_md5:
                s.mem_md5_changed = True
            s.mem_last_md5 = md5
        elif kind == "disk":
            n = int(g[0])
            # A reboot restarts the records at 1: that is not a gap.
            if s.disk_records and self._disk_boot == s.boots and n != s.disk_records[-1] + 1:
                s.disk_gaps.append(Gap(s.disk_records[-1], n, n - s.disk_records[-1] - 1))
            self._disk_boot = s.boots
            s.disk_records.append(n)
        elif kind == "disk_err":
            s.disk_errors += 1
        elif kind == "net":
            s.net = (g[0], g[1])
        elif kind == "http":
            s.http_port = int(g[0])


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def parse_text(text: str, final: bool = True) -> Summary:
    p = LogParser()
    p.feed(text)
    return p.finish() if final else p.summary


def parse_file(path: str, final: bool = False) -> Summary:
    """Parse a log file. final=False (default) holds back an unterminated last line, because a
    running QEMU may be in the middle of writing it."""
    with open(path, "rb") as f:
        return parse_text(_decode(f.read()), final=final)


class LogFollower:
    """Reads a growing log file incrementally (only the new bytes on each poll())."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parser = LogParser()
        self._pos = 0
        self._pending = b""  # an incomplete UTF-8 sequence at the end of the last read

    def poll(self) -> Summary:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._pos:  # truncated: start over
                    self.parser, self._pos, self._pending = LogParser(), 0, b""
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return self.parser.summary
        self._pos += len(data)
        data = self._pending + data
        # Keep a trailing partial multi-byte character for the next read.
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            b = data[-back]
            if b & 0xC0 == 0xC0:  # a lead byte: is its sequence complete?
                need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4
                if back < need:
                    cut = len(data) - back
                break
            if b & 0x80 == 0:
                break
        self._pending = data[cut:]
        return self.parser.feed(_decode(data[:cut]))

    @property
    def summary(self) -> Summary:
        return self.parser.summary


Predicate = Callable[[Summary], bool]


def wait_for(path: str, predicate: Predicate, timeout: float, interval: float = 0.05) -> Summary:
    """Poll the log at PATH until predicate(summary) is true; return that summary.

    Raises TimeoutError (with the last summary as .summary) after TIMEOUT seconds. The file need
    not exist yet."""
    follower = LogFollower(path)
    deadline = time.monotonic() + timeout
    while True:
        s = follower.poll()
        if predicate(s):
            return s
        if time.monotonic() >= deadline:
            err = TimeoutError(
                f"{path}: condition not met within {timeout:g}s "
                f"(heartbeats {s.hb_count}, last {s.last_counter}, mem ready "
                f"{s.mem_ready_md5 is not None}, disk records {len(s.disk_records)})"
            )
            err.summary = s  # type: ignore[attr-defined]
            raise err
        time.sleep(interval)


# Ready-made predicates for wait_for.
def heartbeats_at_least(n: int) -> Predicate:
    return lambda s: s.hb_count >= n


def counter_at_least(n: int) -> Predicate:
    return lambda s: s.last_counter is not None and s.last_counter >= n


def mem_ready(s: Summary) -> bool:
    return s.mem_ready_md5 is not None


def mem_checks_at_least(n: int) -> Predicate:
    return lambda s: s.mem_ok + s.mem_bad >= n


def disk_records_at_least(n: int) -> Predicate:
    return lambda s: len(s.disk_records) >= n


def http_ready(s: Summary) -> bool:
    return s.http_port is not None


def all_of(*preds: Predicate) -> Predicate:
    return lambda s: all(p(s) for p in preds)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="JSON summary of a live-update test guest log")
    ap.add_argument("log")
    ap.add_argument("--wait-heartbeats", type=int, metavar="N")
    ap.add_argument("--wait-mem-ready", action="store_true")
    ap.add_argument("--wait-disk", type=int, metavar="N")
    ap.add_argument("--wait-http", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--final", action="store_true", help="parse an unterminated last line too")
    a = ap.parse_args(argv)
    preds: List[Predicate] = []
    if a.wait_heartbeats:
        preds.append(heartbeats_at_least(a.wait_heartbeats))
    if a.wait_mem_ready:
        preds.append(mem_ready)
    if a.wait_disk:
        preds.append(disk_records_at_least(a.wait_disk))
    if a.wait_http:
        preds.append(http_ready)
    rc = 0
    if preds:
        try:
            s = wait_for(a.log, all_of(*preds), a.timeout)
        except TimeoutError as e:
            print(str(e), file=sys.stderr)
            s, rc = e.summary, 1  # type: ignore[attr-defined]
        if a.final:
            s = parse_file(a.log, final=True)
    else:
        try:
            s = parse_file(a.log, final=a.final)
        except OSError as e:
            print(f"{a.log}: {e.strerror}", file=sys.stderr)
            return 2
    json.dump(s.as_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
