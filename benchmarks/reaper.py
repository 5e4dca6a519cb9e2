# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PID 1 of the PID namespace in which benchmarks/fleet.py runs its one-host part:

    unshare --pid --fork --mount-proc --kill-child python reaper.py PROGRAM [ARG...]

runs PROGRAM as its child and reaps every process that ends up orphaned in the namespace (the
daemonized QEMUs, as init does on a real host), passes SIGTERM / SIGINT / SIGHUP on to the child and
exits with its status; the kernel then kills what is left in the namespace. Standard library only."""

from __future__ import annotations

import os
import signal
import sys


def main(argv):
    child = os.fork()
    if child == 0:
        os.execv(argv[0], argv)

    def forward(signum, frame):
        try:
            os.kill(child, signum)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            return 1
        if pid == child:
            status = os.waitstatus_to_exitcode(raw)
            return status if status >= 0 else 128 - status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
