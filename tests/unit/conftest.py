# -*- coding: utf-8 -*-
# Copyright: liveupdate.qemu contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.liveupdate.qemu`` importable for plain ``pytest tests/unit``.

The tests import the collection by its full name, as Ansible does. That needs
a directory on sys.path holding ``ansible_collections/liveupdate/qemu``. In order:

1. this file sits in such a tree (a checkout at ``.../ansible_collections/
   liveupdate/qemu``, or the copy installed under ``.build/collections``):
   the parent of its first ancestor named ``ansible_collections`` goes first;
2. the name is importable already (PYTHONPATH=.build/collections, as
   scripts/test.sh runs it, or ansible-test): nothing is added;
3. the logical working directory ($PWD; the real path of a checkout reached
   through a symlink loses the layout) is such a tree of this very checkout;
4. otherwise a private temporary ``ansible_collections/liveupdate/qemu``
   symlink to this checkout, removed at exit.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
import tempfile

COLLECTION = ('ansible_collections', 'liveupdate', 'qemu')
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))  # the collection root: tests/unit/../..


def _collections_dir(start):
    """The parent of the first ancestor of ``start`` named ansible_collections, or None."""
    path = start
    while True:
        parent, base = os.path.split(path)
        if base == 'ansible_collections':
            return parent
        if parent == path:
            return None
        path = parent


def _importable():
    try:
        return importlib.util.find_spec('.'.join(COLLECTION)) is not None
    except ImportError:
        return False


def _logical_cwd():
    logical = os.environ.get('PWD')
    found = _collections_dir(logical) if logical and os.path.isabs(logical) else None
    if found and os.path.realpath(os.path.join(found, *COLLECTION)) == os.path.realpath(ROOT):
        return found
    return None


def _shim():
    top = tempfile.mkdtemp(prefix='liveupdate-qemu-unit-')
    dirs = [os.path.join(top, *COLLECTION[:n]) for n in (1, 2)]
    link = os.path.join(top, *COLLECTION)
    os.makedirs(dirs[-1])
    os.symlink(ROOT, link)

    def remove():
        os.unlink(link)
        for path in reversed([top] + dirs):
            os.rmdir(path)

    atexit.register(remove)
    return top


def _collections_path_entry():
    found = _collections_dir(HERE)
    if found or _importable():
        return found
    return _logical_cwd() or _shim()


_ENTRY = _collections_path_entry()
if _ENTRY and _ENTRY not in sys.path:
    sys.path.insert(0, _ENTRY)
