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

SCHEMA_VERSION = 1
FINAL_STATUSES = ("skipped", "discovered", "backed_up", "patched", "failed", "rolled_back")
PHASES = ("discovery", "backup", "patch", "services", "validation", "rollback")
CSV_FIELDS = ("instance_id", "name", "account_id", "region", "platform", "final_status", "reasons", "image_id",
              "backup_status", "patch_outcome", "missing_before", "missing_after", "validation_passed", "rollback_status")
HTML_COLUMNS = ("instance_id", "name", "account_id", "region", "platform", "final_status", "reasons",
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
    """An explicit status from the patching phase wins; otherwise the furthest phase reached decides."""
    if entry.get("reason") == "locked_by_other_run":
        return "skipped"
    if entry.get("final_status") in ("patched", "failed", "rolled_back"):
        return entry["final_status"]
    discovery = entry.get("discovery") or {}
    if discovery and not discovery.get("eligible", False):
        return "skipped"
    backup = entry.get("backup") or {}
    if backup.get("status") == "failed":
        return "failed"
    if backup.get("verified"):
        return "backed_up"
    return entry.get("final_status") or "discovered"


def merge_instance(old, new):
    """Newer results win per instance; phase sections are replaced whole, so stale fields never linger."""
    merged = dict(old or {})
    for key, value in new.items():
        if value is None:
            continue
        merged[key] = value
    merged["final_status"] = derive_final_status(merged)
    return merged


def merge_report(report, run, instances, phase=None):
    report = report or {"schema_version": SCHEMA_VERSION, "run_id": run["run_id"], "started_at": run.get("started_at") or now_iso(),
                        "phases": [], "instances": {}}
    for key in ("caller_arn", "awx_job_id", "slice", "check_mode"):
        if run.get(key) not in (None, ""):
            report[key] = run[key]
    if phase and phase not in report["phases"]:
        report["phases"].append(phase)
    table = report.setdefault("instances", {})
    for entry in instances:
        table[entry["instance_id"]] = merge_instance(table.get(entry["instance_id"]), entry)
    report["finished_at"] = now_iso()
    report["summary"] = summarize(table.values())
    return report


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
    return {
        "instance_id": entry["instance_id"], "name": entry.get("name") or "", "account_id": entry.get("account_id") or "",
        "region": entry.get("region") or "", "platform": entry.get("platform") or "", "final_status": entry.get("final_status"),
        "reasons": ";".join(failure_reason(entry)), "image_id": backup.get("image_id") or "", "backup_status": backup.get("status") or "",
        "patch_outcome": patch.get("outcome") or "", "missing_before": before.get("missing", ""), "missing_after": after.get("missing", ""),
        "validation_passed": (entry.get("validation") or {}).get("passed", ""), "rollback_status": (entry.get("rollback") or {}).get("status") or "",
    }


def render_csv(report):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for entry in sorted_entries(report):
        writer.writerow(csv_row(entry))
    return out.getvalue()


def sorted_entries(report):
    """Failures first (what a change manager reads first), then by status and id."""
    order = {"failed": 0, "rolled_back": 1, "skipped": 2, "discovered": 3, "backed_up": 4, "patched": 5}
    return sorted(report["instances"].values(), key=lambda e: (order.get(e.get("final_status"), 9), e["instance_id"]))


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
                            f" ({esc(', '.join(failure_reason(e)) or 'no reason recorded')})</li>" for e in failures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cms.patching run {esc(report['run_id'])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 6px;text-align:left}}th{{background:#eee}}
.cards{{display:flex;gap:1em;margin:1em 0}}.card{{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;text-align:center}}
.card b{{display:block;font-size:1.6em}}tr.s-failed,tr.s-rolled_back{{background:#fde2e2}}tr.s-skipped{{background:#f3f3f3}}
tr.s-patched{{background:#e5f6e5}}
</style></head><body>
<h1>Patch run {esc(report['run_id'])}</h1>
<p>Started {esc(str(report.get('started_at')))}, last update {esc(str(report.get('finished_at')))}; phases: {esc(', '.join(report.get('phases', [])))};
run by {esc(str(report.get('caller_arn') or 'unknown'))}{' (AWX job ' + esc(str(report['awx_job_id'])) + ')' if report.get('awx_job_id') else ''}.</p>
<div class="cards">{cards}<div class="card"><b>{summary.get('total', 0)}</b><span>total</span></div></div>
<h2>Failures ({len(failures)})</h2><ul id="failures">{failure_items or '<li>none</li>'}</ul>
<h2>Instances</h2>
<table id="instances"><thead><tr><th>Instance</th><th>Name</th><th>Account</th><th>Region</th><th>Platform</th><th>Final status</th>
<th>Reasons</th><th>AMI</th><th>Patch outcome</th><th>Missing before</th><th>Missing after</th><th>Rollback</th></tr></thead>
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


def write_report(report_dir, run, instances, phase=None):
    """Merge `instances` into the run's report and rewrite report.json/csv/html; returns the paths and summary."""
    directory = run_directory(report_dir, run["run_id"], run.get("slice"))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = {name: os.path.join(directory, f"report.{name}") for name in ("json", "csv", "html")}
    with locked(directory):
        report = merge_report(load_report(paths["json"]), run, instances, phase)
        on_disk = dict(report, instances=sorted(report["instances"].values(), key=lambda e: e["instance_id"]))
        write_atomic(paths["json"], json.dumps(on_disk, indent=2, sort_keys=True, default=str) + "\n")
        write_atomic(paths["csv"], render_csv(report))
        write_atomic(paths["html"], render_html(report))
    return {"directory": directory, "paths": paths, "summary": report["summary"]}


def entry_from_scan(instance):
    """A discovery report entry from one ec2_patch_scan instance."""
    return {
        "instance_id": instance["instance_id"], "name": instance.get("name"), "account_id": instance.get("account_id"),
        "region": instance.get("region"), "platform": instance.get("platform"),
        "discovery": {"eligible": instance.get("eligible", False), "reasons": instance.get("reasons", []),
                      "ping_status": (instance.get("ssm") or {}).get("ping_status"), "patch_state": instance.get("patch_state") or {}},
    }


def entry_from_backup(backup):
    """A backup report entry from one ami_backup_verify result."""
    entry = {"instance_id": backup["instance_id"],
             "backup": {k: backup.get(k) for k in ("image_id", "name", "state", "snapshot_ids", "verified", "status", "error")}}
    if backup.get("status") == "failed":
        entry["reason"] = "backup_failed"
    return entry


ADAPTERS = {"discovery": entry_from_scan, "backup": entry_from_backup}


def entries_from_results(phase, results):
    if phase not in ADAPTERS:
        raise ValueError(f"results can only be given for the phases {', '.join(sorted(ADAPTERS))}, not '{phase}'")
    return [ADAPTERS[phase](item) for item in results]
