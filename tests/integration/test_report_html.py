# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""liveupdate.qemu.rollout_report run for real (``ansible localhost -m``, the installed
collection) on a realistic rollout, and its HTML page rendered in a real headless browser
(Debian's chromium): the failures come before the charts, a hostile VM name stays text, the
per-VM chart has one bar per paused VM, and the screenshot is not blank.

The data: hv1 done (18 VMs, one named with a <script> element, one unchanged), hv2 failed
(12 VMs, the last one failed with a multi-line message), hv3 unreachable, hv4 not started.
The screenshot is kept in tests/output/rollout-report.png and /tmp/rollout-report.png."""

from __future__ import annotations

import html.parser
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCREENSHOT_COPIES = (os.path.join(HERE, '..', 'output', 'rollout-report.png'), '/tmp/rollout-report.png')
EVIL = '<script>alert("pwned")</script> & \'quoted\' "vm"'
FAILED_MSG = ('switch: the destination did not start\n'
              'qemu-system-x86_64: -object memory-backend-file,id=ram0,mem-path=/dev/shm/lu-db-07:\n'
              '    can\'t open backing store: <Permission denied> & "more"\n'
              'rolled back: the source runs as before')


def rollout_data():
    rnd = random.Random(12)
    old = dict(old_version='7.2.19', old_package='Debian 1:7.2+dfsg-7+deb12u15')
    new = dict(new_version='10.0.2', new_package='1:10.0.2+ds-2+deb13u1~bpo12+1')
    rows = []

    def vm(host_name, name, index, **extra):
        row = dict(host=host_name, vm=name, guest_pause_ms=round(rnd.lognormvariate(3.6, 0.4), 1),
                   transfer_mode='cpr-transfer' if index % 3 else 'x-ignore-shared', result='updated', msg='',
                   finished='2026-11-29T05:%02d:%02dZ' % (1 + index // 4, (index * 13) % 60),
                   duration_s=round(rnd.uniform(0.9, 3.2), 2), **dict(old, **new))
        row.update(extra)
        rows.append(row)

    for index in range(18):
        name = EVIL if index == 5 else 'web-%02d' % index
        extra = dict(result='unchanged', guest_pause_ms=None, transfer_mode='', old_version='10.0.2',
                     old_package=new['new_package']) if index == 11 else {}
        vm('hv1.example.net', name, index, **extra)
    for index in range(12):
        extra = dict(result='failed', guest_pause_ms=None, msg=FAILED_MSG) if index == 11 else {}
        vm('hv2.example.net', 'db-%02d' % index, index + 18, **extra)
    blank = dict(old_version='', old_package='', new_version='', new_package='', guest_pause_ms=None, transfer_mode='')
    rows.append(dict(blank, host='hv2.example.net', vm='-', result='failed',
                     msg='Live-update the VMs: db-11 failed; the host stopped at the first failure'))
    rows.append(dict(blank, host='hv3.example.net', vm='-', result='unreachable',
                     msg='Failed to connect to the host via ssh: ssh: connect to host 192.0.2.7 port 22: Connection timed out'))
    rows.append(dict(blank, host='hv4.example.net', vm='-', result='not started',
                     msg='the rollout stopped after failures on hv2.example.net, hv3.example.net'))
    hosts = [
        dict(host='hv1.example.net', result='done', started='2026-11-29T05:00:03Z', finished='2026-11-29T05:05:10Z',
             target_binary='/opt/qemu/1_10.0.2+ds-2+deb13u1~bpo12+1/bin/qemu-system-x86_64', msg=''),
        dict(host='hv2.example.net', result='failed', started='2026-11-29T05:05:11Z', finished='2026-11-29T05:09:40Z',
             target_binary='/opt/qemu/1_10.0.2+ds-2+deb13u1~bpo12+1/bin/qemu-system-x86_64',
             msg='Live-update the VMs: db-11 failed; the host stopped at the first failure'),
        dict(host='hv3.example.net', result='unreachable', started='2026-11-29T05:09:41Z',
             finished='2026-11-29T05:10:11Z', target_binary='', msg=rows[-2]['msg']),
        dict(host='hv4.example.net', result='not started', started='', finished='', target_binary='',
             msg=rows[-1]['msg']),
    ]
    rollout = dict(started='2026-11-29T05:00:00Z', finished='2026-11-29T05:10:12Z', check_mode=False,
                   target='10.0.2 (1:10.0.2+ds-2+deb13u1~bpo12+1)', collection_version='0.2.0',
                   playbook='playbooks/live_update.yml', max_fail_percentage=30, serial='1')
    return rows, hosts, rollout


def run_module(args, check=False):
    """``ansible localhost -m liveupdate.qemu.rollout_report -a JSON``; returns its result."""
    cmd = ['ansible', 'localhost', '-i', 'localhost,', '-c', 'local', '-e',
           'ansible_python_interpreter=%s' % sys.executable, '-m', 'liveupdate.qemu.rollout_report',
           '-a', json.dumps(args)]
    if check:
        cmd.append('--check')
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='0')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=300)
    head, sep, body = proc.stdout.partition(' => ')
    assert sep and head.startswith('localhost | '), (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(body), proc


class PageText(html.parser.HTMLParser):
    """Element start tags in document order (tag, attributes) and the text of <td class=vm> cells."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.vm_cells, self._in_vm = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == 'td' and attrs.get('class') == 'vm':
            self._in_vm = True
            self.vm_cells.append('')

    def handle_endtag(self, tag):
        if tag == 'td':
            self._in_vm = False

    def handle_data(self, data):
        if self._in_vm:
            self.vm_cells[-1] += data


def png_pixels(path):
    """(width, height, set of distinct colours, share of the most common colour) of an 8-bit
    RGB or RGBA PNG, decoded with zlib (every filter type)."""
    with open(path, 'rb') as handle:
        data = handle.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + chunk) & 0xffffffff == struct.unpack('>I', data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b'IHDR':
            header = struct.unpack('>IIBBBBB', chunk)
        elif kind == b'IDAT':
            idat.append(chunk)
        elif kind == b'IEND':
            break
        pos += 12 + length
    width, height, depth, colour, interlace = header[:4] + header[6:]
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b''.join(idat))
    stride = width * bpp
    assert len(raw) == height * (stride + 1)
    prev = bytearray(stride)
    counts = {}
    for y in range(height):
        base = y * (stride + 1)
        kind, line = raw[base], bytearray(raw[base + 1:base + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xff
        elif kind == 2:
            line = bytearray((a + b) & 0xff for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xff
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xff
        else:
            assert kind == 0, 'unknown PNG filter %d' % kind
        if y % 4 == 0:  # every 4th line, every 2nd pixel: enough to count colours
            for x in range(0, stride, bpp * 2):
                pixel = bytes(line[x:x + 3])
                counts[pixel] = counts.get(pixel, 0) + 1
        prev = line
    return width, height, set(counts), max(counts.values()) / float(sum(counts.values()))


def chromium(*args, timeout=180):
    proc = subprocess.run(['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars'] + list(args),
                          capture_output=True, text=True, check=False, timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    return proc.stdout


def test_report_module_and_page_in_a_browser(tmp_path):
    rows, hosts, rollout = rollout_data()
    dest = tmp_path / 'reports'
    prom = tmp_path / 'textfile' / 'liveupdate_qemu.prom'
    prom.parent.mkdir()
    args = dict(rows=rows, hosts=hosts, rollout=rollout, dest=str(dest), name='rollout-20261129T050000Z',
                prometheus_textfile=str(prom))

    # check mode: nothing written, the same summary and lines
    planned, proc = run_module(args, check=True)
    assert not dest.exists() and not prom.exists(), proc.stdout[-2000:]
    result, proc = run_module(args)
    assert result['changed'] is True, proc.stdout[-3000:]
    assert (planned['summary'], planned['lines'], planned['files']) == (result['summary'], result['lines'], result['files'])

    summary = result['summary']
    assert summary['hosts'] == dict(total=4, done=1, failed=1, unreachable=1, not_started=1)
    assert summary['vms']['total'] == 30 and summary['vms']['updated'] == 28
    assert summary['progress'] == dict(hosts_done=1, hosts_total=4, vms_done=29, vms_total=30)
    assert summary['pause_ms']['count'] == 28 and summary['ok'] is False and summary['duration_s'] == 612.0
    assert len(result['lines']) == 1 + len(rows) + 2 and all('\n' not in line for line in result['lines'])
    files = result['files']
    assert files == dict(json=str(dest / 'rollout-20261129T050000Z.json'), text=str(dest / 'rollout-20261129T050000Z.txt'),
                         html=str(dest / 'rollout-20261129T050000Z.html'), prometheus=str(prom))
    with open(files['json']) as handle:
        doc = json.load(handle)
    assert doc['format'] == 2 and doc['check_mode'] is False and len(doc['results']) == len(rows)
    assert 'liveupdate_qemu_vm_guest_pause_seconds{host="hv1.example.net",vm="<script>alert(\\"pwned\\")' in prom.read_text()

    if shutil.which('chromium') is None:
        pytest.skip('chromium is not installed (scripts/setup.sh installs it): the page is not rendered')
    page = 'file://' + files['html']
    profile = str(tmp_path / 'chromium-profile')

    # the DOM as the browser built it
    dom = chromium('--user-data-dir=' + profile, '--dump-dom', page)
    parsed = PageText()
    parsed.feed(dom)
    ids = [attrs.get('id') for tag, attrs in parsed.tags if attrs.get('id')]
    assert ids.index('failures') < ids.index('pause-bars') < ids.index('pause-histogram') < ids.index('hosts'), ids
    assert not [tag for tag, attrs in parsed.tags if tag in ('script', 'iframe', 'img', 'link', 'object')]
    assert EVIL in parsed.vm_cells, parsed.vm_cells[:8]
    bars = [attrs for tag, attrs in parsed.tags if tag == 'rect' and 'bar' in attrs.get('class', '').split()]
    assert len(bars) == summary['pause_ms']['count'] == 28
    failures = dom[dom.index('id="failures"'):dom.index('id="pause-bars"')]
    for entry in ('hv2.example.net / db-11', 'hv3.example.net', 'hv4.example.net', 'can\'t open backing store'):
        assert entry in failures, entry
    assert 'Failures (4)' in failures

    # the page as a person sees it
    shot = tmp_path / 'rollout-report.png'
    chromium('--user-data-dir=' + profile, '--screenshot=%s' % shot, '--window-size=1280,2400', page)
    for copy in SCREENSHOT_COPIES:
        os.makedirs(os.path.dirname(os.path.abspath(copy)), exist_ok=True)
        shutil.copyfile(str(shot), copy)
    print('screenshot: %s (copies: %s)' % (shot, ', '.join(os.path.abspath(c) for c in SCREENSHOT_COPIES)))
    width, height, colours, dominant = png_pixels(str(shot))
    assert (width, height) == (1280, 2400)
    assert len(colours) > 50, 'a nearly blank screenshot: %d colours' % len(colours)
    assert dominant < 0.9, 'the screenshot is %.0f%% one colour' % (dominant * 100)
