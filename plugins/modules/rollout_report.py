#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: rollout_report
short_description: Write the report of a QEMU live-update rollout (JSON, text, HTML, Prometheus)
version_added: 0.1.0
author:
  - liveupdate.qemu maintainers (@liveupdate)
description:
  - Writes what a rollout of the playbook C(liveupdate.qemu.live_update) did, one row per VM, into O(dest)
    as C(NAME.json), C(NAME.txt) and C(NAME.html), and returns a summary and the table for the playbook to print.
  - The HTML page is self-contained (inline CSS and SVG, no script, nothing fetched); it shows the failures
    first, then the guest pauses per VM and their distribution, then a table per host.
  - With O(prometheus_textfile), also writes metrics for node_exporter's textfile collector (the time, guest
    pause and result of each VM, counts per host, and the rollout's time, duration and outcome). A plan
    (O(rollout.check_mode=true)) writes no metrics, so that monitoring never takes a plan for updates.
  - Every file is written atomically (a temporary file in the same directory, then renamed over the old one).
  - Runs where it is called; the playbook calls it once on the controller (C(localhost)). It does not talk
    to QEMU and needs no hypervisor.
  - C(docs/report.md) of the collection describes the files, the JSON fields and the metrics.
options:
  rows:
    description:
      - One row per VM, plus one with C(vm=-) per host that failed, was unreachable or was not started
        (the fields of C(rolling_update_results) of the role C(liveupdate.qemu.rolling_update)).
      - Each row is a dict with C(host) and C(result) (both required), C(vm), C(old_version), C(old_package),
        C(new_version), C(new_package), C(guest_pause_ms) (a number or null), C(transfer_mode), C(msg) (may
        span lines), and optionally C(finished) (ISO 8601 UTC, when the row was recorded) and C(duration_s)
        (how long the VM's update took). Other keys are kept in the JSON file.
      - C(result) is one of C(updated), C(unchanged), C(planned), C(skipped) (not this collection's to update, for
        example a libvirt domain), C(refused), C(failed), C(unhealthy), C(unreachable), C(not started); another value
        is reported as a failure, with a warning.
    type: list
    elements: dict
    required: true
  hosts:
    description:
      - One dict per host of the rollout, in rollout order - C(host) (required), C(result) (C(done), C(failed),
        C(unreachable) or C(not started)), C(started), C(finished) (ISO 8601 UTC or empty), C(target_binary),
        C(msg).
      - The rows come out in this order. A host that only O(rows) name is added after these.
    type: list
    elements: dict
    default: []
  rollout:
    description: Facts of the whole rollout, shown in the header of each file.
    type: dict
    suboptions:
      started:
        description: When the rollout started (ISO 8601 UTC).
        type: str
      finished:
        description: When it finished (ISO 8601 UTC).
        type: str
      check_mode:
        description:
          - Whether the rollout was a plan (C(--check)); its rows are C(planned), C(unchanged) and C(refused).
          - A plan writes no O(prometheus_textfile).
        type: bool
        default: false
      target:
        description: The target QEMU, for example C(10.0.2 (1:10.0.2+ds-2+deb13u1~bpo12+1)); empty when unknown.
        type: str
      collection_version:
        description: The version of this collection that ran the rollout.
        type: str
      playbook:
        description: The playbook that ran it.
        type: str
      max_fail_percentage:
        description: The C(live_update_max_fail_percentage) of the rollout.
        type: int
      serial:
        description: The C(live_update_serial) of the rollout (a number, a percentage, or a list of them as text).
        type: raw
  dest:
    description: The directory of the report files; created when missing.
    type: path
    required: true
  name:
    description:
      - The base name of the files, for example C(rollout-20261129T050000Z); a plain file name
        (letters, digits, C(.), C(_), C(+), C(@), C(-)).
    type: str
    required: true
  formats:
    description: The files to write into O(dest) - C(NAME.json), C(NAME.txt), C(NAME.html).
    type: list
    elements: str
    choices: [json, text, html]
    default: [json, text, html]
  prometheus_textfile:
    description:
      - A file for node_exporter's textfile collector, for example
        C(/var/lib/node_exporter/textfile/liveupdate_qemu.prom); its name must end in C(.prom) and its
        directory must exist. It is replaced by each rollout.
      - Not written for a plan (O(rollout.check_mode=true)).
    type: path
extends_documentation_fragment:
  - liveupdate.qemu.attributes.no_diff
  - ansible.builtin.action_common_attributes
notes:
  - In check mode nothing is written; the module returns the paths it would write, the summary and the lines.
seealso:
  - module: liveupdate.qemu.live_update
'''

EXAMPLES = r'''
- name: Write the rollout report on the controller
  liveupdate.qemu.rollout_report:
    rows: "{{ rows }}"
    hosts: "{{ hosts }}"
    rollout:
      started: "2026-11-29T05:00:00Z"
      finished: "2026-11-29T05:12:34Z"
      check_mode: "{{ ansible_check_mode }}"
      target: "10.0.2 (1:10.0.2+ds-2+deb13u1~bpo12+1)"
      collection_version: 0.1.0
      playbook: liveupdate.qemu.live_update
      max_fail_percentage: 0
      serial: "1"
    dest: "{{ lookup('ansible.builtin.env', 'HOME') }}/.local/share/liveupdate-qemu/reports"
    name: rollout-20261129T050000Z
    prometheus_textfile: /var/lib/node_exporter/textfile/liveupdate_qemu.prom
  delegate_to: localhost
  run_once: true
  check_mode: false
  register: report

- name: Show the table
  ansible.builtin.debug:
    msg: "{{ report.lines + ['report: ' ~ report.files.html] }}"
'''

RETURN = r'''
files:
  description: Format (C(json), C(text), C(html), C(prometheus)) to the path written (in check mode, that would be written).
  returned: success
  type: dict
  sample: {"json": "/srv/reports/rollout-20261129T050000Z.json", "html": "/srv/reports/rollout-20261129T050000Z.html"}
summary:
  description: The rollout in numbers (also the C(summary) of the JSON file).
  returned: success
  type: dict
  contains:
    started: {description: When the rollout started., type: str, returned: always}
    finished: {description: When it finished., type: str, returned: always}
    duration_s: {description: Seconds from start to finish; null when either is unknown., type: float, returned: always}
    check_mode: {description: Whether it was a plan., type: bool, returned: always}
    collection_version: {description: The collection version that ran it., type: str, returned: always}
    target: {description: The target QEMU., type: str, returned: always}
    hosts:
      description: Hosts C(total), and how many are C(done), C(failed), C(unreachable), C(not_started).
      type: dict
      returned: always
      sample: {"total": 3, "done": 1, "failed": 0, "unreachable": 1, "not_started": 1}
    vms:
      description: >-
        VM rows (not the host rows, C(vm=-)) C(total), and how many have each result (C(updated), C(unchanged),
        C(planned), C(skipped), C(refused), C(failed), C(unhealthy), C(unreachable), C(not_started), and any other
        result).
      type: dict
      returned: always
      sample: {"total": 30, "updated": 28, "unchanged": 1, "failed": 1, "planned": 0}
    progress:
      description: >-
        C(hosts_done) of C(hosts_total), C(vms_done) of C(vms_total); a VM is done when it is C(updated) or
        C(unchanged) (or C(planned) in a plan).
      type: dict
      returned: always
      sample: {"hosts_done": 1, "hosts_total": 3, "vms_done": 29, "vms_total": 30}
    pause_ms:
      description: >-
        Guest pauses in ms, over the rows that have one - C(count), C(median), C(p95) (nearest rank), C(max),
        C(min); null values when C(count) is 0.
      type: dict
      returned: always
      sample: {"count": 28, "median": 41.5, "p95": 88, "max": 93, "min": 30}
    ok:
      description: Whether no row and no host failed, was refused, unhealthy, unreachable or not started.
      type: bool
      returned: always
lines:
  description: The table (one line per row) and a summary line, for M(ansible.builtin.debug).
  returned: success
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liveupdate.qemu.plugins.module_utils._errors import InvalidInput, shorten
from ansible_collections.liveupdate.qemu.plugins.module_utils._report import FORMATS, Report, write_report

ROLLOUT_OPTIONS = dict(
    started=dict(type='str'), finished=dict(type='str'), check_mode=dict(type='bool', default=False),
    target=dict(type='str'), collection_version=dict(type='str'), playbook=dict(type='str'),
    max_fail_percentage=dict(type='int'), serial=dict(type='raw'),
)

ARGUMENT_SPEC = dict(
    rows=dict(type='list', elements='dict', required=True),
    hosts=dict(type='list', elements='dict', default=[]),
    rollout=dict(type='dict', options=ROLLOUT_OPTIONS),
    dest=dict(type='path', required=True),
    name=dict(type='str', required=True),
    formats=dict(type='list', elements='str', choices=list(FORMATS), default=list(FORMATS)),
    prometheus_textfile=dict(type='path'),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        report = Report(params['rows'], params['hosts'], params['rollout'], name=params['name'])
        files = write_report(report, params['dest'], params['name'], params['formats'],
                             params['prometheus_textfile'], dry_run=module.check_mode)
    except InvalidInput as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=shorten('%s: %s' % (exc.filename, exc.strerror) if exc.filename else exc),
                         errno=exc.errno)
    for warning in report.warnings:
        module.warn(warning)
    module.exit_json(changed=bool(files), files=files, summary=report.summary, lines=report.lines())


if __name__ == '__main__':
    main()
