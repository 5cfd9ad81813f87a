# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run record: per-instance results of every phase, merged across invocations that share a run id.

Files are written atomically (temp file + rename) and are not world-readable.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone

from ansible_collections.cms.patching.plugins.module_utils import run_id as run_ids

try:
    import fcntl
except ImportError:  # not on POSIX: no cross-process lock, writes are still atomic
    fcntl = None

SCHEMA_VERSION = 2
FINAL_STATUSES = ("skipped", "discovered", "backed_up", "not_patched", "patched", "failed", "rolled_back")
PHASES = ("discovery", "backup", "patch", "services", "validation", "rollback")
# Why an instance ends not_patched: reason codes only, so the CSV stays well formed (an alarm's name is in alarm_name).
GATE_STOPS = ("alarm", "bake_unhealthy", "stopped_by_operator", "approval_denied", "approval_timeout", "gate_unreadable")  # a gate stopped the waves
# Decided by the report itself from the waves it saw (no step of the instance said anything), and so re-decided at each write.
DERIVED_REASONS = ("stopped_by_max_fail", "not_reached")
STOP_FIELDS = ("alarm_name", "target_group", "stop_wave", "derived")
# Steps in the order an instance goes through them (the wave engine's, and the backup phase's own).
STEP_ORDER = ("backup", "gate", "standby", "drain", "precheck", "patch", "restart", "health", "register", "rollback")
CSV_STEPS = ("backup", "patch", "restart", "health", "rollback")
CSV_FIELDS = ("instance_id", "name", "account_id", "region", "platform", "final_status", "reasons", "image_id",
              "backup_status", "patch_outcome", "missing_before", "missing_after", "validation_passed", "rollback_status",
              "wave", "zone", "alarm_name", "target_group") + tuple(f"{step}_{edge}" for step in CSV_STEPS for edge in ("started_at", "ended_at"))
HTML_COLUMNS = ("instance_id", "name", "account_id", "region", "platform", "wave", "zone", "final_status", "reasons",
                "image_id", "patch_outcome", "missing_before", "missing_after", "rollback_status")


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_directory(report_dir, run_id, slice_name=None):
    if not run_ids.is_valid(run_id):
        raise ValueError(run_ids.error(run_id))
    path = os.path.join(report_dir, str(run_id))
    if slice_name not in (None, ""):
        path = os.path.join(path, f"slice-{slice_name}")
    return path


def derive_final_status(entry):
    """An explicit status from a phase wins; otherwise the furthest phase reached decides.

    A not_patched the report derived itself (`derived`) is not explicit: it is decided again by finalize().
    """
    if entry.get("reason") == "locked_by_other_run":
        return "skipped"
    if entry.get("final_status") in ("patched", "failed", "rolled_back"):
        return entry["final_status"]
    if entry.get("final_status") == "not_patched" and not entry.get("derived"):
        return "not_patched"
    discovery = entry.get("discovery") or {}
    if discovery and not discovery.get("eligible", False):
        return "skipped"
    backup = entry.get("backup") or {}
    if backup.get("status") == "failed":
        return "failed"
    if backup.get("verified"):
        return "backed_up"
    status = entry.get("final_status")
    return status if status and status != "not_patched" else "discovered"


def merge_instance(old, new):
    """Newer results win per instance; phase sections are replaced whole, so stale fields never linger.

    Step times merge per step (the backup phase's and the wave's). A new explicit final status clears what the report
    had derived, so does a new reason, and a `reason: None` (patched) clears the old reason.
    """
    merged = dict(old or {})
    if new.get("final_status") or new.get("reason"):
        for key in STOP_FIELDS:  # a step's own decision replaces what the report had derived
            merged.pop(key, None)
    if "reason" in new and new["reason"] is None:
        merged.pop("reason", None)
    for key, value in new.items():
        if value is None:
            continue
        if key == "steps":
            value = dict(merged.get("steps") or {}, **value)
        merged[key] = value
    merged["final_status"] = derive_final_status(merged)
    return merged


