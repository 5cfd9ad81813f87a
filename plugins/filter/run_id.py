# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run id rule of module_utils/run_id.py, for the settings play: the same pattern and generator as the modules."""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import run_id as run_ids


def run_id(value):
    """The given run id, or a new one when it is empty (checked separately by run_id_error)."""
    return run_ids.generate() if value in (None, "") else value


def run_id_error(value, name="cms_patching_run_id"):
    """'' for a valid run id, else the one-line error the modules would give."""
    return run_ids.error(value, name) or ""


class FilterModule:
    def filters(self):
        return {"run_id": run_id, "run_id_error": run_id_error}
