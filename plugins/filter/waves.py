# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the patching role: which instances go on to the next step, and what each wave ends as."""

from __future__ import annotations

from datetime import datetime, timezone

from ansible.errors import AnsibleFilterError

from ansible_collections.cms.patching.plugins.module_utils.fleet import instance_id_of, partition_hosts, read_once
from ansible_collections.cms.patching.plugins.module_utils.waves import host_commands, needs_rollback, passed, wave_entries


def step_passed(results, ok=("success",)):
    return passed(results, ok)


def step_failed(results, ok=("success",)):
    good = set(passed(results, ok))
    return [r["instance_id"] for r in results or [] if r["instance_id"] not in good]


def step_targets(hosts, hostvars, step, defaults):
    """Partitions (one per account and region) of ssm_command_run targets for a step; hosts with nothing to run are left out."""
    hostvars = read_once(hostvars)
    per_host = {}
    for name in hosts:
        host = hostvars.get(name, {})
        platform = (host.get("cms_patching_discovery") or {}).get("platform") or "linux"
        commands, services = host_commands(step, platform, host, defaults)
        if commands or services:
            per_host[instance_id_of(name, hostvars)] = {"platform": platform, "commands": commands, "services": services}
    partitions = partition_hosts([h for h in hosts if instance_id_of(h, hostvars) in per_host], hostvars)
    for part in partitions:
        part["targets"] = [dict(per_host[i], instance_id=i) for i in part["instance_ids"]]
    return partitions


def deadline_passed(not_after, now=None):
    """Whether the ISO time `not_after` (Z or an offset; naive means UTC) is in the past."""
    if not not_after:
        return False
    try:
        deadline = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
    except ValueError:
        raise AnsibleFilterError(f"cms_patching_not_after '{not_after}' is not an ISO time such as 2026-11-27T06:00:00Z") from None
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=timezone.utc)
    return (now or datetime.now(timezone.utc)) > deadline


def patched_in_run(hosts, hostvars, run_id):
    """Hosts this run already patched and validated (status tags seen by discovery): a resumed run leaves them alone."""
    done = []
    for name in hosts:
        tags = (hostvars.get(name, {}).get("cms_patching_discovery") or {}).get("tags") or {}
        if tags.get("cms-patching:run-id") == run_id and tags.get("cms-patching:last-patch-status") == "patched":
            done.append(name)
    return done


def reason_entries(hosts, hostvars, reason):
    """Report entries that only say why these hosts were left as they are."""
    hostvars = read_once(hostvars)
    return [{"instance_id": instance_id_of(h, hostvars), "reason": reason} for h in hosts if instance_id_of(h, hostvars)]


def restore_entries(results):
    """Report entries for playbooks/rollback.yml restores."""
    entries = []
    for r in results or []:
        entry = {"instance_id": r["instance_id"],
                 "rollback": {"performed": True, "status": r.get("status"), "image_id": r.get("image_id"), "error": r.get("error")}}
        if r.get("status") == "succeeded":
            entry["final_status"] = "rolled_back"
        elif r.get("status") == "failed":
            entry.update(final_status="failed", reason="rollback_failed")
        entries.append(entry)
    return entries


class FilterModule:
    def filters(self):
        return {
            "step_passed": step_passed,
            "step_failed": step_failed,
            "needs_rollback": needs_rollback,
            "wave_entries": wave_entries,
            "step_targets": step_targets,
            "deadline_passed": deadline_passed,
            "reason_entries": reason_entries,
            "patched_in_run": patched_in_run,
            "restore_entries": restore_entries,
        }
