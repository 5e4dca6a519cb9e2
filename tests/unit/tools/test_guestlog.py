"""Unit tests for tools/guestlog.py (the test guest's serial log parser)."""

import json
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
import guestlog  # noqa: E402

A = "73f357cd-2865-4cd6-8654-7d06c8e7c3ba"
B = "134bb316-3a55-49ff-8ab3-b82952db97dc"
M1 = "7da4dcd59c132a972161bc5ce941db53"
M2 = "2a2e197e4253e45863a353c1c8aaeb35"


def hb(n, boot=A, up=None):
    return f"LU-HB {n} {boot} {up if up is not None else 2 + n / 10:.2f}"


@pytest.mark.parametrize(
    "line, expected",
    [
        (f"LU-BOOT {A}", ("boot", (A,))),
        (f"LU-BOOT {A}\r", ("boot", (A,))),
        (hb(7, up=3.5), ("hb", ("7", A, "3.50"))),
        (f"LU-MEM-READY {M1} 16", ("mem_ready", (M1, "16"))),
        (f"LU-MEM OK {M1}", ("mem", ("OK", M1))),
        (f"LU-MEM BAD {M2}", ("mem", ("BAD", M2))),
        ("LU-DISK 12", ("disk", ("12",))),
        ("LU-DISK-ERR 12", ("disk_err", ("12",))),
        ("LU-NET eth0 10.0.2.15/24", ("net", ("eth0", "10.0.2.15/24"))),
        ("LU-HTTP 80", ("http", ("80",))),
        # a kernel message landed on the same console line before the marker
        (f"[    3.141592] virtio_net virtio1 eth0: renamed{hb(3, up=2.3)}", ("hb", ("3", A, "2.30"))),
        (f"garbage {hb(3, up=2.3)}", ("hb", ("3", A, "2.30"))),
        # cut short or damaged: not taken
        (f"LU-HB 7 {A} 3.5", None),
        (f"LU-HB 7 {A[:-3]}", None),
        ("LU-HB 7", None),
        (f"LU-MEM OK {M1[:20]}", None),
        (f"LU-MEM-READY {M1}", None),
        (f"LU-HB 7 {A} 3.50 trailing", None),
        (f"XLU-HB 7 {A} 3.50", ("hb", ("7", A, "3.50"))),
        (f"LU-HB 7 {A} 3.50LU-DISK 4", ("disk", ("4",))),
        (f"LU-BOOT {A.upper()}", None),
        ("LU-DISK", None),
        ("LU-DISK x", None),
        ("", None),
        ("[    0.000000] Linux version 6.1.0-56-amd64", None),
        ("\x00\xff\ufffd binary junk", None),
    ],
)
def test_match_line(line, expected):
    assert guestlog.match_line(line) == expected


def test_continuous_log():
    lines = [f"LU-BOOT {A}"] + [hb(i) for i in range(1, 31)]
    lines[5:5] = [f"LU-MEM-READY {M1} 16", "LU-DISK 1", "LU-DISK 2"]
    lines += [f"LU-MEM OK {M1}", "LU-DISK 3", f"LU-MEM OK {M1}"]
    s = guestlog.parse_text("\r\n".join(lines) + "\r\n")
    assert s.boot_ids == [A]
    assert s.boots == 1
    assert s.hb_count == 30
    assert s.last_counter == 30
    assert s.hb_gaps == []
    assert s.max_uptime_gap == pytest.approx(0.1)
    assert (s.mem_ready_md5, s.mem_ready_mb, s.mem_ok, s.mem_bad) == (M1, 16, 2, 0)
    assert s.mem_last_md5 == M1
    assert not s.mem_md5_changed
    assert s.disk_records == [1, 2, 3]
    assert s.disk_gaps == []
    assert s.garbage == 0
    assert s.continuous


