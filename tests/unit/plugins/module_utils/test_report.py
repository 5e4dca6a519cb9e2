# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rollout report: summary maths, the one-line table, the escaping of the page, the
Prometheus textfile read back, the JSON document, and atomic writes."""

from __future__ import annotations

import json
import os
import re

import pytest

from ansible_collections.liveupdate.qemu.plugins.module_utils import _report
from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput
from ansible_collections.liveupdate.qemu.plugins.module_utils._report import (
    MAX_CHART_BARS, Report, atomic_write, collapse, nearest_rank, nice_scale, parse_time, pause_stats, write_report,
)

EVIL = '<script>alert("x")</script>&\'q'
ROLLOUT = dict(started='2026-11-29T05:00:00Z', finished='2026-11-29T05:12:34Z', check_mode=False,
               target='10.0.2 (1:10.0.2+ds-2+deb13u1~bpo12+1)', collection_version='0.2.0',
               playbook='liveupdate.qemu.live_update', max_fail_percentage=0, serial='1')


def row(host, vm, result='updated', pause=40.0, msg='', **extra):
    out = dict(host=host, vm=vm, old_version='7.2.19', old_package='Debian 1:7.2+dfsg-7+deb12u15',
               new_version='10.0.2', new_package='1:10.0.2+ds-2+deb13u1~bpo12+1', guest_pause_ms=pause,
               transfer_mode='x-ignore-shared', result=result, msg=msg)
    out.update(extra)
    return out


def host(name, result='done', msg='', **extra):
    out = dict(host=name, result=result, started='2026-11-29T05:00:02Z', finished='2026-11-29T05:06:40Z',
               target_binary='/opt/qemu/bin/qemu-system-x86_64', msg=msg)
    out.update(extra)
    return out


def fleet():
    """hv1: 4 VMs (one failed with a multi-line message, one with a hostile name), hv2 unreachable,
    hv3 not started. The host rows come last, as the playbook gives them."""
    rows = [row('hv1', 'a', pause=10), row('hv1', EVIL, pause=20, finished='2026-11-29T05:01:00Z', duration_s=1.5),
            row('hv1', 'c', result='failed', pause=None, msg='switch: boom\n  second line\tand "quotes"\n'),
            row('hv1', 'd', result='unchanged', pause=None),
            row('hv2', '-', result='unreachable', pause=None, msg='ssh: No route to host'),
            row('hv3', '-', result='not started', pause=None, msg='the rollout stopped after failures on hv2')]
    hosts = [host('hv1'), host('hv2', 'unreachable', 'ssh: No route to host'),
             host('hv3', 'not started', started='', finished='')]
    return rows, hosts


# --- maths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('values, expected', [
    ([], dict(count=0, median=None, p95=None, max=None, min=None)),
    ([7], dict(count=1, median=7, p95=7, max=7, min=7)),
    ([30, 10, 20], dict(count=3, median=20, p95=30, max=30, min=10)),
    ([40, 10, 30, 20], dict(count=4, median=25.0, p95=40, max=40, min=10)),
    (list(range(1, 21)), dict(count=20, median=10.5, p95=19, max=20, min=1)),
    (list(range(1, 22)), dict(count=21, median=11, p95=20, max=21, min=1)),
    (list(range(100, 0, -1)), dict(count=100, median=50.5, p95=95, max=100, min=1)),
])
def test_pause_stats(values, expected):
    assert pause_stats(values) == expected


@pytest.mark.parametrize('percent, expected', [(0, 1), (50, 5), (90, 9), (95, 10), (100, 10)])
def test_nearest_rank(percent, expected):
    assert nearest_rank(list(range(1, 11)), percent) == expected


@pytest.mark.parametrize('value, expected', [
    (0, (1.0, 0.2)), (62.1, (80, 20)), (93, (100, 20)), (35, (40, 10)), (134, (150, 50)), (0.4, (0.4, 0.1)),
])
def test_nice_scale(value, expected):
    end, step = nice_scale(value)
    assert (round(end, 6), round(step, 6)) == expected
    assert end >= value


@pytest.mark.parametrize('text, seconds', [
    ('2026-11-29T05:00:00Z', 0), ('2026-11-29T05:00:00.5Z', 0.5), ('2026-11-29T05:00:00.123456789Z', 0.123456),
    ('2026-11-29T06:00:00+01:00', 0), ('2026-11-29T05:00:00', 0),
])
def test_parse_time(text, seconds):
    base = parse_time('2026-11-29T05:00:00Z')
    assert round((parse_time(text) - base).total_seconds(), 6) == seconds


@pytest.mark.parametrize('text', ['', None, 'yesterday', 42])
def test_parse_time_of_no_time(text):
    assert parse_time(text) is None


def test_summary():
    rows, hosts = fleet()
    report = Report(rows, hosts, ROLLOUT)
    summary = report.summary
    assert summary['hosts'] == dict(total=3, done=1, failed=0, unreachable=1, not_started=1)
    assert summary['vms'] == dict(total=4, updated=2, unchanged=1, planned=0, skipped=0, refused=0, failed=1, unhealthy=0,
                                  unreachable=0, not_started=0)
    assert summary['progress'] == dict(hosts_done=1, hosts_total=3, vms_done=3, vms_total=4)
    assert summary['pause_ms'] == dict(count=2, median=15.0, p95=20, max=20, min=10)
    assert summary['duration_s'] == 754.0
    assert (summary['started'], summary['finished'], summary['target'], summary['collection_version']) == (
        ROLLOUT['started'], ROLLOUT['finished'], ROLLOUT['target'], '0.2.0')
    assert summary['ok'] is False and summary['check_mode'] is False


def test_summary_of_a_plan():
    rows = [row('hv1', 'a', result='planned', pause=None), row('hv1', 'b', result='unchanged', pause=None)]
    report = Report(rows, [host('hv1')], dict(ROLLOUT, check_mode=True))
    summary = report.summary
    assert summary['progress'] == dict(hosts_done=1, hosts_total=1, vms_done=2, vms_total=2)
    assert summary['pause_ms'] == dict(count=0, median=None, p95=None, max=None, min=None)
    assert summary['ok'] is True and summary['check_mode'] is True
    assert report.summary_line() == 'plan (check mode), 2 VMs: 1 unchanged, 1 planned, 0 failed; 1 host: 1 done'


def test_planned_is_not_done_outside_a_plan():
    report = Report([row('hv1', 'a', result='planned', pause=None)], [host('hv1')], ROLLOUT)
    assert report.summary['progress']['vms_done'] == 0


def test_empty_report():
    report = Report([], [], None)
    assert report.summary['vms'] == dict(total=0, updated=0, unchanged=0, planned=0, skipped=0, refused=0, failed=0,
                                         unhealthy=0, unreachable=0, not_started=0)
    assert report.summary['ok'] is True and report.summary['duration_s'] is None
    assert report.lines()[-1] == '0 VMs: 0 updated, 0 failed; 0 hosts: 0 done'
    assert 'No guest was paused' in report.html()


@pytest.mark.parametrize('result', ['failed', 'unhealthy', 'refused', 'unreachable', 'not started'])
def test_any_failure_is_not_ok(result):
    report = Report([row('hv1', 'a'), row('hv1', 'b', result=result, pause=None)], [host('hv1')], ROLLOUT)
    assert report.summary['ok'] is False
    assert [entry[1] for entry in report.failure_entries()] == ['b']


def test_a_failed_host_without_a_row_is_a_failure():
    report = Report([row('hv1', 'a')], [host('hv1'), host('hv2', 'failed', 'prepare: apt failed')], ROLLOUT)
    assert report.summary['ok'] is False
    assert report.failure_entries() == [('hv2', '-', 'failed', 'prepare: apt failed')]


def test_unknown_result_is_a_failure_with_a_warning():
    report = Report([row('hv1', 'a', result='exploded')], [host('hv1')], ROLLOUT)
    assert report.summary['ok'] is False and report.summary['vms']['exploded'] == 1
    assert report.warnings == ["row of hv1/a: unknown result 'exploded', counted as a failure"]


def test_rows_in_rollout_order_and_hosts_only_rows_name():
    rows = [row('hv2', 'x'), row('hv1', 'a'), row('hv9', '-', result='failed', pause=None, msg='gone'),
            row('hv2', 'y'), row('hv1', 'b')]
    report = Report(rows, [host('hv1'), host('hv2')], ROLLOUT)
    assert [(r['host'], r['vm']) for r in report.rows] == [
        ('hv1', 'a'), ('hv1', 'b'), ('hv2', 'x'), ('hv2', 'y'), ('hv9', '-')]
    assert [h['host'] for h in report.hosts] == ['hv1', 'hv2', 'hv9']
    assert report.hosts[2]['result'] == 'failed' and report.hosts[2]['msg'] == 'gone'


@pytest.mark.parametrize('rows, message', [
    (['not a dict'], r'rows\[0\] is not a dict'),
    ([dict(vm='a', result='updated')], r'rows\[0\] has no host'),
    ([dict(host='hv1', vm='a')], r'rows\[0\] has no result'),
    ([dict(host=' ', vm='a', result='updated')], r'rows\[0\] has no host'),
])
def test_invalid_rows(rows, message):
    with pytest.raises(InvalidInput, match=message):
        Report(rows, [], ROLLOUT)


def test_invalid_hosts():
    with pytest.raises(InvalidInput, match=r'hosts\[1\] has no host'):
        Report([], [host('hv1'), dict(result='done')], ROLLOUT)


@pytest.mark.parametrize('value, expected', [(12, 12), ('12.5', 12.5), (None, None), ('n/a', None), (True, None),
                                             (float('nan'), None), (float('inf'), None)])
def test_pause_values(value, expected):
    report = Report([row('hv1', 'a', pause=value)], [], ROLLOUT)
    assert report.rows[0]['guest_pause_ms'] == expected


# --- the text table ---------------------------------------------------------------------------

@pytest.mark.parametrize('text, width, expected', [
    ('a\n b\t\tc\r\n', None, 'a b c'),
    ('  lead and trail  ', None, 'lead and trail'),
    ('bell\x07 and esc\x1b[31m', None, 'bell? and esc?[31m'),
    ('x' * 20, 10, 'x' * 9 + '\u2026'),
    ('short', 10, 'short'),
    (None, None, ''),
])
def test_collapse(text, width, expected):
    assert collapse(text, width) == expected


def test_every_row_is_one_line():
    rows, hosts = fleet()
    rows[2]['msg'] = 'first\n' + 'y' * 5000 + '\nthird line'
    rows[0]['vm'] = 'multi\nline\nname'
    report = Report(rows, hosts, ROLLOUT)
    table = report.table()
    assert len(table) == 1 + len(rows)
    assert table[0].split() == ['HOST', 'VM', 'OLD', 'NEW', 'MODE', 'PAUSE', 'ms', 'RESULT']
    failed = [line for line in table if ' failed: ' in line]
    assert len(failed) == 1 and failed[0].endswith('\u2026') and len(failed[0]) < 400
    assert 'multi line name' in table[1]
    assert report.lines()[:-2] == table and report.lines()[-2] == ''
    assert report.lines()[-1] == '4 VMs: 2 updated, 1 unchanged, 1 failed; 3 hosts: 1 done, 1 unreachable, 1 not started'
    text = report.text()
    # every table row of the file is one line, in rollout order
    body = text.split('\n')
    start = body.index(table[0])
    assert body[start:start + len(table)] == table


def test_text_header_and_failures_first():
    rows, hosts = fleet()
    text = Report(rows, hosts, ROLLOUT, name='rollout-20261129T050000Z').text()
    head = text.partition('HOST ')[0]
    assert 'rollout-20261129T050000Z' in head
    assert 'hosts 1/3 done, VMs 3/4 updated or current' in head
    assert 'median 15 ms, p95 20 ms, max 20 ms (2 VMs)' in head
    assert '2026-11-29 05:00:00 UTC' in head and '2026-11-29 05:12:34 UTC' in head and '12m 34s' in head
    assert ROLLOUT['target'] in head and 'liveupdate.qemu 0.2.0' in head
    assert 'FAILURES (3)' in head
    assert 'hv1 c failed: switch: boom second line and "quotes"' in head
    assert 'hv2 - unreachable: ssh: No route to host' in head


# --- HTML ------------------------------------------------------------------------------------

def test_html_escapes_every_text():
    rows, hosts = fleet()
    rows[2]['msg'] = 'line 1 <img src=x onerror=alert(1)>\nline "2" & \'3\''
    hosts[0]['host'] = rows[0]['host'] = rows[1]['host'] = rows[2]['host'] = rows[3]['host'] = 'hv1 <b>"x"</b>'
    hosts[0]['target_binary'] = '/opt/<i>q</i>'
    rollout = dict(ROLLOUT, target='<u>t</u>', collection_version='"><script>', playbook='<p>pb</p>',
                   serial='<s>1</s>')
    page = Report(rows, hosts, rollout, name='rollout-x').html()
    for raw in ('<script', '<img', '<b>', '<i>', '<u>', '<p>pb', '<s>1', 'onerror=alert(1)>'):
        assert raw not in page, raw
    assert '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;q' in page
    assert 'line 1 &lt;img src=x onerror=alert(1)&gt;\nline &quot;2&quot; &amp; &#x27;3&#x27;' in page
    assert 'hv1 &lt;b&gt;&quot;x&quot;&lt;/b&gt;' in page


def test_html_structure():
    rows, hosts = fleet()
    page = Report(rows, hosts, ROLLOUT).html()
    assert page.startswith('<!DOCTYPE html>')
    assert page.index('id="failures"') < page.index('id="pause-bars"') < page.index('id="pause-histogram"') \
        < page.index('id="hosts"')
    assert page.count('<rect class="bar') == 2
    assert 'http://' not in page.replace('http://www.w3.org/2000/svg', '') and 'https://' not in page
    assert '<link' not in page and 'src=' not in page
    assert 'Failures (3)' in page


def test_html_without_pauses_and_failures():
    report = Report([row('hv1', 'a', result='planned', pause=None)], [host('hv1')], dict(ROLLOUT, check_mode=True))
    page = report.html()
    assert 'No failures' in page and 'pause-bars' not in page
    assert 'No guest was paused: this is a plan (check mode).' in page
    assert 'Plan (check mode): nothing was changed' in page


def test_html_caps_the_bars_of_a_large_rollout():
    rows = [row('hv%d' % (i // 50), 'vm%03d' % i, pause=float(i % 97) + 1) for i in range(500)]
    page = Report(rows, [], ROLLOUT).html()
    assert page.count('<rect class="bar') == MAX_CHART_BARS
    assert '500 guests were paused; the chart shows the %d longest pauses' % MAX_CHART_BARS in page
    assert page.count('<tr>') + page.count('<tr class="bad">') == 500 + 10  # VM rows and one header per host


def test_html_of_one_pause():
    page = Report([row('hv1', 'a', pause=0)], [host('hv1')], ROLLOUT).html()
    assert page.count('<rect class="bar') == 1 and page.count('<rect class="bin"') == 1
    assert 'median 0 ms' in page


# --- Prometheus ------------------------------------------------------------------------------

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


def parse_exposition(text):
    """{name: {'help', 'type', 'samples': [(labels dict, float)]}}; asserts the format on the way."""
    families, current = {}, None
    assert text.endswith('\n')
    for line in text.splitlines():
        if line.startswith('# HELP '):
            name, helptext = line[7:].split(' ', 1)
            assert name not in families, 'family %s twice' % name
            current = families[name] = dict(help=helptext, type=None, samples=[])
        elif line.startswith('# TYPE '):
            name, kind = line[7:].split(' ')
            assert current is families[name] and kind in ('gauge', 'counter')
            current['type'] = kind
        else:
            match = SAMPLE.match(line)
            assert match, line
            assert current is families[match.group('name')] and current['type'], line
            labels, text_labels = {}, match.group('labels') or ''
            consumed = ''.join(m.group(0) for m in LABEL.finditer(text_labels))
            assert consumed == text_labels, line
            for key, value in LABEL.findall(text_labels):
                labels[key] = re.sub(r'\\(.)', lambda m: '\n' if m.group(1) == 'n' else m.group(1), value)
            current['samples'].append((labels, float(match.group('value'))))
    return families


def test_prometheus_parses_back():
    rows, hosts = fleet()
    rows[1]['vm'] = 'evil "vm"\\with\nnewline'
    families = parse_exposition(Report(rows, hosts, ROLLOUT).prometheus())
    p = 'liveupdate_qemu_'
    assert {p + 'vm_last_update_timestamp_seconds', p + 'vm_guest_pause_seconds', p + 'vm_result', p + 'host_vms',
            p + 'host_result', p + 'rollout_timestamp_seconds', p + 'rollout_duration_seconds', p + 'rollout_ok',
            p + 'rollout_hosts', p + 'rollout_vms'} <= set(families)
    pauses = dict((s[0]['vm'], s[1]) for s in families[p + 'vm_guest_pause_seconds']['samples'])
    assert pauses == {'a': 0.01, 'evil "vm"\\with\nnewline': 0.02}
    stamps = dict((s[0]['vm'], s[1]) for s in families[p + 'vm_last_update_timestamp_seconds']['samples'])
    end = parse_time(ROLLOUT['finished']).timestamp()
    assert stamps['a'] == end and stamps['evil "vm"\\with\nnewline'] == parse_time('2026-11-29T05:01:00Z').timestamp()
    results = sorted((s[0]['vm'], s[0]['result'], s[1]) for s in families[p + 'vm_result']['samples'])
    assert results == [('a', 'updated', 1), ('c', 'failed', 1), ('d', 'unchanged', 1),
                       ('evil "vm"\\with\nnewline', 'updated', 1)]
    assert '-' not in [s[0]['vm'] for s in families[p + 'vm_result']['samples']]
    host_vms = dict(((s[0]['host'], s[0]['result']), s[1]) for s in families[p + 'host_vms']['samples'])
    assert host_vms[('hv1', 'updated')] == 2 and host_vms[('hv1', 'failed')] == 1 and host_vms[('hv2', 'updated')] == 0
    assert sorted((s[0]['host'], s[0]['result']) for s in families[p + 'host_result']['samples']) == [
        ('hv1', 'done'), ('hv2', 'unreachable'), ('hv3', 'not started')]
    assert families[p + 'rollout_ok']['samples'] == [({}, 0.0)]
    assert families[p + 'rollout_duration_seconds']['samples'] == [({}, 754.0)]
    assert families[p + 'rollout_timestamp_seconds']['samples'] == [({}, end)]
    assert dict((s[0]['result'], s[1]) for s in families[p + 'rollout_hosts']['samples']) == {
        'done': 1, 'failed': 0, 'unreachable': 1, 'not started': 1}


def test_prometheus_of_an_ok_rollout():
    families = parse_exposition(Report([row('hv1', 'a')], [host('hv1')], ROLLOUT).prometheus())
    assert families['liveupdate_qemu_rollout_ok']['samples'] == [({}, 1.0)]


# --- JSON and files --------------------------------------------------------------------------

def test_json_document(tmp_path):
    rows, hosts = fleet()
    rows[0]['extra_field'] = 'kept'
    report = Report(rows, hosts, ROLLOUT)
    files = write_report(report, str(tmp_path / 'reports'), 'rollout-1', formats=['json'])
    assert files == dict(json=str(tmp_path / 'reports' / 'rollout-1.json'))
    with open(files['json']) as handle:
        doc = json.load(handle)
    assert set(doc) == {'format', 'rollout', 'summary', 'hosts', 'results', 'check_mode'}
    assert doc['format'] == 2 and doc['check_mode'] is False
    assert doc['rollout'] == ROLLOUT and doc['summary'] == report.summary
    assert [h['host'] for h in doc['hosts']] == ['hv1', 'hv2', 'hv3']
    assert len(doc['results']) == 6 and doc['results'][0]['extra_field'] == 'kept'
    assert doc['results'][1]['vm'] == EVIL


def test_write_report_every_file(tmp_path):
    rows, hosts = fleet()
    prom = tmp_path / 'textfile' / 'liveupdate_qemu.prom'
    prom.parent.mkdir()
    files = write_report(Report(rows, hosts, ROLLOUT), str(tmp_path / 'r'), 'rollout-1',
                         prometheus_textfile=str(prom))
    assert sorted(files) == ['html', 'json', 'prometheus', 'text']
    assert files['text'].endswith('rollout-1.txt') and files['html'].endswith('rollout-1.html')
    for path in files.values():
        assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(os.listdir(str(prom.parent))) == ['liveupdate_qemu.prom']


def test_write_report_dry_run_writes_nothing(tmp_path):
    rows, hosts = fleet()
    files = write_report(Report(rows, hosts, ROLLOUT), str(tmp_path / 'r'), 'n', prometheus_textfile=str(tmp_path / 'x.prom'),
                         dry_run=True)
    assert sorted(files) == ['html', 'json', 'prometheus', 'text']
    assert os.listdir(str(tmp_path)) == []


def test_a_plan_writes_no_prometheus_file(tmp_path):
    report = Report([row('hv1', 'a', result='planned', pause=None)], [host('hv1')], dict(ROLLOUT, check_mode=True))
    prom = tmp_path / 'missing-dir' / 'x.prom'
    files = write_report(report, str(tmp_path / 'r'), 'n', prometheus_textfile=str(prom))
    assert sorted(files) == ['html', 'json', 'text']
    assert not prom.parent.exists()


@pytest.mark.parametrize('name', ['', '.', '..', 'a/b', '../x', '.hidden', 'a b', 'a\nb'])
def test_invalid_names(tmp_path, name):
    with pytest.raises(InvalidInput, match='name must be a plain file name'):
        write_report(Report([], [], ROLLOUT), str(tmp_path), name)


def test_invalid_prometheus_paths(tmp_path):
    with pytest.raises(InvalidInput, match=r'must be a file name ending in \.prom'):
        write_report(Report([], [], ROLLOUT), str(tmp_path), 'n', prometheus_textfile=str(tmp_path / 'x.txt'))
    with pytest.raises(InvalidInput, match='does not exist'):
        write_report(Report([], [], ROLLOUT), str(tmp_path), 'n', prometheus_textfile=str(tmp_path / 'no' / 'x.prom'))
    assert os.listdir(str(tmp_path)) == []


def test_atomic_write_replaces(tmp_path):
    path = str(tmp_path / 'm.prom')
    atomic_write(path, 'old\n')
    atomic_write(path, 'new\n')
    with open(path) as handle:
        assert handle.read() == 'new\n'
    assert os.listdir(str(tmp_path)) == ['m.prom']


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / 'm.prom')
    atomic_write(path, 'old\n')
    seen = []

    def failing_replace(src, dst):
        seen.append(os.path.basename(src))
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(_report.os, 'replace', failing_replace)
    with pytest.raises(OSError):
        atomic_write(path, 'new\n')
    # the temporary file was in the same directory, not named *.prom, and is gone
    assert len(seen) == 1 and seen[0].startswith('.m.prom.') and not seen[0].endswith('.prom')
    assert os.listdir(str(tmp_path)) == ['m.prom']
    with open(path) as handle:
        assert handle.read() == 'old\n'


def test_table_columns_fit_their_widest_cell():
    long_package = 'Debian 1:10.0.2+ds-2+deb13u1~bpo12+1'
    rows = [row('hv1', 'a', new_package=long_package),
            row('hypervisor-with-a-long-name', 'b', result='failed', pause=None, msg='one\ntwo')]
    lines = Report(rows, [host('hv1'), host('hypervisor-with-a-long-name')], ROLLOUT).table()
    starts = [line.index(word) for line, word in zip(lines, ('RESULT', 'updated', 'failed: one two'))]
    assert len(set(starts)) == 1, lines
    assert all(line.split()[0] in ('HOST', 'hv1', 'hypervisor-with-a-long-name') for line in lines)