def merge_report(report, run, instances, phase=None, wave=None, now=None):
    now = now or now_iso()
    report = report or {"schema_version": SCHEMA_VERSION, "run_id": run["run_id"], "started_at": run.get("started_at") or now,
                        "phases": [], "instances": {}}
    report["schema_version"] = SCHEMA_VERSION
    for key in ("caller_arn", "awx_job_id", "slice"):
        if run.get(key) not in (None, ""):
            report[key] = run[key]
    report.pop("check_mode", None)  # the latest invocation says: a dry run decides nothing, a real one after it does
    if run.get("check_mode"):
        report["check_mode"] = True
    if phase and phase not in report["phases"]:
        report["phases"].append(phase)
    table = report.setdefault("instances", {})
    for entry in instances:
        table[entry["instance_id"]] = merge_instance(table.get(entry["instance_id"]), entry)
    report["plan"] = plan_of(table)
    if wave:
        record_wave(report, run, wave, instances, now)
    report["finished_at"] = now
    finalize(report)
    return report


# ---------------------------------------------------------------- waves and why the run stopped

def serial_sizes(serial, host_count):
    """Batch sizes as Ansible cuts a play's hosts for `serial` (PlaybookExecutor._get_serialized_batches, pct_to_int)."""
    items = serial if isinstance(serial, (list, tuple)) else [serial]
    items = [i for i in items if i not in (None, "")] or [-1]
    sizes, left, index = [], host_count, 0
    while left > 0:
        item = str(items[index]).strip()
        if item.endswith("%"):
            size = int(int(item[:-1]) / 100.0 * host_count) or 1
        else:
            size = int(float(item))
        size = left if size <= 0 else min(size, left)
        sizes.append(size)
        left -= size
        index = min(index + 1, len(items) - 1)
    return sizes


def batch_position(play_hosts, serial, batch_hosts):
    """(wave number, batch size, number of waves) of the batch holding batch_hosts[0], as Ansible cut the play.

    play_hosts is ansible_play_hosts_all (every host of the play, also those that failed in an earlier play: Ansible
    cuts batches from all of them, and a host that failed earlier still counts in its batch's size).
    """
    sizes = serial_sizes(serial, len(play_hosts))
    first = batch_hosts[0] if batch_hosts else None
    position = list(play_hosts).index(first) if first in play_hosts else 0
    start = 0
    for number, size in enumerate(sizes, 1):
        if position < start + size:
            return number, size, len(sizes)
        start += size
    return len(sizes), sizes[-1] if sizes else 0, len(sizes)


def max_fail_stops(failed, batch_size, max_fail_percentage):
    """Whether Ansible ends the play after a batch with `failed` new failures.

    The linear strategy stops when failed / batch size > max_fail_percentage / 100; the playbook executor also ends the
    play when every host of a batch failed, whatever max_fail_percentage says (a failed canary of one ends it at 100 %).
    """
    if not failed or not batch_size:
        return False
    if failed >= batch_size:
        return True
    return max_fail_percentage is not None and failed / float(batch_size) > int(max_fail_percentage) / 100.0


def record_wave(report, run, wave, instances, now):
    """Add (or replace) this invocation's record of one patching wave (an Ansible serial batch)."""
    number, size, count = batch_position(wave.get("play_hosts") or [], wave.get("serial"), wave.get("batch_hosts") or [])
    ids = [i for i in wave.get("instance_ids") or [] if i]
    given = {e["instance_id"]: e for e in instances}
    failed = sum(1 for i in ids if (given.get(i) or {}).get("final_status") in ("failed", "rolled_back"))
    pct = wave.get("max_fail_percentage")
    pct = None if pct in (None, "") else int(pct)
    # ran: the wave decided something (a wave this job leaves to another, cms_patching_waves, records nothing).
    record = {"number": number, "of": count, "batch_size": size, "instance_ids": ids, "failed": failed,
              "max_fail_percentage": pct, "invocation": run.get("started_at") or now, "recorded_at": now,
              "ran": any(i in given for i in ids)}
    if max_fail_stops(failed, size, pct):
        record.update(stopped="stopped_by_max_fail", whole_batch_failed=failed >= size)
    waves = [w for w in report.get("waves") or [] if (w.get("invocation"), w.get("number")) != (record["invocation"], number)]
    report["waves"] = waves + [record]
    for iid in ids:
        if iid in report["instances"]:
            report["instances"][iid]["wave"] = number


