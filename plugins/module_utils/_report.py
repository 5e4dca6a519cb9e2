# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rollout report: what a rollout did, host by host and VM by VM, in four forms.

Pure Python (no Ansible, no QMP): the module rollout_report hands it its options.

    Report(rows, hosts, rollout)     the input checked and put in rollout order; .summary
      .lines()                       the table and a summary line (what the playbook prints)
      .text()                        NAME.txt: header, failures, the table (one line per row)
      .json_document()               NAME.json: {format: 2, rollout, summary, hosts, results, check_mode}
      .html()                        NAME.html: one self-contained page (inline CSS and SVG)
      .prometheus()                  node_exporter textfile collector format
    write_report(report, ...)        the files, each written atomically (atomic_write)

Every text that comes from an operator or from QEMU (names, versions, messages) is
collapsed to one line in the table (collapse) and escaped in the page (_h).
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import re
import tempfile

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput

FORMAT_VERSION = 2
FORMATS = ('json', 'text', 'html')
EXTENSIONS = dict(json='.json', text='.txt', html='.html')

# Results of a row; the VM counts of the summary have one key each (a space becomes _).
VM_RESULTS = ('updated', 'unchanged', 'planned', 'skipped', 'refused', 'failed', 'unhealthy', 'unreachable',
              'not started')
# A row with one of these is a failure (and so is a result not known here).
FAILED_RESULTS = ('failed', 'unhealthy', 'refused', 'unreachable', 'not started')
HOST_RESULTS = ('done', 'failed', 'unreachable', 'not started')
NO_VM = '-'

ROW_FIELDS = dict(host='', vm=NO_VM, old_version='', old_package='', new_version='', new_package='',
                  guest_pause_ms=None, transfer_mode='', result='', msg='', finished='', duration_s=None)
HOST_FIELDS = dict(host='', result='', started='', finished='', target_binary='', msg='')
ROLLOUT_FIELDS = dict(started='', finished='', check_mode=False, target='', collection_version='',
                      playbook='', max_fail_percentage=0, serial='')

TABLE_HEADER = ('HOST', 'VM', 'OLD', 'NEW', 'MODE', 'PAUSE ms', 'RESULT')
MSG_WIDTH = 160      # a message in the table is cut after this many characters
CELL_WIDTH = 64      # any other cell of the table
MAX_CHART_BARS = 120  # the per-VM pause chart draws at most this many bars (the longest pauses)

_SPACES = re.compile(r'\s+')
_CONTROL = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+@-]*$')


# --- small helpers ---------------------------------------------------------------------------

def collapse(text, width=None):
    """``text`` on one line: every run of whitespace one space, control characters ``?``,
    and cut to ``width`` characters with an ellipsis."""
    text = _CONTROL.sub('?', _SPACES.sub(' ', '' if text is None else str(text))).strip()
    if width is not None and len(text) > width:
        text = text[:max(width - 1, 0)].rstrip() + '\u2026'
    return text


def parse_time(value):
    """An ISO 8601 time (``2026-11-29T05:00:00Z``, with or without fraction or offset; a naive
    time is UTC) as an aware datetime, or None when empty or not a time."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(('Z', 'z')):
        text = text[:-1] + '+00:00'
    # Python 3.9's fromisoformat takes 3 or 6 fraction digits only.
    match = re.match(r'^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$', text)
    if match:
        text = '%s.%s%s' % (match.group(1), (match.group(2) + '000000')[:6], match.group(3))
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


def timestamp(value):
    """Unix time of an ISO 8601 time, or None."""
    moment = parse_time(value)
    return None if moment is None else moment.timestamp()


def seconds_between(start, end):
    """Seconds from ``start`` to ``end`` (ISO 8601), or None when either is missing."""
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return None
    return round((last - first).total_seconds(), 3)


def number(value):
    """A finite number (int or float; a numeric string too) or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def nearest_rank(ordered, percent):
    """The nearest-rank percentile of the sorted list ``ordered`` (not empty)."""
    rank = max(1, int(math.ceil(percent / 100.0 * len(ordered))))
    return ordered[rank - 1]


def median(ordered):
    count = len(ordered)
    middle = count // 2
    return ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def pause_stats(values):
    """count, median, p95 (nearest rank), max, min of pauses in ms; None values when empty."""
    ordered = sorted(values)
    if not ordered:
        return dict(count=0, median=None, p95=None, max=None, min=None)
    return dict(count=len(ordered), median=median(ordered), p95=nearest_rank(ordered, 95),
                max=ordered[-1], min=ordered[0])


def fmt_ms(value):
    """A pause in ms for a person: ``45``, ``4.5``, ``-`` for none."""
    if value is None:
        return '-'
    if value >= 100 or float(value).is_integer():
        return '%d' % round(value)
    return '%.1f' % value


