# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the patching role: what the wave module gets per host, and the entries of what is left as it is."""

from __future__ import annotations

from datetime import datetime, timezone

from ansible.errors import AnsibleFilterError

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.plugin_utils.fleet import instance_id_of, read_once
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.wave_engine import deadline_passed as engine_deadline_passed
from ansible_collections.cms.patching.plugins.module_utils.waves import host_commands


def wave_instances(hosts, hostvars, defaults, asg_mode=None):
    """ssm_patch_wave's `instances`: each host's instance, partition keys, platform, per-step commands and services,
    and its serving topology (discovery's target_groups and asg_name, the capacity tags it read, the ASG mode).

    Host and group variables override the role's defaults (`defaults`: precheck_commands per platform,
    precheck_extra_commands, restart_services, health_checks); see module_utils.waves.host_commands.
    `asg_mode` is cms_patching_asg_mode (skip | in_place | standby); only standby changes what the wave does.
    """
    hostvars = read_once(hostvars)
    instances = []
    for name in hosts:
        instance_id = instance_id_of(name, hostvars)
        if not instance_id:
            continue
        host = hostvars.get(name, {})
        discovery = host.get("cms_patching_discovery") or {}
        platform = discovery.get("platform") or "linux"
        steps = {step: host_commands(step, platform, host, defaults) for step in ("precheck", "restart", "health")}
        instances.append({
            "instance_id": instance_id, "region": host.get("region"), "account_id": str(host.get("account_id") or ""),
            "role_arn": host.get("cms_patching_role_arn") or "", "external_id": host.get("cms_patching_external_id") or "",
            "platform": platform, "precheck_commands": steps["precheck"][0], "restart_services": steps["restart"][1],
            "health_checks": steps["health"][0],
            # In check mode nothing was backed up: hosts the backup phase would back up pass the gate of a dry run.
            "backup_planned": (host.get("cms_patching_backup") or {}).get("status") == "would_create",
            **capacity_keys(host, discovery, asg_mode),
        })
    return instances


TG_KEYS = ("arn", "name", "port", "state", "reason", "deregistration_delay")


def capacity_keys(host, discovery, asg_mode):
    """The wave's capacity options of one host, from discovery's keys only (part of the discovery contract)."""
    mode = host.get("cms_patching_asg_mode") or asg_mode or "skip"
    asg_name = discovery.get("asg_name") or None
    return {
        "target_groups": [{k: tg.get(k) for k in TG_KEYS if tg.get(k) is not None} for tg in discovery.get("target_groups") or []],
        "asg_name": asg_name,
        "asg_mode": "standby" if mode == "standby" and asg_name else "in_place",
        # Discovery read every tag: {} when it saw none of the capacity tags, so the wave reads nothing. When it saw some
        # (a killed run's), or read no tags, None: the wave reads them afresh (they may be gone since, put back by the
        # recovery before the first wave).
        "capacity_tags": {} if discovery.get("tags") is not None and not left_out(discovery) else None,
    }


def left_out(discovery):
    """Whether discovery saw tags saying an earlier run left the instance out of service."""
    return any((discovery.get("tags") or {}).get(k) for k in T.CAPACITY_KEYS)


def left_out_hosts(hosts, hostvars):
    """Hosts whose discovered tags say a run (killed since) drained them or put them in standby."""
    hostvars = read_once(hostvars)
    return [h for h in hosts if left_out(hostvars.get(h, {}).get("cms_patching_discovery") or {})]


def deadline_passed(not_after, now=None):
    """Whether the ISO time `not_after` (Z or an offset; naive means UTC) is in the past (the wave engine's rule)."""
    try:
        return engine_deadline_passed(not_after, now or datetime.now(timezone.utc))
    except PatchingError as e:
        raise AnsibleFilterError(str(e)) from None


def patched_in_run(hosts, hostvars, run_id):
    """Hosts this run already patched and validated (status tags seen by discovery): a resumed run leaves them alone."""
    done = []
    for name in hosts:
        tags = (hostvars.get(name, {}).get("cms_patching_discovery") or {}).get("tags") or {}
        if tags.get(T.RUN_ID) == run_id and tags.get(T.LAST_PATCH_STATUS) == "patched":
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
            "wave_instances": wave_instances,
            "left_out_hosts": left_out_hosts,
            "deadline_passed": deadline_passed,
            "reason_entries": reason_entries,
            "patched_in_run": patched_in_run,
            "restore_entries": restore_entries,
        }