def current_waves(report):
    """The waves of the latest invocation that ran any (a resumed run starts its waves again at 1)."""
    waves = report.get("waves") or []
    if not waves:
        return []
    latest = max(w.get("invocation") or "" for w in waves)
    return sorted((w for w in waves if (w.get("invocation") or "") == latest), key=lambda w: w["number"])


def step_span(entries, skip=("backup",)):
    """(earliest started_at, latest ended_at) of the entries' timed steps, or (None, None)."""
    starts, ends = [], []
    for entry in entries:
        for name, step in (entry.get("steps") or {}).items():
            if name in skip or not isinstance(step, dict):
                continue
            if step.get("started_at"):
                starts.append(step["started_at"])
            if step.get("ended_at"):
                ends.append(step["ended_at"])
    return (min(starts) if starts else None), (max(ends) if ends else None)


def refresh_wave(report, record):
    """A wave's start, end and counts from its instances as they are now (a later bake or rollback changes them)."""
    entries = [report["instances"][i] for i in record["instance_ids"] if i in report["instances"]]
    started, ended = step_span(entries)
    record["started_at"] = started or record.get("recorded_at")
    record["ended_at"] = ended or record.get("recorded_at")
    counts = {}
    for entry in entries:
        counts[entry.get("final_status")] = counts.get(entry.get("final_status"), 0) + 1
    record["counts"] = counts


def run_stop(report, waves):
    """Why the run's patching stopped before every instance was patched, or None.

    A gate (alarm, stop switch, approval) recorded on instances comes first, then max_fail_percentage, then the
    deadline; a last wave that was not the play's last with instances left means the run was killed (or still runs).
    """
    entries = list(report["instances"].values())
    gated = sorted((e for e in entries if e.get("reason") in GATE_STOPS and not e.get("derived")),
                   key=lambda e: (e.get("stop_wave") or e.get("wave") or 10 ** 6, e["final_status"] != "rolled_back", e["instance_id"]))
    if gated:
        first = gated[0]
        stop = {"reason": first["reason"], "wave": first.get("stop_wave") or first.get("wave"), "during_bake": first["final_status"] == "rolled_back"}
        for key in ("alarm_name", "target_group"):
            if first.get(key):
                stop[key] = first[key]
        return stop
    for record in waves:
        if record.get("stopped"):
            return {"reason": record["stopped"], "wave": record["number"], "of": record["of"], "failed": record["failed"],
                    "batch_size": record["batch_size"], "max_fail_percentage": record["max_fail_percentage"],
                    "whole_batch_failed": bool(record.get("whole_batch_failed"))}
    late = {e["instance_id"] for e in entries if e.get("reason") == "deadline_passed"}
    if late:
        hit = [w["number"] for w in waves if late & set(w["instance_ids"])]
        return {"reason": "deadline_passed", "wave": min(hit) if hit else None}
    ran = [w for w in waves if w.get("ran", True)]
    if any(pending(e) for e in entries) and (not ran or ran[-1]["number"] < ran[-1]["of"]):
        return {"reason": "not_reached", "wave": ran[-1]["number"] if ran else 0, "of": waves[-1]["of"] if waves else None}
    return None


def pending(entry):
    """Eligible and not yet patched, failed or otherwise decided: what a stopped (or unfinished) run leaves."""
    return entry["final_status"] in ("backed_up", "discovered")


def finalize(report):
    """The run-level decisions, made again at every write: waves' spans and counts, the stop, not_patched and why.

    In a run whose patching phase ran (not a dry run), an instance that was backed up (or only discovered, eligible)
    and never patched ends not_patched: with its own reason when a step gave one (deadline_passed, ...), else the
    reason the run stopped for, else not_reached. A run of the backup phase alone still ends backed_up.
    """
    table = report["instances"]
    for entry in table.values():
        if entry.get("derived"):
            for key in STOP_FIELDS + ("reason", "final_status"):
                entry.pop(key, None)
        entry["final_status"] = derive_final_status(entry)
    stop = run_stop(report, current_waves(report)) if "patching" in report.get("phases", []) else None
    if "patching" in report.get("phases", []) and not report.get("check_mode"):
        for entry in table.values():
            if pending(entry):
                mark_not_patched(entry, stop)
    for record in report.get("waves") or []:
        refresh_wave(report, record)
    if stop:
        stop["not_patched"] = sum(1 for e in table.values() if e["final_status"] == "not_patched")
    report["stop"] = stop
    report["summary"] = summarize(table.values())
    report["headline"] = headline(report)
    return report


