# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the patching role's gates (module_utils/gates.py): which waves a job runs, and the report entries of the
instances a gate leaves unpatched or rolls back."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.cms.patching.plugins.module_utils import gates
from ansible_collections.cms.patching.plugins.module_utils.report import batch_position
from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.plugin_utils.fleet import instance_id_of, read_once


def wave_number(batch, play_hosts_all, serial):
    """The number (from 1) of the serial batch holding `batch` (ansible_play_batch), as Ansible cut the play's hosts
    (ansible_play_hosts_all) for `serial`: the run report's own rule, so no task has to count the waves."""
    return batch_position(list(play_hosts_all or []), serial, list(batch or []))[0]


def wave_selected(number, waves):
    """Whether wave `number` (from 1) is one of cms_patching_waves (numbers, or "N-" for N and later; empty: all)."""
    try:
        return gates.wave_selected(number, waves)
    except PatchingError as e:
        raise AnsibleFilterError(str(e)) from None


def held_entries(hosts, hostvars, run_id, gate, wave=None):
    """not_patched entries (reason from the gate's verdict) for the hosts this run would still patch: not those whose
    backup failed (they keep that reason) nor those the run already patched (a resumed run)."""
    hostvars = read_once(hostvars)
    entries = []
    for name in hosts:
        host = hostvars.get(name, {})
        instance_id = instance_id_of(name, hostvars)
        tags = (host.get("cms_patching_discovery") or {}).get("tags") or {}
        if not instance_id or (host.get("cms_patching_backup") or {}).get("status") == "failed":
            continue
        if tags.get(T.RUN_ID) == run_id and tags.get(T.LAST_PATCH_STATUS) == "patched":
            continue
        entries.append(gates.held_entry(instance_id, gate["verdict"], gate.get("alarm_name"), wave, gate.get("target_group")))
    return entries


def bake_rollback_entries(restored, alarm_name, target_group=None):
    """Report entries of the instances a bake's alarm (or unhealthy target in `target_group`) rolled back (ssm_patch_wave mode=restore results)."""
    return gates.bake_rollback_entries(restored, alarm_name, target_group)


def approval_reason(hold, canary_ended_at=None, approval_timeout=0):
    """approval_denied or approval_timeout for cms_patching_hold (approval_not_given: decided by the time waited)."""
    try:
        return gates.approval_reason(hold, canary_ended_at, approval_timeout)
    except ValueError:
        raise AnsibleFilterError(f"cms_patching_canary_ended_at '{canary_ended_at}' is not an ISO time") from None


class FilterModule:
    def filters(self):
        return {"wave_number": wave_number, "wave_selected": wave_selected, "held_entries": held_entries, "bake_rollback_entries": bake_rollback_entries,
                "approval_reason": approval_reason}
