# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hosts to batched calls and back: one AWS call per (account, region, role), results handed back per host."""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils.readers import NOT_IN_PATCH_GROUP, outside_patch_groups, patch_group_list


class HostError(ValueError):
    """A host lacks what batching needs (its region)."""


class _ReadOnce:
    """hostvars with each host read at most once: every hostvars[name] computes all of that host's variables."""

    def __init__(self, hostvars):
        self._hostvars = hostvars
        self._read = {}

    def get(self, name, default=None):
        if name not in self._read:
            self._read[name] = self._hostvars.get(name)
        found = self._read[name]
        return default if found is None else found


def read_once(hostvars):
    return hostvars if isinstance(hostvars, _ReadOnce) else _ReadOnce(hostvars)


def instance_id_of(name, hostvars):
    host = hostvars.get(name, {})
    instance_id = host.get("instance_id")
    if not instance_id and str(name).startswith("i-"):
        instance_id = str(name)
    return instance_id


def partition_hosts(hosts, hostvars, default_region=None):
    hostvars = read_once(hostvars)
    groups = {}
    for name in hosts:
        instance_id = instance_id_of(name, hostvars)
        if not instance_id:
            continue
        host = hostvars.get(name, {})
        region = host.get("region") or default_region
        if not region:
            raise HostError(f"host {name} has no region variable and no default region was given")
        key = (str(host.get("account_id") or ""), region, host.get("cms_patching_role_arn") or "", host.get("cms_patching_external_id") or "")
        groups.setdefault(key, []).append(instance_id)
    return [
        {"account_id": account, "region": region, "role_arn": role, "external_id": external_id, "instance_ids": sorted(ids)}
        for (account, region, role, external_id), ids in sorted(groups.items())
    ]


def index_results(results, key, id_key="instance_id"):
    """Flatten a looped module result's lists (results[*][key]) into {instance_id: entry}."""
    index = {}
    for result in results or []:
        for entry in result.get(key) or []:
            index[entry[id_key]] = entry
    return index


def host_instance_map(hosts, hostvars):
    """{instance_id: inventory_hostname}, to hand per-instance results back to hosts."""
    hostvars = read_once(hostvars)
    return {instance_id_of(h, hostvars): h for h in hosts if instance_id_of(h, hostvars)}


def host_results(hosts, hostvars, index, patch_groups=None):
    """[{host, result}] for the hosts whose instance has an entry in `index`, computed once for a whole play.

    With `patch_groups`, an instance outside them is made ineligible with reason not_in_patch_group: the same rule
    (readers.outside_patch_groups) ec2_patch_scan applies to its own patch_groups option.
    """
    hostvars = read_once(hostvars)
    patch_groups = patch_group_list(patch_groups)
    pairs = []
    for name in hosts:
        result = index.get(instance_id_of(name, hostvars))
        if result is None:
            continue
        reasons = list(result.get("reasons") or [])
        if outside_patch_groups(result.get("patch_group"), patch_groups) and NOT_IN_PATCH_GROUP not in reasons:
            result = dict(result, eligible=False, reasons=reasons + [NOT_IN_PATCH_GROUP])
        pairs.append({"host": name, "result": result})
    return pairs
