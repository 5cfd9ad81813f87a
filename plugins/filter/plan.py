# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The discovery role's wave plan: module_utils/wave_plan.py over the play's hosts, and what the playbook needs to run
it (groups cms_patching_wave_<n>, the host pattern and serial sizes of the patching play, the tags to write)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils import wave_plan as P
from ansible_collections.cms.patching.plugins.plugin_utils.fleet import partition_hosts, read_once

WAVE_GROUP = "cms_patching_wave_{}"
SKIPPED_GROUP = "cms_patching_skipped"
NO_HOSTS = "!all"  # a pattern that matches no host: the patching play then reports "no hosts matched"


def merged_topology(scan_results):
    """The topology summaries of every scanned (account, region), in one {target_groups, auto_scaling_groups}."""
    merged = {"target_groups": {}, "auto_scaling_groups": {}}
    for result in scan_results or []:
        for kind in merged:
            merged[kind].update(((result.get("topology") or {}).get(kind)) or {})
    return merged


def asg_mode_of(scan_results):
    modes = {r.get("asg_mode") for r in scan_results or [] if r.get("asg_mode")}
    return modes.pop() if len(modes) == 1 else "skip"


def wave_plan(pairs, scan_results, hostvars, run_id, min_healthy_percent=50, strategy="spread", serial=P.DEFAULT_SERIAL,
              allow_below_budget=False):
    """The plan of host_results' `pairs` ([{host, result}]); see roles/discovery/tasks/plan.yml for how it is used.

    Returns {hosts: [{host, result, groups}], waves: [{wave, hosts, instance_ids, zones}], pattern, serial,
    tag_batches: [{account_id, region, role_arn, external_id, instance_ids, value}]}.
    """
    hostvars = read_once(hostvars)
    asg_mode = asg_mode_of(scan_results)
    rooms, reasons = P.group_rooms(merged_topology(scan_results), min_healthy_percent, asg_mode)
    candidates, previous, host_of = [], {}, {}
    for pair in pairs:
        result = pair["result"]
        if not result.get("eligible"):
            continue
        iid = result["instance_id"]
        host_of[iid] = pair["host"]
        candidates.append({"id": iid, "zone": result.get("zone"), "costs": P.instance_costs(result, asg_mode)})
        number = P.read_wave_tag((result.get("tags") or {}).get(T.WAVE), run_id)
        if number:
            previous[iid] = number
    try:
        plan = P.plan_waves(candidates, rooms, reasons, min_healthy_percent, strategy, serial, allow_below_budget, previous)
    except P.PlanError as e:
        raise AnsibleFilterError(str(e)) from None

    wave_of = {iid: n for n, wave in zip(plan["numbers"], plan["waves"]) for iid in wave}
    hosts = []
    for pair in pairs:
        result = dict(pair["result"])
        iid = result["instance_id"]
        reason = plan["skipped"].get(iid)
        if reason:
            result.update(eligible=False, reasons=list(result.get("reasons") or []) + [reason])
        result["wave"] = wave_of.get(iid)
        groups = [WAVE_GROUP.format(result["wave"])] if result["wave"] else ([] if result.get("eligible") else [SKIPPED_GROUP])
        hosts.append({"host": pair["host"], "result": result, "groups": groups})

    zones = {c["id"]: c["zone"] for c in candidates}
    waves = [{"wave": n, "hosts": [host_of[i] for i in wave], "instance_ids": list(wave), "zones": sorted({zones[i] or "" for i in wave})}
             for n, wave in zip(plan["numbers"], plan["waves"])]
    return {
        "hosts": hosts,
        "waves": waves,
        "pattern": ":".join(WAVE_GROUP.format(w["wave"]) for w in waves) or NO_HOSTS,
        "serial": [len(w["hosts"]) for w in waves] or [1],
        "tag_batches": tag_batches(waves, pairs, hostvars, run_id),
    }


def tag_batches(waves, pairs, hostvars, run_id):
    """One ec2_batch_tag call per (account, region, role) and wave, for the instances whose tag does not say it yet."""
    tagged = {p["result"]["instance_id"]: (p["result"].get("tags") or {}).get(T.WAVE) for p in pairs}
    batches = []
    for wave in waves:
        value = P.wave_tag_value(run_id, wave["wave"])
        todo = [h for h, i in zip(wave["hosts"], wave["instance_ids"]) if tagged.get(i) != value]
        for part in partition_hosts(todo, hostvars):
            batches.append(dict(part, value=value))
    return batches


class FilterModule:
    def filters(self):
        return {"wave_plan": wave_plan}