def mark_not_patched(entry, stop):
    entry["final_status"] = "not_patched"
    if entry.get("reason"):
        return  # its own reason (deadline_passed, capacity_budget, a gate's): the step that left it says why
    entry["derived"] = True
    if stop and stop["reason"] in ("stopped_by_max_fail",) + GATE_STOPS:
        entry["reason"] = stop["reason"]
        entry["stop_wave"] = stop.get("wave")
        for key in ("alarm_name", "target_group"):
            if stop.get(key):
                entry[key] = stop[key]
    else:
        entry["reason"] = "not_reached"


def _count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "s")


def headline(report):
    """One sentence saying how the run ended and, when it stopped, why."""
    summary = report.get("summary") or {}
    stop = report.get("stop")
    phases = report.get("phases") or []
    left = _count(summary.get("not_patched", 0), "instance") + " not patched"
    if "patching" not in phases:
        done = ", ".join(f"{summary[s]} {s}" for s in FINAL_STATUSES if summary.get(s))
        return f"No patching phase ran ({', '.join(phases) or 'nothing'} only): {done or 'no instance'}."
    if report.get("check_mode"):
        return "A dry run (--check): nothing was changed, and no instance was patched."
    if not stop:
        waves = [w for w in current_waves(report) if w.get("ran", True)]
        ran = f"all {_count(len(waves), 'wave')} ran" if waves else "the patching phase ran"
        rest = f"; {left} (not_reached: outside the waves that ran)" if summary.get("not_patched") else ""
        return f"Finished: {ran}; {summary.get('patched', 0)} patched, {summary.get('rolled_back', 0)} rolled back, " \
               f"{summary.get('failed', 0)} failed{rest}."
    reason, wave = stop["reason"], stop.get("wave")
    if reason == "stopped_by_max_fail":
        if wave == stop.get("of") and not summary.get("not_patched"):  # the last wave broke it: nothing was left to stop
            return f"Finished: all {_count(wave, 'wave')} ran, and the last one broke max_fail_percentage " \
                   f"({stop['failed']} of {stop['batch_size']} hosts failed, above {stop['max_fail_percentage']}%); " \
                   f"{summary.get('patched', 0)} patched, {summary.get('rolled_back', 0)} rolled back, {summary.get('failed', 0)} failed."
        where = f"Stopped after wave {wave} of {stop['of']}{' (the canary)' if wave == 1 and stop['batch_size'] == 1 else ''}"
        if stop.get("whole_batch_failed"):
            return f"{where}: every host of the wave failed ({stop['failed']} of {stop['batch_size']}), and Ansible ends the play " \
                   f"when a whole batch fails, whatever max_fail_percentage ({stop['max_fail_percentage']}%) says; {left} (stopped_by_max_fail)."
        share = 100.0 * stop["failed"] / stop["batch_size"]
        return f"{where}: {stop['failed']} of {stop['batch_size']} hosts failed ({share:.0f}%), above max_fail_percentage " \
               f"{stop['max_fail_percentage']}%; {left} (stopped_by_max_fail)."
    if reason == "alarm":
        name = stop.get("alarm_name") or "(unnamed)"
        if stop.get("during_bake"):
            return f"Stopped by alarm {name} during the bake of wave {wave}: the wave was rolled back; {left} (alarm)."
        return f"Stopped before wave {wave}: alarm {name} was in ALARM; {left} (alarm)."
    if reason == "bake_unhealthy":
        return f"Stopped during the bake of wave {wave}: a target in target group {stop.get('target_group') or '(unnamed)'} turned " \
               f"unhealthy, and the wave was rolled back; {left} (bake_unhealthy)."
    if reason == "stopped_by_operator":
        return f"Stopped by the operator (stop parameter) before wave {wave}; {left} (stopped_by_operator)."
    if reason in ("approval_denied", "approval_timeout"):
        how = "denied" if reason == "approval_denied" else "not given in time"
        return f"Stopped after the canary: the approval was {how}; {left} ({reason})."
    if reason == "gate_unreadable":
        return f"Stopped before wave {wave}: the gates (alarms, stop switch) could not be read; {left} (gate_unreadable)."
    if reason == "deadline_passed":
        return f"No wave started after cms_patching_not_after{f' (from wave {wave} on)' if wave else ''}; {left} (deadline_passed)."
    if not wave:
        return f"No patching wave was recorded: the run was killed in its first wave, or is still running; {left} (not_reached)."
    return f"No wave after wave {wave} of {stop.get('of')} ran, and no stop was recorded: the run was killed, is still running, " \
           f"or left them to another job (cms_patching_waves); {left} (not_reached)."


