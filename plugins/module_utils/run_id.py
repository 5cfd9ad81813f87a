# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run id: one pattern and one generator for every place that checks or makes one.

A run id names the report directory and goes into AMI names (128 characters), SendCommand comments
(`cms-patching <run-id> <step> ...`, 100 characters), lock parameters and tags. 64 characters leave room for their
other parts, and letters, digits, '.', '_' and '-' are legal in all of them.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError

MAX_LENGTH = 64
PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,%d}$" % (MAX_LENGTH - 1)
RUN_ID_RE = re.compile(PATTERN)


def is_valid(run_id):
    return isinstance(run_id, str) and bool(RUN_ID_RE.match(run_id))


def error(run_id, name="run_id"):
    """The one-line complaint about an invalid run id, or None when it is valid."""
    if is_valid(run_id):
        return None
    return (f"invalid {name} {run_id!r}: use 1 to {MAX_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


def validate(run_id):
    message = error(run_id)
    if message:
        raise PatchingError(message)
    return run_id


def generate(now=None):
    """`YYYYMMDDTHHMMSSZ-xxxxxx`: sortable by start time; the random suffix keeps runs of the same second apart."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def resolve(run_id):
    """The given run id, checked, or a new one."""
    return generate() if run_id is None else validate(run_id)