@pytest.mark.parametrize(
    "counters, uptimes, gaps, max_gap",
    [
        # a counter gap: 4 and 5 lost, and the uptime jumped across it
        ([1, 2, 3, 6, 7], [1.0, 1.1, 1.2, 1.5, 1.6], [(3, 6, 2, 0.3)], 0.3),
        # a repeat (the same counter twice) is a gap of -1
        ([1, 2, 2, 3], [1.0, 1.1, 1.1, 1.2], [(2, 2, -1, 0.0)], 0.1),
        # no counter gap but a long pause (e.g. a migration downtime seen by the guest)
        ([1, 2, 3, 4], [1.0, 1.1, 1.95, 2.05], [], 0.85),
        # going backwards in the same boot
        ([5, 6, 1], [1.0, 1.1, 1.2], [(6, 1, -6, 0.1)], 0.1),
    ],
)
def test_heartbeat_gaps(counters, uptimes, gaps, max_gap):
    text = "".join(hb(c, up=u) + "\n" for c, u in zip(counters, uptimes))
    s = guestlog.parse_text(text)
    got = [(g.before, g.after, g.missing, g.uptime_delta) for g in s.hb_gaps]
    assert [g[:3] for g in got] == [g[:3] for g in gaps]
    assert [g[3] for g in got] == pytest.approx([g[3] for g in gaps])
    assert s.max_uptime_gap == pytest.approx(max_gap)
    assert s.last_counter == counters[-1]
    assert s.continuous == (not gaps)


def test_reboot_is_not_a_gap_but_is_seen():
    text = "\n".join(
        [f"LU-BOOT {A}", hb(1), hb(2), "LU-DISK 1", "LU-DISK 2", f"LU-BOOT {B}", hb(1, B), "LU-DISK 1"]
    )
    s = guestlog.parse_text(text + "\n")
    assert s.boot_ids == [A, B]
    assert s.boots == 2
    assert s.hb_gaps == []
    assert s.disk_gaps == []
    assert s.last_boot_id == B
    assert not s.continuous  # two boots


@pytest.mark.parametrize(
    "records, gaps",
    [
        ([1, 2, 3], []),
        ([1, 2, 5, 6], [(2, 5, 2)]),
        ([4, 5, 5], [(5, 5, -1)]),
        ([10], []),
    ],
)
def test_disk_gaps(records, gaps):
    s = guestlog.parse_text("".join(f"LU-DISK {n}\n" for n in records) + "LU-DISK-ERR 7\n")
    assert s.disk_records == records
    assert [(g.before, g.after, g.missing) for g in s.disk_gaps] == gaps
    assert s.disk_errors == 1


@pytest.mark.parametrize(
    "mem_lines, ok, bad, changed, last",
    [
        ([f"LU-MEM OK {M1}"] * 3, 3, 0, False, M1),
        ([f"LU-MEM OK {M1}", f"LU-MEM BAD {M2}", f"LU-MEM OK {M1}"], 2, 1, True, M1),
        ([f"LU-MEM BAD {M2}"], 0, 1, True, M2),
        (["LU-MEM BAD none"], 0, 1, True, "none"),
    ],
)
def test_mem_verdicts(mem_lines, ok, bad, changed, last):
    s = guestlog.parse_text("\n".join([f"LU-MEM-READY {M1} 64"] + mem_lines) + "\n")
    assert (s.mem_ok, s.mem_bad, s.mem_md5_changed, s.mem_last_md5) == (ok, bad, changed, last)
    assert s.mem_ready_mb == 64


def test_garbage_and_interleaving_tolerated():
    text = (
        "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
        "\x1b[2J\x1bc\r\n"
        f"LU-BOOT {A}\r\n"
        f"{hb(1)}\r\n"
        "[    2.7] virtio_blk virtio0: [vda] 131072 512-byte logical blocks\r\n"
        f"LU-HB 2 {A} 2.2[    2.8] random kernel line\r\n"  # heartbeat torn by a kernel message
        f"{hb(3)}\r\n"
        "\xff\xfe\r\n"
        f"{hb(4)}\r\n"
    )
    s = guestlog.parse_text(text)
    assert [h[0] for h in s.heartbeats] == [1, 3, 4]
    assert [(g.before, g.after, g.missing) for g in s.hb_gaps] == [(1, 3, 1)]
    assert s.garbage == 5
    assert s.lines == 9


def test_partial_last_line_held_back_until_completed():
    p = guestlog.LogParser()
    s = p.feed(f"LU-BOOT {A}\n{hb(1)}\nLU-HB 2 {A} 2.")
    assert s.last_counter == 1
    assert s.partial
    s = p.feed("20\r")  # CR without its LF yet: still not a complete line
    assert s.last_counter == 1
    s = p.feed(f"\n{hb(3)}\n")
    assert [h[0] for h in s.heartbeats] == [1, 2, 3]
    assert s.heartbeats[1][2] == pytest.approx(2.2)
    assert not s.partial
    assert s.garbage == 0


def test_final_parses_unterminated_line():
    text = f"{hb(1)}\n{hb(2)}"
    assert guestlog.parse_text(text, final=False).last_counter == 1
    assert guestlog.parse_text(text, final=True).last_counter == 2