def summarize(entries):
    counts = {status: 0 for status in FINAL_STATUSES}
    for entry in entries:
        counts[entry.get("final_status", "discovered")] = counts.get(entry.get("final_status", "discovered"), 0) + 1
    counts["total"] = sum(counts[s] for s in FINAL_STATUSES)
    return counts


def failure_reason(entry):
    reasons = list((entry.get("discovery") or {}).get("reasons") or [])
    if entry.get("reason"):
        reasons.append(entry["reason"])
    return reasons


def csv_row(entry):
    backup = entry.get("backup") or {}
    patch = entry.get("patch") or {}
    before = patch.get("compliance_before") or {}
    after = patch.get("compliance_after") or {}
    steps = entry.get("steps") or {}
    row = {
        "instance_id": entry["instance_id"], "name": entry.get("name") or "", "account_id": entry.get("account_id") or "",
        "region": entry.get("region") or "", "platform": entry.get("platform") or "", "final_status": entry.get("final_status"),
        "reasons": ";".join(failure_reason(entry)), "image_id": backup.get("image_id") or "", "backup_status": backup.get("status") or "",
        "patch_outcome": patch.get("outcome") or "", "missing_before": before.get("missing", ""), "missing_after": after.get("missing", ""),
        "validation_passed": (entry.get("validation") or {}).get("passed", ""), "rollback_status": (entry.get("rollback") or {}).get("status") or "",
        "wave": entry.get("wave") or "", "zone": entry.get("zone") or "", "alarm_name": entry.get("alarm_name") or "",
        "target_group": entry.get("target_group") or "",
    }
    for step in CSV_STEPS:
        for edge in ("started_at", "ended_at"):
            row[f"{step}_{edge}"] = (steps.get(step) or {}).get(edge) or ""
    return row


def render_csv(report):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for entry in sorted_entries(report):
        writer.writerow(csv_row(entry))
    return out.getvalue()


STATUS_ORDER = {"failed": 0, "rolled_back": 1, "not_patched": 2, "skipped": 3, "discovered": 4, "backed_up": 5, "patched": 6}


def sorted_entries(report):
    """Failures first (what a change manager reads first), then what was left unpatched, then by status and id."""
    return sorted(report["instances"].values(), key=lambda e: (STATUS_ORDER.get(e.get("final_status"), 9), e["instance_id"]))


