# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: patch_summary
type: aggregate
short_description: Print a patch run's final counts and report paths when the playbook ends
version_added: 0.1.0
description:
  - Remembers the latest result of M(cms.patching.run_report) and, when the playbook ends, prints the counts of instances by
    final status and the paths of the report files.
  - It prints even when a run stops early (for example when C(max_fail_percentage) stops the patching waves), since the roles
    write the report after every phase and every wave.
  - After each patching wave (M(cms.patching.ssm_patch_wave)) it prints one line with how many instances passed and failed
    at each step, and how many ended in each final status, so the job output shows what each wave did.
  - It also prints the report's one-sentence headline, which says how the run ended and, when it stopped, why (for example
    which wave went over C(max_fail_percentage), or which alarm fired).
  - Enable it with C(callbacks_enabled = cms.patching.patch_summary) in C(ansible.cfg) (the collection's own C(ansible.cfg) does).
requirements:
  - enable in configuration
"""

from ansible.plugins.callback import CallbackBase

REPORT_ACTIONS = ("cms.patching.run_report", "run_report")
WAVE_ACTIONS = ("cms.patching.ssm_patch_wave", "ssm_patch_wave")
ORDER = ("patched", "rolled_back", "failed", "not_patched", "backed_up", "discovered", "skipped")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cms.patching.patch_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._latest = None

    def v2_runner_on_ok(self, result):
        if result._task.action in WAVE_ACTIONS and "summary" in result._result:  # pylint: disable=protected-access
            self._display.display(wave_line(result._result["summary"]))  # pylint: disable=protected-access
        if result._task.action in REPORT_ACTIONS and result._result.get("paths"):  # pylint: disable=protected-access
            self._latest = result._result  # pylint: disable=protected-access

    def v2_playbook_on_stats(self, stats):
        if not self._latest:
            return
        self._display.banner("CMS.PATCHING SUMMARY")
        for line in summary_lines(self._latest):
            self._display.display(line)


def summary_lines(result):
    """The lines printed when the playbook ends, from the latest run_report result."""
    summary = result.get("summary") or {}
    counts = ", ".join(f"{status}={summary[status]}" for status in ORDER if summary.get(status))
    lines = [f"instances: {summary.get('total', 0)} ({counts or 'none'})"]
    if result.get("headline"):
        lines.append(f"why: {result['headline']}")
    for kind in ("html", "json", "csv"):
        path = (result.get("paths") or {}).get(kind)
        if path:
            lines.append(f"report {kind}: {path}")
    return lines


def wave_line(summary):
    """e.g. 'wave of 12: gate 12 passed; precheck 11 passed, 1 failed; ... => patched=10, rolled_back=1, failed=1'."""
    steps = "; ".join(f"{step} {counts['passed']} passed" + (f", {counts['failed']} failed" if counts.get("failed") else "")
                      for step, counts in (summary.get("steps") or {}).items())
    statuses = ", ".join(f"{status}={count}" for status, count in sorted((summary.get("final_status") or {}).items()))
    return f"wave of {summary.get('total', 0)}: {steps or 'no step ran'} => {statuses or 'nothing decided'}"