def test_feed_byte_by_byte_equals_whole():
    text = f"LU-BOOT {A}\r\n{hb(1)}\r\n[ 1.0] x\r\n{hb(2)}\r\nLU-DISK 1\r\nLU-MEM-READY {M1} 16\r\n"
    p = guestlog.LogParser()
    for ch in text:
        p.feed(ch)
    assert p.summary.as_dict() == guestlog.parse_text(text).as_dict()


def test_follower_reads_only_new_bytes_and_split_utf8(tmp_path):
    log = tmp_path / "serial.log"
    f = guestlog.LogFollower(str(log))
    assert f.poll().hb_count == 0  # no file yet
    data = f"{hb(1)}\n\u00e9\n{hb(2)}\n".encode()
    cut = data.index("\u00e9".encode()) + 1  # in the middle of the two-byte character
    log.write_bytes(data[:cut])
    assert f.poll().hb_count == 1
    with open(log, "ab") as fh:
        fh.write(data[cut:])
    s = f.poll()
    assert s.hb_count == 2
    assert s.garbage == 1  # the "\u00e9" line, decoded whole


def test_follower_restarts_on_truncation(tmp_path):
    log = tmp_path / "serial.log"
    log.write_text(f"{hb(1)}\n{hb(2)}\n{hb(3)}\n")
    f = guestlog.LogFollower(str(log))
    assert f.poll().hb_count == 3
    log.write_text(f"LU-BOOT {B}\n{hb(1, B)}\n")
    s = f.poll()
    assert s.boot_ids == [B]
    assert s.hb_count == 1


def test_wait_for_sees_lines_appended_later(tmp_path):
    log = tmp_path / "serial.log"

    def writer():
        with open(log, "a") as fh:
            for i in range(1, 6):
                fh.write(hb(i) + "\n")
                fh.flush()
                time.sleep(0.02)
            fh.write(f"LU-MEM-READY {M1} 16\n")

    t = threading.Thread(target=writer)
    t.start()
    try:
        s = guestlog.wait_for(
            str(log), guestlog.all_of(guestlog.heartbeats_at_least(5), guestlog.mem_ready), 10, 0.01
        )
    finally:
        t.join()
    assert s.hb_count == 5
    assert s.mem_ready_md5 == M1


def test_wait_for_timeout_carries_summary(tmp_path):
    log = tmp_path / "serial.log"
    log.write_text(hb(1) + "\n")
    with pytest.raises(TimeoutError) as ei:
        guestlog.wait_for(str(log), guestlog.counter_at_least(10), 0.1, 0.02)
    assert ei.value.summary.last_counter == 1


@pytest.mark.parametrize(
    "pred, ok",
    [
        (guestlog.heartbeats_at_least(2), True),
        (guestlog.heartbeats_at_least(3), False),
        (guestlog.counter_at_least(2), True),
        (guestlog.mem_ready, True),
        (guestlog.mem_checks_at_least(1), True),
        (guestlog.mem_checks_at_least(2), False),
        (guestlog.disk_records_at_least(1), False),
        (guestlog.http_ready, True),
    ],
)
def test_predicates(pred, ok):
    s = guestlog.parse_text(
        f"{hb(1)}\n{hb(2)}\nLU-MEM-READY {M1} 16\nLU-MEM OK {M1}\nLU-HTTP 80\n"
    )
    assert bool(pred(s)) is ok


def test_cli_json(tmp_path, capsys):
    log = tmp_path / "serial.log"
    log.write_text(f"LU-BOOT {A}\n{hb(1)}\n{hb(2)}\n{hb(4)}\nLU-NET eth0 10.0.2.15/24\n")
    assert guestlog.main([str(log)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["boot_ids"] == [A]
    assert out["heartbeats"]["count"] == 3
    assert out["heartbeats"]["last"] == 4
    assert out["heartbeats"]["gaps"] == [
        {"before": 2, "after": 4, "missing": 1, "boot_id": A, "uptime_delta": 0.2}
    ]
    assert out["net"] == ["eth0", "10.0.2.15/24"]
    assert out["continuous"] is False


def test_cli_wait_timeout(tmp_path, capsys):
    log = tmp_path / "serial.log"
    log.write_text(hb(1) + "\n")
    assert guestlog.main([str(log), "--wait-heartbeats", "5", "--timeout", "0.1"]) == 1
    assert json.loads(capsys.readouterr().out)["heartbeats"]["count"] == 1


def test_cli_missing_file(tmp_path, capsys):
    assert guestlog.main([str(tmp_path / "nope.log")]) == 2