def parse_time(value):
    """An ISO 8601 time (Z or an offset) as an aware datetime, or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def timeline_rows(report):
    """[(kind, label, start, end, css classes, tooltip)]: the backup phase, then each wave and its steps."""
    rows = []
    entries = list(report["instances"].values())
    backup = [(entry.get("steps") or {}).get("backup") or {} for entry in entries]
    starts = [parse_time(b.get("started_at")) for b in backup if b.get("started_at") and b.get("ended_at")]
    ends = [parse_time(b.get("ended_at")) for b in backup if b.get("started_at") and b.get("ended_at")]
    if starts and ends and None not in starts + ends:
        rows.append(("phase", "Backup", min(starts), max(ends), "phase-bar step-backup", f"backup: {_count(len(starts), 'instance')}"))
    stop = report.get("stop") or {}
    for record in sorted(report.get("waves") or [], key=lambda w: (w.get("invocation") or "", w["number"])):
        start, end = parse_time(record.get("started_at")), parse_time(record.get("ended_at"))
        if not start or not end:
            continue
        counts = record.get("counts") or {}
        bad = counts.get("failed", 0) + counts.get("rolled_back", 0)
        label = f"Wave {record['number']}" + (" (canary)" if record["number"] == 1 and record.get("batch_size") == 1 else "")
        tip = f"{label}: {_count(len(record['instance_ids']), 'instance')}; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if record.get("stopped"):
            tip += f"; the play stopped here ({record['stopped']}: {record['failed']} of {record['batch_size']} failed)"
        css = "wave-bar" + (" wave-bad" if bad else " wave-ok") + (" wave-stop" if record.get("stopped") else "")
        rows.append(("wave", label, start, end, css, tip))
        members = [report["instances"][i] for i in record["instance_ids"] if i in report["instances"]]
        for name in STEP_ORDER[1:]:
            spans = [((e.get("steps") or {}).get(name) or {}) for e in members]
            spans = [(parse_time(x.get("started_at")), parse_time(x.get("ended_at"))) for x in spans if x.get("started_at")]
            spans = [(a, b or a) for a, b in spans if a]
            if spans:
                rows.append(("step", name, min(s[0] for s in spans), max(s[1] for s in spans), f"step-bar step-{name}",
                             f"wave {record['number']} {name}: {_count(len(spans), 'instance')}"))
        # Agent recovery attempts inside the patch command (patch.recovery: reboot, stop_start), each with its times.
        tries = [t for e in members for t in ((e.get("patch") or {}).get("recovery") or []) if t.get("started_at")]
        spans = [(parse_time(t["started_at"]), parse_time(t.get("ended_at") or t["started_at"])) for t in tries]
        spans = [(a, b or a) for a, b in spans if a]
        if spans:
            rows.append(("step", "agent recovery", min(s[0] for s in spans), max(s[1] for s in spans), "step-bar step-recovery",
                         f"wave {record['number']} agent recovery: {_count(len(spans), 'attempt')} "
                         f"({', '.join(sorted({str(t.get('action')) + ' ' + str(t.get('result')) for t in tries}))})"))
    if stop.get("reason") and rows:
        rows.append(("stop", f"Stopped: {stop['reason']}", None, None, "stop-mark", report.get("headline") or stop["reason"]))
    return rows


def timeline_svg(report, width=960, label_width=190):
    """The waves and their steps on one time axis, as inline SVG (no script, font or image from outside)."""
    esc = html.escape
    rows = timeline_rows(report)
    timed = [r for r in rows if r[2] is not None]
    if not timed:
        return '<p id="timeline-empty">No timed step recorded yet.</p>'
    first, last = min(r[2] for r in timed), max(r[3] for r in timed)
    span = max((last - first).total_seconds(), 1.0)
    plot = width - label_width - 20
    heights = {"phase": 20, "wave": 20, "step": 12, "stop": 20}
    y, parts = 10, []
    for kind, label, start, end, css, tip in rows:
        h = heights[kind]
        if kind == "stop":
            parts.append(f'<g class="{css}"><title>{esc(tip)}</title><text x="4" y="{y + 14}" class="stop-label">{esc(label)}</text></g>')
            y += h + 6
            continue
        x = label_width + (start - first).total_seconds() / span * plot
        w = max((end - start).total_seconds() / span * plot, 2.0)
        indent = 16 if kind == "step" else 4
        parts.append(f'<g class="row row-{kind}"><title>{esc(tip)} ({esc(start.strftime("%H:%M:%S"))} to {esc(end.strftime("%H:%M:%S"))} UTC)</title>'
                     f'<text x="{indent}" y="{y + h - 4}" class="label-{kind}">{esc(label)}</text>'
                     f'<rect class="{css}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{h}" rx="2"></rect></g>')
        y += h + (8 if kind != "step" else 3)
    axis = (f'<text x="{label_width}" y="{y + 12}" class="axis">{esc(first.strftime("%Y-%m-%d %H:%M:%S"))} UTC</text>'
            f'<text x="{width - 20}" y="{y + 12}" class="axis" text-anchor="end">{esc(last.strftime("%H:%M:%S"))} '
            f'(+{int(span)} s)</text>')
    height = y + 20
    return (f'<svg id="timeline" role="img" aria-label="Timeline of the waves and their steps" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(parts)}{axis}</svg>')


def render_html(report):
    esc = html.escape
    summary = report.get("summary", {})
    cards = "".join(f'<div class="card s-{esc(k)}"><b>{summary.get(k, 0)}</b><span>{esc(k)}</span></div>' for k in FINAL_STATUSES)
    rows = []
    for e in sorted_entries(report):
        r = csv_row(e)
        cells = "".join(f"<td>{esc(str(r[k]))}</td>" for k in HTML_COLUMNS)
        rows.append(f'<tr class="s-{esc(str(r["final_status"]))}">{cells}</tr>')
    failures = [e for e in sorted_entries(report) if e.get("final_status") in ("failed", "rolled_back")]
    failure_items = "".join(f"<li><b>{esc(e['instance_id'])}</b> {esc(e.get('name') or '')}: {esc(e['final_status'])}"
                            f" ({esc(', '.join(failure_reason(e)) or 'no reason recorded')})"
                            f"{esc(' alarm ' + e['alarm_name']) if e.get('alarm_name') else ''}</li>" for e in failures)
    left = {}
    for e in sorted_entries(report):
        if e.get("final_status") == "not_patched":
            left.setdefault(e.get("reason") or "no reason recorded", []).append(e)
    left_items = "".join(f'<li><b>{esc(reason)}</b>: {len(group)} ({esc(", ".join(x["instance_id"] for x in group[:20]))}'
                         f'{", ..." if len(group) > 20 else ""})</li>' for reason, group in sorted(left.items()))
    stop = report.get("stop") or {}
    headline_text = esc(report.get("headline") or "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cms.patching run {esc(report['run_id'])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 6px;text-align:left}}th{{background:#eee}}
.cards{{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}}.card{{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;text-align:center}}
.card b{{display:block;font-size:1.6em}}tr.s-failed,tr.s-rolled_back{{background:#fde2e2}}tr.s-skipped{{background:#f3f3f3}}
tr.s-patched{{background:#e5f6e5}}tr.s-not_patched{{background:#fff4d6}}
#summary{{font-size:1.15em;padding:.6em 1em;border-left:5px solid #888;background:#f6f6f6}}#summary.stopped{{border-color:#c0392b}}
svg text{{font-size:12px;fill:#222}}svg .axis{{fill:#666}}svg .label-wave{{font-weight:bold}}svg .stop-label{{fill:#c0392b;font-weight:bold}}
.wave-ok{{fill:#3c9a4f}}.wave-bad{{fill:#d9822b}}.wave-stop{{fill:#c0392b}}.phase-bar{{fill:#5b7db1}}.step-bar{{fill:#9aa7b8}}
.step-patch{{fill:#6b8fc7}}.step-recovery{{fill:#8e44ad}}.step-rollback{{fill:#c0392b}}.step-health{{fill:#58a55c}}.step-gate{{fill:#b9b9b9}}
</style></head><body>
<h1>Patch run {esc(report['run_id'])}</h1>
<p id="summary" class="{'stopped' if stop.get('reason') else 'done'}" data-stop-reason="{esc(str(stop.get('reason') or ''))}">{headline_text}</p>
<p>Started {esc(str(report.get('started_at')))}, last update {esc(str(report.get('finished_at')))}; phases: {esc(', '.join(report.get('phases', [])))};
run by {esc(str(report.get('caller_arn') or 'unknown'))}{' (AWX job ' + esc(str(report['awx_job_id'])) + ')' if report.get('awx_job_id') else ''}.</p>
<div class="cards">{cards}<div class="card"><b>{summary.get('total', 0)}</b><span>total</span></div></div>
<h2>Failures ({len(failures)})</h2><ul id="failures">{failure_items or '<li>none</li>'}</ul>
<h2>Not patched ({summary.get('not_patched', 0)})</h2><ul id="not-patched">{left_items or '<li>none</li>'}</ul>
<h2>Timeline</h2>
{timeline_svg(report)}
<h2>Instances</h2>
<table id="instances"><thead><tr><th>Instance</th><th>Name</th><th>Account</th><th>Region</th><th>Platform</th><th>Wave</th><th>Zone</th>
<th>Final status</th><th>Reasons</th><th>AMI</th><th>Patch outcome</th><th>Missing before</th><th>Missing after</th><th>Rollback</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
</body></html>
"""