def fmt_duration(seconds):
    """``8.2s``, ``12m 34s``, ``2h 05m``; ``-`` for none."""
    if seconds is None:
        return '-'
    if seconds < 60:
        return '%.1fs' % seconds
    seconds = int(round(seconds))
    if seconds < 3600:
        return '%dm %02ds' % (seconds // 60, seconds % 60)
    return '%dh %02dm' % (seconds // 3600, seconds % 3600 // 60)


def fmt_time(value):
    """An ISO 8601 time as ``2026-11-29 05:00:00 UTC``, or the text as given."""
    moment = parse_time(value)
    if moment is None:
        return collapse(value) or '-'
    return moment.astimezone(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def version_text(version, package):
    """``10.0.2 (1:10.0.2+ds-2)``, the one that is known, or ``-``."""
    version, package = collapse(version), collapse(package)
    if version and package and package != version:
        return '%s (%s)' % (version, package)
    return version or package or '-'


def plural(count, word):
    return '%d %s%s' % (count, word, '' if count == 1 else 's')


def result_key(result):
    return result.replace(' ', '_')


def is_failure(result):
    return result not in ('updated', 'unchanged', 'planned', 'done')


def _text(value):
    return '' if value is None else str(value)


# --- the report ------------------------------------------------------------------------------

class Report:
    """The checked input and what follows from it.

    ``rows``: one per VM, and one with vm ``-`` per host that failed, was unreachable or was
    not started. ``hosts``: one per host of the rollout, in rollout order. ``rollout``: facts of
    the whole run. Rows come out in rollout order (a host's rows in the order given), hosts
    that only rows name after the listed ones."""

    def __init__(self, rows, hosts=None, rollout=None, name='rollout'):
        self.name = name
        self.rollout = dict(ROLLOUT_FIELDS)
        self.rollout.update((k, v) for k, v in (rollout or {}).items() if v is not None)
        self.check_mode = bool(self.rollout['check_mode'])
        self.hosts = [self._host(index, host) for index, host in enumerate(hosts or [])]
        given = [self._row(index, row) for index, row in enumerate(rows or [])]
        order = dict((host['host'], index) for index, host in reversed(list(enumerate(self.hosts))))
        for row in given:
            if row['host'] not in order:
                order[row['host']] = len(self.hosts)
                self.hosts.append(self._derived_host(row['host'], given))
        self.rows = sorted(given, key=lambda row: order[row['host']])
        self.vm_rows = [row for row in self.rows if row['vm'] != NO_VM]
        self.failures = [row for row in self.rows if is_failure(row['result'])]
        self.warnings = sorted(set('row of %s/%s: unknown result %r, counted as a failure' % (
            row['host'], row['vm'], row['result']) for row in self.rows if row['result'] not in VM_RESULTS))
        self.summary = self._summary()

    @staticmethod
    def _row(index, row):
        if not isinstance(row, dict):
            raise InvalidInput('rows[%d] is not a dict: %r' % (index, row))
        for key in ('host', 'result'):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise InvalidInput('rows[%d] has no %s (a non-empty string): %r' % (index, key, row))
        out = dict(ROW_FIELDS)
        out.update(row)
        for key in ('vm', 'old_version', 'old_package', 'new_version', 'new_package', 'transfer_mode', 'msg',
                    'finished'):
            out[key] = _text(out[key])
        out['vm'] = out['vm'] or NO_VM
        out['guest_pause_ms'] = number(out['guest_pause_ms'])
        out['duration_s'] = number(out['duration_s'])
        return out

    @staticmethod
    def _host(index, host):
        if not isinstance(host, dict) or not isinstance(host.get('host'), str) or not host['host'].strip():
            raise InvalidInput('hosts[%d] has no host (a non-empty string): %r' % (index, host))
        out = dict(HOST_FIELDS)
        out.update(host)
        for key in HOST_FIELDS:
            out[key] = _text(out[key])
        return out

    @staticmethod
    def _derived_host(name, rows):
        """A host that only rows name: its result from its row of its own, if any."""
        own = [row for row in rows if row['host'] == name and row['vm'] == NO_VM]
        result = own[0]['result'] if own else ('failed' if any(
            is_failure(row['result']) for row in rows if row['host'] == name) else 'done')
        return dict(HOST_FIELDS, host=name, result=result, msg=own[0]['msg'] if own else '')

    def rows_of(self, host):
        return [row for row in self.rows if row['host'] == host]

    def done(self, row):
        return row['result'] in ('updated', 'unchanged') or (self.check_mode and row['result'] == 'planned')

    def _summary(self):
        hosts = dict(total=len(self.hosts))
        for result in HOST_RESULTS:
            hosts[result_key(result)] = sum(1 for host in self.hosts if host['result'] == result)
        vms = dict(total=len(self.vm_rows))
        for result in VM_RESULTS + tuple(sorted(set(row['result'] for row in self.vm_rows) - set(VM_RESULTS))):
            vms[result_key(result)] = sum(1 for row in self.vm_rows if row['result'] == result)
        progress = dict(hosts_done=hosts['done'], hosts_total=hosts['total'],
                        vms_done=sum(1 for row in self.vm_rows if self.done(row)), vms_total=vms['total'])
        pauses = pause_stats([row['guest_pause_ms'] for row in self.rows if row['guest_pause_ms'] is not None])
        ok = not self.failures and all(not is_failure(host['result']) for host in self.hosts)
        return dict(started=self.rollout['started'], finished=self.rollout['finished'],
                    duration_s=seconds_between(self.rollout['started'], self.rollout['finished']),
                    check_mode=self.check_mode, collection_version=self.rollout['collection_version'],
                    target=self.rollout['target'], hosts=hosts, vms=vms, progress=progress, pause_ms=pauses, ok=ok)

    # --- text ------------------------------------------------------------------------------

    @staticmethod
    def table_cells(row):
        pause = row['guest_pause_ms']
        result = row['result'] + (': ' + collapse(row['msg'], MSG_WIDTH) if collapse(row['msg']) else '')
        return (collapse(row['host'], CELL_WIDTH), collapse(row['vm'], CELL_WIDTH),
                collapse(version_text(row['old_version'], row['old_package']), CELL_WIDTH),
                collapse(version_text(row['new_version'], row['new_package']), CELL_WIDTH),
                collapse(row['transfer_mode'], CELL_WIDTH) or '-', fmt_ms(pause), collapse(result))

    def table(self):
        """The header and a line per row, each column as wide as its widest cell (the last, the
        result and message, unpadded; the pause right-aligned)."""
        lines = [TABLE_HEADER] + [self.table_cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER) - 1)]
        out = []
        for line in lines:
            cells = [cell.rjust(width) if i == 5 else cell.ljust(width) for i, (cell, width) in enumerate(zip(line, widths))]
            out.append((' '.join(cells[:5]) + ' ' + cells[5] + '  ' + line[6]).rstrip())
        return out

    def summary_line(self):
        vms, hosts = self.summary['vms'], self.summary['hosts']
        counts = ['%d %s' % (vms[result_key(r)], r) for r in VM_RESULTS if vms[result_key(r)] or r in (
            'planned' if self.check_mode else 'updated', 'failed')]
        host_counts = ['%d %s' % (hosts[result_key(r)], r) for r in HOST_RESULTS if hosts[result_key(r)] or r == 'done']
        return '%s%s: %s; %s: %s' % ('plan (check mode), ' if self.check_mode else '', plural(vms['total'], 'VM'),
                                     ', '.join(counts), plural(hosts['total'], 'host'), ', '.join(host_counts))

    def lines(self):
        """The table and a summary line, for the playbook to print."""
        return self.table() + ['', self.summary_line()]

    def facts(self):
        """(label, text) pairs of the header of the text file and the page."""
        summary, progress, pauses = self.summary, self.summary['progress'], self.summary['pause_ms']
        if pauses['count']:
            pause = 'median %s ms, p95 %s ms, max %s ms (%d VMs)' % (
                fmt_ms(pauses['median']), fmt_ms(pauses['p95']), fmt_ms(pauses['max']), pauses['count'])
        else:
            pause = 'none' + (' (a plan pauses no guest)' if self.check_mode else '')
        return [
            ('Status', ('PLAN (check mode, nothing changed), ' if self.check_mode else '')
             + ('OK' if summary['ok'] else 'NOT OK, %d failure%s' % (
                 self.failure_count(), '' if self.failure_count() == 1 else 's'))),
            ('Progress', 'hosts %d/%d done, VMs %d/%d %s' % (
                progress['hosts_done'], progress['hosts_total'], progress['vms_done'], progress['vms_total'],
                'planned or current' if self.check_mode else 'updated or current')),
            ('Guest pause', pause),
            ('Started', fmt_time(summary['started'])),
            ('Finished', fmt_time(summary['finished'])),
            ('Duration', fmt_duration(summary['duration_s'])),
            ('Target', collapse(summary['target']) or '-'),
            ('Collection', 'liveupdate.qemu %s' % (collapse(summary['collection_version']) or '-')),
        ]

    def failure_count(self):
        return len(self.failures) + sum(1 for host in self.hosts if is_failure(host['result'])
                                        and not any(row['vm'] == NO_VM for row in self.rows_of(host['host'])))

    def failure_entries(self):
        """(host, vm, result, msg) of every failure: failed rows, and failed hosts without a row."""
        entries = [(row['host'], row['vm'], row['result'], row['msg']) for row in self.failures]
        for host in self.hosts:
            if is_failure(host['result']) and not any(row['vm'] == NO_VM for row in self.rows_of(host['host'])):
                entries.append((host['host'], NO_VM, host['result'], host['msg']))
        return entries

    def text(self):
        out = ['QEMU live update report %s' % collapse(self.name), '']
        out += ['%-12s %s' % (label + ':', value) for label, value in self.facts()]
        entries = self.failure_entries()
        if entries:
            out += ['', 'FAILURES (%d)' % len(entries)]
            out += ['  %s %s %s: %s' % (collapse(host, CELL_WIDTH), collapse(vm, CELL_WIDTH), result,
                                        collapse(msg, MSG_WIDTH) or '-') for host, vm, result, msg in entries]
        out += [''] + self.table() + ['', self.summary_line()]
        return '\n'.join(out) + '\n'

    # --- JSON -------------------------------------------------------------------------------

    def json_document(self):
        return dict(format=FORMAT_VERSION, rollout=self.rollout, summary=self.summary, hosts=self.hosts,
                    results=self.rows, check_mode=self.check_mode)

    def json(self):
        return json.dumps(self.json_document(), indent=2, sort_keys=False, ensure_ascii=False) + '\n'

    # --- HTML -------------------------------------------------------------------------------

    def html(self):
        return render_html(self)

    # --- Prometheus -------------------------------------------------------------------------

    def prometheus(self):
        return render_prometheus(self)


# --- HTML ------------------------------------------------------------------------------------

def _h(value):
    """Text for HTML (element content and quoted attributes alike)."""
    return html.escape(_CONTROL.sub('\ufffd', _text(value)), quote=True)


def _result_class(result):
    return 'r-' + result_key(result) if result in VM_RESULTS + HOST_RESULTS else 'r-other'


def _badge(result):
    return '<span class="badge %s">%s</span>' % (_result_class(result), _h(result))


def _short(text, width):
    text = collapse(text)
    return text if len(text) <= width else text[:width - 1] + '\u2026'


def nice_step(value):
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (> 0): a step of a scale."""
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power


def nice_scale(value, divisions=5):
    """(end, step) of an axis from 0 that holds ``value``, in about ``divisions`` round steps."""
    if value <= 0:
        return 1.0, 0.2
    step = nice_step(value / float(divisions))
    return step * math.ceil(value / step - 1e-9), step


def _num(value):
    return ('%.1f' % value).rstrip('0').rstrip('.')


HTML_STYLE = '''
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --bg: #f6f8fa; --card: #fff;
  --bad: #b42318; --bad-bg: #fef3f2; --ok: #1a7f37; --bar: #2f6fdd; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 0; display: inline; }
section, header { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 20px; margin: 0 0 16px; }
.sub { color: var(--muted); margin: 0 0 12px; }
.status { display: inline-block; padding: 4px 12px; border-radius: 14px; font-weight: 600; color: #fff; }
.status.ok { background: var(--ok); } .status.bad { background: var(--bad); } .status.plan { background: #1f5fbf; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px 24px; margin: 14px 0 0; }
.facts div { min-width: 0; } .facts dt { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.facts dd { margin: 2px 0 0; font-weight: 600; overflow-wrap: anywhere; }
.meter { height: 8px; background: #e6eaef; border-radius: 4px; overflow: hidden; margin-top: 4px; }
.meter span { display: block; height: 100%; background: var(--ok); }
section.failures { border: 2px solid var(--bad); background: var(--bad-bg); }
section.failures h2 { color: var(--bad); }
section.failures.none { border: 1px solid var(--line); background: var(--card); }
section.failures.none h2 { color: var(--ok); margin: 0; }
.failure { background: #fff; border: 1px solid #f3c1bc; border-left: 5px solid var(--bad); border-radius: 6px;
  padding: 10px 14px; margin: 0 0 10px; }
.failure .where { font-weight: 600; overflow-wrap: anywhere; }
pre { margin: 6px 0 0; white-space: pre-wrap; overflow-wrap: anywhere; font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono",
  Menlo, Consolas, monospace; background: #f6f8fa; border-radius: 4px; padding: 8px 10px; max-height: 24em; overflow: auto; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  white-space: nowrap; border: 1px solid transparent; }
.r-updated, .r-done { background: #dafbe1; color: #116329; } .r-unchanged { background: #eaeef2; color: #424a53; }
.r-planned { background: #ddf4ff; color: #0a3069; } .r-skipped { background: #f6f8fa; color: #57606a; }
.r-failed, .r-other { background: #ffebe9; color: #a40e26; border-color: #ff8182; }
.r-unhealthy { background: #fff1e5; color: #953800; border-color: #fb8f44; }
.r-refused { background: #fff8c5; color: #7d4e00; border-color: #d4a72c; }
.r-unreachable { background: #fbefff; color: #6e2a8c; border-color: #c297ff; }
.r-not_started { background: #eaeef2; color: #24292f; border-color: #8c959f; }
svg { display: block; width: 100%; height: auto; } svg text { font: 11px system-ui, "DejaVu Sans", Arial, sans-serif; fill: #1f2328; }
svg .axis { fill: #59636e; } svg .grid { stroke: #e6eaef; } svg .host { font-weight: 700; font-size: 12px; }
svg .bar { fill: var(--bar); } svg .bar.warn { fill: #e16f24; } svg .bin { fill: #8fb3ee; stroke: #2f6fdd; }
svg .mark { stroke-width: 2; } svg .m-median { stroke: #1a7f37; fill: #1a7f37; }
svg .m-p95 { stroke: #bf8700; fill: #9a6700; } svg .m-max { stroke: #cf222e; fill: #cf222e; }
.note { color: var(--muted); margin: 8px 0 0; }
.empty { color: var(--muted); font-style: italic; }
.hosthead { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 14px; margin: 0 0 10px; }
.hosthead .meta { color: var(--muted); font-size: 13px; overflow-wrap: anywhere; }
.tablewrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line); padding: 6px 8px; white-space: nowrap; }
td { border-bottom: 1px solid #eaeef2; padding: 5px 8px; vertical-align: top; overflow-wrap: break-word; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.msg { min-width: 160px; max-width: 360px; font-size: 12px; color: #424a53; overflow-wrap: anywhere; }
td.vm { font-weight: 600; min-width: 9em; max-width: 18em; overflow-wrap: anywhere; } td.ver small { color: var(--muted); white-space: nowrap; }
td.mode, td.time, th.num { white-space: nowrap; } th.num { text-align: right; }
.host-block { padding: 4px 0 18px; } .host-block + .host-block { border-top: 1px solid var(--line); padding-top: 16px; }
tr.bad td { background: #fff6f5; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 8px 0 24px; }
'''


def render_html(report):
    summary = report.summary
    if report.check_mode:
        status = '<span class="status plan">Plan (check mode): nothing was changed</span>'
    elif summary['ok']:
        status = '<span class="status ok">Rollout OK</span>'
    else:
        count = report.failure_count()
        status = '<span class="status bad">Rollout NOT OK: %d failure%s</span>' % (count, '' if count == 1 else 's')
    parts = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<title>QEMU live update: %s</title>' % _h(report.name), '<style>%s</style>' % HTML_STYLE, '</head>',
             '<body>', '<main>', '<header id="summary">', '<h1>QEMU live update report</h1>',
             '<p class="sub">%s</p>' % _h(report.name), status, _html_facts(report), '</header>',
             _html_failures(report), _html_pauses(report), _html_hosts(report), '</main>',
             '<footer>Written by liveupdate.qemu.rollout_report %s%s</footer>' % (
                 _h(report.rollout['collection_version']),
                 (' for ' + _h(report.rollout['playbook'])) if report.rollout['playbook'] else ''),
             '</body>', '</html>']
    return '\n'.join(parts) + '\n'


def _html_facts(report):
    summary, progress = report.summary, report.summary['progress']
    rollout = report.rollout

    def meter(done, total):
        width = 100.0 * done / total if total else 0
        return '<div class="meter"><span style="width:%.1f%%"></span></div>' % width

    items = [
        ('Hosts done', '%d / %d' % (progress['hosts_done'], progress['hosts_total'])
         + meter(progress['hosts_done'], progress['hosts_total'])),
        ('VMs %s' % ('planned or current' if report.check_mode else 'updated or current'),
         '%d / %d' % (progress['vms_done'], progress['vms_total']) + meter(progress['vms_done'], progress['vms_total'])),
    ]
    pauses = summary['pause_ms']
    if pauses['count']:
        items.append(('Guest pause', 'median %s ms &middot; p95 %s ms &middot; max %s ms' % (
            fmt_ms(pauses['median']), fmt_ms(pauses['p95']), fmt_ms(pauses['max']))))
    else:
        items.append(('Guest pause', 'none'))
    items += [('Started', _h(fmt_time(summary['started']))), ('Finished', _h(fmt_time(summary['finished']))),
              ('Duration', _h(fmt_duration(summary['duration_s']))), ('Target', _h(summary['target'] or '-')),
              ('Collection', 'liveupdate.qemu ' + _h(summary['collection_version'] or '-')),
              ('Check mode', 'yes (a plan)' if report.check_mode else 'no'),
              ('Serial / max fail', '%s / %s%%' % (_h(rollout['serial'] or '-'), _h(rollout['max_fail_percentage'])))]
    return '<dl class="facts">%s</dl>' % ''.join(
        '<div><dt>%s</dt><dd>%s</dd></div>' % (_h(label), value) for label, value in items)


def _html_failures(report):
    entries = report.failure_entries()
    if not entries:
        return '<section id="failures" class="failures none"><h2>No failures</h2></section>'
    out = ['<section id="failures" class="failures">', '<h2>Failures (%d)</h2>' % len(entries)]
    for host, vm, result, msg in entries:
        where = _h(host) + ('' if vm == NO_VM else ' / ' + _h(vm))
        out.append('<div class="failure"><div class="where">%s %s%s</div>%s</div>' % (
            _badge(result), where, ' <span class="empty">(the host)</span>' if vm == NO_VM else '',
            '<pre>%s</pre>' % _h(msg.strip('\n')) if msg.strip() else '<p class="empty">no message</p>'))
    out.append('</section>')
    return '\n'.join(out)


def _html_pauses(report):
    paused = [row for row in report.vm_rows if row['guest_pause_ms'] is not None]
    out = ['<section id="pauses">', '<h2>Guest pauses</h2>']
    if not paused:
        out.append('<p class="empty">No guest was paused%s.</p>' % (
            ': this is a plan (check mode)' if report.check_mode else ' (no VM was updated)'))
        out.append('</section>')
        return '\n'.join(out)
    out.append('<p class="sub">How long each guest stood still while it moved to the new QEMU.</p>')
    out.append(_svg_bars(report, paused))
    out.append('<h2 style="margin-top:18px">Distribution</h2>')
    out.append(_svg_histogram(report.summary['pause_ms'], [row['guest_pause_ms'] for row in paused]))
    out.append('</section>')
    return '\n'.join(out)


def _svg_bars(report, paused):
    """One horizontal bar per VM, grouped by host in rollout order; at most MAX_CHART_BARS
    (the longest pauses) with a note."""
    shown = paused
    note = ''
    if len(paused) > MAX_CHART_BARS:
        keep = set(id(row) for row in sorted(paused, key=lambda row: -row['guest_pause_ms'])[:MAX_CHART_BARS])
        shown = [row for row in paused if id(row) in keep]
        note = ('<p class="note">%d guests were paused; the chart shows the %d longest pauses. Every VM is in '
                'the distribution below and in the tables of the hosts.</p>' % (len(paused), MAX_CHART_BARS))
    scale_max, step = nice_scale(max(row['guest_pause_ms'] for row in shown))
    width, label_w, right = 1100, 260, 70
    plot_w = width - label_w - right
    bar_h, row_h, host_h, top = 12, 17, 24, 26
    hosts = []
    for row in shown:
        if not hosts or hosts[-1][0] != row['host']:
            hosts.append((row['host'], []))
        hosts[-1][1].append(row)
    height = top + sum(host_h + row_h * len(rows) for name, rows in hosts) + 8
    out = ['<svg id="pause-bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" '
           'role="img" aria-label="Guest pause per VM, in ms">' % (width, height, width, height)]
    for tick in [step * index for index in range(int(round(scale_max / step)) + 1)]:
        x = label_w + plot_w * tick / scale_max
        out.append('<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>' % (x, top - 6, x, height - 4))
        out.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s ms</text>' % (x, top - 10, _num(tick)))
    y = top
    for host, rows in hosts:
        out.append('<text class="host" x="4" y="%d">%s <tspan class="axis">(%d)</tspan></text>' % (
            y + 16, _h(_short(host, 60)), len(rows)))
        y += host_h
        for row in rows:
            value = row['guest_pause_ms']
            bar_w = max(plot_w * value / scale_max, 1.0)
            warn = ' warn' if is_failure(row['result']) else ''
            tip = '%s / %s: %s ms (%s)' % (row['host'], row['vm'], fmt_ms(value), row['result'])
            out.append('<text x="%d" y="%d" text-anchor="end"><title>%s</title>%s</text>' % (
                label_w - 8, y + bar_h - 2, _h(tip), _h(_short(row['vm'], 36))))
            out.append('<rect class="bar%s" x="%d" y="%d" width="%.1f" height="%d" rx="2"><title>%s</title></rect>' % (
                warn, label_w, y, bar_w, bar_h, _h(tip)))
            out.append('<text x="%.1f" y="%d">%s</text>' % (label_w + bar_w + 5, y + bar_h - 2, fmt_ms(value)))
            y += row_h
    out.append('</svg>')
    return note + '\n'.join(out)


def _svg_histogram(stats, values):
    """Counts of pauses in equal bins from 0, with the median, p95 and max marked."""
    scale_max, x_step = nice_scale(stats['max'])
    bin_w_ms = nice_step(scale_max / 24.0)
    bins = max(1, int(math.ceil(scale_max / bin_w_ms - 1e-9)))
    counts = [0] * bins
    for value in values:
        counts[min(int(value / bin_w_ms), bins - 1)] += 1
    width, height, left, right, top, bottom = 1100, 270, 56, 24, 58, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    y_step = max(1, int(math.ceil(nice_scale(max(counts), 4)[1])))
    y_max = y_step * int(math.ceil(max(counts) / float(y_step)))
    out = ['<svg id="pause-histogram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" '
           'role="img" aria-label="Distribution of guest pauses">' % (width, height, width, height)]
    for tick in range(0, y_max + 1, y_step):
        y = top + plot_h - plot_h * tick / y_max
        out.append('<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>' % (left, y, width - right, y))
        out.append('<text class="axis" x="%d" y="%.1f" text-anchor="end">%d</text>' % (left - 6, y + 4, tick))
    out.append('<text class="axis" x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">VMs</text>' % (
        top + plot_h // 2, top + plot_h // 2))
    for index, count in enumerate(counts):
        low, high = bin_w_ms * index, min(bin_w_ms * (index + 1), scale_max)
        if count:
            bar_h = plot_h * count / y_max
            x, bin_w = left + plot_w * low / scale_max, plot_w * (high - low) / scale_max
            out.append('<rect class="bin" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s-%s ms: %d VM%s'
                       '</title></rect>' % (x + 1, top + plot_h - bar_h, max(bin_w - 2, 1), bar_h,
                                            _num(low), _num(high), count, '' if count == 1 else 's'))
    for tick in [x_step * index for index in range(int(round(scale_max / x_step)) + 1)]:
        x = left + plot_w * tick / scale_max
        out.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, top + plot_h + 16, _num(tick)))
    out.append('<text class="axis" x="%d" y="%d" text-anchor="middle">guest pause, ms</text>' % (
        left + plot_w // 2, height - 6))
    for level, (key, label) in enumerate((('median', 'median'), ('p95', 'p95'), ('max', 'max'))):
        x = left + plot_w * stats[key] / scale_max
        anchor = 'end' if x > width - right - 120 else 'start'
        dx = -5 if anchor == 'end' else 5
        ty = 14 + level * 14
        out.append('<line class="mark m-%s" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke-dasharray="%s"/>' % (
            key, x, ty - 4, x, top + plot_h, '5 3' if key != 'max' else '2 2'))
        out.append('<text class="m-%s" x="%.1f" y="%d" text-anchor="%s">%s %s ms</text>' % (
            key, x + dx, ty, anchor, label, fmt_ms(stats[key])))
    out.append('<line class="grid" x1="%d" y1="%d" x2="%d" y2="%d" style="stroke:#8c959f"/>' % (
        left, top + plot_h, width - right, top + plot_h))
    out.append('</svg>')
    return '\n'.join(out)


def _version_cell(version, package):
    version, package = collapse(version), collapse(package)
    if version and package and package != version:
        return '%s<br><small>%s</small>' % (_h(version), _h(package))
    return _h(version or package or '-')


def _time_cell(value, day):
    """A row's time: the time of day when it is on the rollout's ``day``, the full time otherwise."""
    moment = parse_time(value)
    if moment is None:
        return _h(collapse(value) or '-')
    moment = moment.astimezone(datetime.timezone.utc)
    text = moment.strftime('%H:%M:%S') if moment.date() == day else fmt_time(value)
    return '<span title="%s">%s</span>' % (_h(fmt_time(value)), _h(text))


def _html_hosts(report):
    out = ['<section id="hosts">', '<h2>Hosts (%d)</h2>' % len(report.hosts)]
    start = parse_time(report.rollout['started'])
    day = start.astimezone(datetime.timezone.utc).date() if start else None
    for index, host in enumerate(report.hosts):
        rows = report.rows_of(host['host'])
        vms = [row for row in rows if row['vm'] != NO_VM]
        own = [row for row in rows if row['vm'] == NO_VM]
        took = seconds_between(host['started'], host['finished'])
        meta = ['started %s' % fmt_time(host['started']) if host['started'] else '',
                'finished %s' % fmt_time(host['finished']) if host['finished'] else '',
                'took %s' % fmt_duration(took) if took is not None else '',
                'target binary %s' % collapse(host['target_binary']) if host['target_binary'] else '',
                '%d VM%s' % (len(vms), '' if len(vms) == 1 else 's')]
        out.append('<div class="host-block" id="host-%d">' % index)
        out.append('<div class="hosthead"><h3>%s</h3>%s<span class="meta">%s</span></div>' % (
            _h(host['host']), _badge(host['result'] or '?'), _h(' \u00b7 '.join(item for item in meta if item))))
        messages = [host['msg']] + [row['msg'] for row in own if row['msg'] != host['msg']]
        for msg in messages:
            if msg.strip():
                out.append('<pre>%s</pre>' % _h(msg.strip('\n')))
        if not vms:
            out.append('<p class="empty">No VM of this host is in the report.</p></div>')
            continue
        with_msg = any(row['msg'].strip() for row in vms)
        out.append('<div class="tablewrap"><table><thead><tr><th>VM</th><th>Old</th><th>New</th><th>Mode</th>'
                   '<th class="num">Pause ms</th><th class="num">Took</th><th>Finished</th><th>Result</th>%s'
                   '</tr></thead><tbody>' % ('<th>Message</th>' if with_msg else ''))
        for row in vms:
            cells = [_h(row['vm']), _version_cell(row['old_version'], row['old_package']),
                     _version_cell(row['new_version'], row['new_package']), _h(row['transfer_mode'] or '-'),
                     fmt_ms(row['guest_pause_ms']), _h(fmt_duration(row['duration_s'])),
                     _time_cell(row['finished'], day), _badge(row['result'])]
            classes = ['vm', 'ver', 'ver', 'mode', 'num', 'num', 'time', '']
            if with_msg:
                cells.append('<span title="%s">%s</span>' % (_h(row['msg']), _h(collapse(row['msg'], MSG_WIDTH))))
                classes.append('msg')
            out.append('<tr%s>%s</tr>' % (' class="bad"' if is_failure(row['result']) else '', ''.join(
                '<td%s>%s</td>' % (' class="%s"' % cls if cls else '', cell) for cls, cell in zip(classes, cells))))
        out.append('</tbody></table></div></div>')
    out.append('</section>')
    return '\n'.join(out)


# --- Prometheus textfile ---------------------------------------------------------------------

PROM_PREFIX = 'liveupdate_qemu_'


def prom_label(value):
    """A label value of the exposition format: backslash, double quote and newline escaped."""
    return _text(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def prom_value(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Metrics:
    def __init__(self):
        self.families = []

    def family(self, name, kind, helptext):
        samples = []
        self.families.append((PROM_PREFIX + name, kind, helptext, samples))
        return samples

    def text(self):
        out = []
        for name, kind, helptext, samples in self.families:
            if not samples:
                continue
            out.append('# HELP %s %s' % (name, helptext.replace('\\', '\\\\').replace('\n', '\\n')))
            out.append('# TYPE %s %s' % (name, kind))
            for labels, value in samples:
                text = ','.join('%s="%s"' % (key, prom_label(val)) for key, val in labels)
                out.append('%s%s %s' % (name, '{%s}' % text if text else '', prom_value(value)))
        return '\n'.join(out) + '\n'


def render_prometheus(report):
    metrics = _Metrics()
    rollout_end = timestamp(report.rollout['finished'])
    last = metrics.family('vm_last_update_timestamp_seconds', 'gauge',
                          'When the last rollout recorded this VM (Unix time).')
    pause = metrics.family('vm_guest_pause_seconds', 'gauge', 'How long the guest was paused by its last live update.')
    took = metrics.family('vm_update_duration_seconds', 'gauge', 'How long the last live update of the VM took.')
    result = metrics.family('vm_result', 'gauge', 'Result of the VM in the last rollout (1 for its result).')
    for row in report.vm_rows:
        labels = [('host', row['host']), ('vm', row['vm'])]
        moment = timestamp(row['finished'])
        moment = rollout_end if moment is None else moment
        if moment is not None:
            last.append((labels, moment))
        if row['guest_pause_ms'] is not None:
            pause.append((labels, row['guest_pause_ms'] / 1000.0))
        if row['duration_s'] is not None:
            took.append((labels, float(row['duration_s'])))
        result.append((labels + [('result', row['result'])], 1))
    host_vms = metrics.family('host_vms', 'gauge', 'VMs of the host in the last rollout, by result.')
    host_result = metrics.family('host_result', 'gauge', 'Result of the host in the last rollout (1 for its result).')
    host_end = metrics.family('host_finished_timestamp_seconds', 'gauge', 'When the host was done (Unix time).')
    for host in report.hosts:
        rows = [row for row in report.vm_rows if row['host'] == host['host']]
        known = VM_RESULTS + tuple(sorted(set(row['result'] for row in rows) - set(VM_RESULTS)))
        for name in known:
            host_vms.append(([('host', host['host']), ('result', name)], sum(1 for row in rows if row['result'] == name)))
        host_result.append(([('host', host['host']), ('result', host['result'] or 'unknown')], 1))
        if timestamp(host['finished']) is not None:
            host_end.append(([('host', host['host'])], timestamp(host['finished'])))
    summary = report.summary
    if rollout_end is not None:
        metrics.family('rollout_timestamp_seconds', 'gauge', 'When the last rollout finished (Unix time).').append(
            ([], rollout_end))
    if timestamp(report.rollout['started']) is not None:
        metrics.family('rollout_start_timestamp_seconds', 'gauge', 'When the last rollout started (Unix time).').append(
            ([], timestamp(report.rollout['started'])))
    if summary['duration_s'] is not None:
        metrics.family('rollout_duration_seconds', 'gauge', 'How long the last rollout took.').append(
            ([], float(summary['duration_s'])))
    metrics.family('rollout_ok', 'gauge', '1 when the last rollout had no failure, 0 otherwise.').append(([], summary['ok']))
    hosts = metrics.family('rollout_hosts', 'gauge', 'Hosts of the last rollout, by result.')
    for name in HOST_RESULTS:
        hosts.append(([('result', name)], summary['hosts'][result_key(name)]))
    vms = metrics.family('rollout_vms', 'gauge', 'VMs of the last rollout, by result.')
    for name in VM_RESULTS:
        vms.append(([('result', name)], summary['vms'][result_key(name)]))
    return metrics.text()


# --- files -----------------------------------------------------------------------------------

def atomic_write(path, text, mode=0o644):
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename:
    a reader (node_exporter, a browser) sees the old file or the new one, never half of one.
    The temporary name does not end in .prom, so that the textfile collector skips it."""
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % base, suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_name(name):
    if not isinstance(name, str) or not _NAME.match(name) or name in ('.', '..'):
        raise InvalidInput('name must be a plain file name (letters, digits, ._+@-), got %r' % (name,))


def check_prometheus_path(path, exists=True):
    """A .prom file name; with ``exists``, in a directory that exists."""
    if not path.endswith('.prom') or os.path.basename(path) == '.prom':
        raise InvalidInput('prometheus_textfile must be a file name ending in .prom '
                           '(the textfile collector reads only those), got %r' % (path,))
    if not exists:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidInput('the directory of prometheus_textfile, %s, does not exist '
                           '(the directory node_exporter --collector.textfile.directory reads)' % directory)


def report_paths(dest, name, formats, prometheus_textfile=None, check_mode=False):
    """Format -> path of each file a report writes; no Prometheus file for a plan."""
    check_name(name)
    files = dict((fmt, os.path.join(dest, name + EXTENSIONS[fmt])) for fmt in FORMATS if fmt in formats)
    if prometheus_textfile and not check_mode:
        files['prometheus'] = prometheus_textfile
    return files


def write_report(report, dest, name, formats=FORMATS, prometheus_textfile=None, dry_run=False):
    """Write the report's files (nothing when ``dry_run``); returns format -> path."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise InvalidInput('unknown format %r (formats: %s)' % (fmt, ', '.join(FORMATS)))
    if prometheus_textfile:
        check_prometheus_path(prometheus_textfile, exists=not report.check_mode)
    files = report_paths(dest, name, formats, prometheus_textfile, report.check_mode)
    if dry_run:
        return files
    if any(fmt in files for fmt in FORMATS):
        os.makedirs(dest, mode=0o755, exist_ok=True)
    render = dict(json=report.json, text=report.text, html=report.html, prometheus=report.prometheus)
    for fmt, path in files.items():
        atomic_write(path, render[fmt]())
    return files