def write_atomic(path, text):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", text=True)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def locked(directory):
    """Serialise writers of one run directory (phases of a run may overlap when run by hand)."""
    if fcntl is None:
        yield
        return
    # Created 0600 like the reports: the default mode would follow the umask and could leave it world-readable.
    with os.fdopen(os.open(os.path.join(directory, ".lock"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_report(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        report = json.load(fh)
    # On disk instances is a list (stable for consumers); in memory a dict keyed by id.
    report["instances"] = {e["instance_id"]: e for e in report.get("instances", [])}
    return report


def write_report(report_dir, run, instances, phase=None, wave=None):
    """Merge `instances` (and a patching wave's record) into the run's report and rewrite report.json/csv/html.

    Returns the paths, the summary, the stop (or None) and the one-sentence headline.
    """
    directory = run_directory(report_dir, run["run_id"], run.get("slice"))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = {name: os.path.join(directory, f"report.{name}") for name in ("json", "csv", "html")}
    with locked(directory):
        report = merge_report(load_report(paths["json"]), run, instances, phase, wave)
        on_disk = dict(report, instances=sorted(report["instances"].values(), key=lambda e: e["instance_id"]))
        write_atomic(paths["json"], json.dumps(on_disk, indent=2, sort_keys=True, default=str) + "\n")
        write_atomic(paths["csv"], render_csv(report))
        write_atomic(paths["html"], render_html(report))
    return {"directory": directory, "paths": paths, "summary": report["summary"], "stop": report["stop"], "headline": report["headline"]}


def entry_from_scan(instance):
    """A discovery report entry from one ec2_patch_scan instance."""
    return {
        "instance_id": instance["instance_id"], "name": instance.get("name"), "account_id": instance.get("account_id"),
        "region": instance.get("region"), "platform": instance.get("platform"),
        "discovery": {"eligible": instance.get("eligible", False), "reasons": instance.get("reasons", []),
                      "ping_status": (instance.get("ssm") or {}).get("ping_status"), "patch_state": instance.get("patch_state") or {},
                      "wave": instance.get("wave")},
        # Topology and the planned wave (discovery's wave plan, module_utils/wave_plan.py).
        "zone": instance.get("zone"), "wave": instance.get("wave"), "target_groups": instance.get("target_groups") or [],
        "asg": instance.get("asg"),
    }


def plan_of(table):
    """The run's wave plan, from each instance's latest discovery: [{wave, instance_ids, zones}] in wave order."""
    waves = {}
    for entry in table.values():
        number = (entry.get("discovery") or {}).get("wave")
        if number:
            wave = waves.setdefault(number, {"wave": number, "instance_ids": [], "zones": set()})
            wave["instance_ids"].append(entry["instance_id"])
            wave["zones"].add(entry.get("zone") or "")
    return [dict(w, instance_ids=sorted(w["instance_ids"]), zones=sorted(w["zones"])) for _n, w in sorted(waves.items())]


def entry_from_backup(backup, now=None):
    """A backup report entry from one ami_backup_verify result, with its step time.

    The step starts when the image was started (created_at: CreateImage, or the interrupted run's that this one adopted)
    and ends when the phase recorded it (`now`: the module has returned, so the image was verified or failed by then).
    A reused image took no time in this run: its step has an outcome and no times.
    """
    entry = {"instance_id": backup["instance_id"],
             "backup": {k: backup.get(k) for k in ("image_id", "name", "state", "snapshot_ids", "verified", "status", "error")}}
    if backup.get("status") == "failed":
        entry["reason"] = "backup_failed"
    if backup.get("status") in ("created", "failed", "reused"):
        step = {"outcome": backup["status"], "error": backup.get("error")}
        if backup["status"] != "reused" and backup.get("created_at"):
            step.update(started_at=backup["created_at"], ended_at=now or now_iso())
        entry["steps"] = {"backup": step}
    return entry


ADAPTERS = {"discovery": entry_from_scan, "backup": entry_from_backup}


def entries_from_results(phase, results, now=None):
    if phase not in ADAPTERS:
        raise ValueError(f"results can only be given for the phases {', '.join(sorted(ADAPTERS))}, not '{phase}'")
    if phase == "backup":
        return [entry_from_backup(item, now or now_iso()) for item in results]
    return [ADAPTERS[phase](item) for item in results]
