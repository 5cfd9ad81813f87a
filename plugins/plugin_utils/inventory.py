# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet discovery for the ec2_fleet inventory: EC2 selection with include/exclude filters, SSM enrichment
batched by 50, host variables and default group names.

Controller-only (plugin_utils): used by the inventory plugin alone. Plain functions over boto3 clients, so unit
tests can drive them with botocore's Stubber. Every AWS read goes through the shared readers (readers.py): instances,
agents and patch states arrive as their normalised records.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.amazon.aws.plugins.module_utils.transformation import ansible_dict_to_boto3_filter_list

from ansible_collections.cms.patching.plugins.module_utils import readers as R
from ansible_collections.cms.patching.plugins.module_utils.batching import SSM_BATCH
from ansible_collections.cms.patching.plugins.module_utils.tags import patch_group

# Ansible's own rule for group names (ansible.constants.INVALID_VARIABLE_NAMES); repeated so these helpers
# import without the controller's constants.
INVALID_GROUP_CHARS = re.compile(r"^[\d\W]|[^\w]")

# Like amazon.aws.aws_ec2: without an instance-state-name filter, terminated instances are left out.
DEFAULT_STATES = ["running", "pending", "stopping", "stopped"]
EC2_PAGE_MAX = R.EC2_PAGE_MAX
EC2_PAGE_MIN = 5
ONLINE = "Online"
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]+$")

# Hostname preferences (DescribeInstances filter names, as amazon.aws.aws_ec2 spells them) -> instance record key.
HOSTNAME_FIELDS = {
    "instance-id": "instance_id",
    "private-ip-address": "private_ip_address",
    "private-dns-name": "private_dns_name",
    "dns-name": "public_dns_name",
    "ip-address": "public_ip_address",
}


def sanitize_group_name(name):
    """What Ansible does to an invalid group name when it transforms it: every invalid character becomes _."""
    return INVALID_GROUP_CHARS.sub("_", name)


def role_account_id(role_arn):
    match = ROLE_ARN_RE.match(role_arn or "")
    return match.group(1) if match else None


def instance_filters(filter_dict, default_states=True):
    """amazon.aws filter dict -> boto3 filter list; include queries skip terminated instances unless told otherwise."""
    filters = ansible_dict_to_boto3_filter_list(filter_dict or {})
    if default_states and not any(f["Name"] == "instance-state-name" for f in filters):
        filters.append({"Name": "instance-state-name", "Values": list(DEFAULT_STATES)})
    return filters


def select_instances(client, include_filters, exclude_filters, page_size=EC2_PAGE_MAX, on_selected=None):
    """amazon.aws.aws_ec2 semantics: the union of the include queries minus anything an exclude query matches.

    on_selected(ids) is called with each page's newly selected ids, so SSM lookups can start while EC2 still pages.
    Instances are the readers' instance records. Throttling is per account and region: the clients' botocore retry
    policy (aws.client_config) backs off on every page.
    """
    excluded = set()
    for filter_dict in exclude_filters:
        for page in R.instance_pages(client, instance_filters(filter_dict, False), page_size):
            excluded.update(i["instance_id"] for i in page)
    selected = {}
    for filter_dict in include_filters or [{}]:
        for page in R.instance_pages(client, instance_filters(filter_dict), page_size):
            new = [i for i in page if i["instance_id"] not in excluded and i["instance_id"] not in selected]
            selected.update((i["instance_id"], i) for i in new)
            if on_selected and new:
                on_selected([i["instance_id"] for i in new])
    return [selected[i] for i in sorted(selected)]


class SsmLookup:
    """SSM facts for a stream of instance ids, 50 per batch, fetched by a few threads while the ids still arrive.

    Each batch costs one DescribeInstanceInformation call and, with patch_state, one DescribeInstancePatchStates
    call for its SSM-managed instances (none when it has no managed instance).
    """

    def __init__(self, client, patch_state=False, workers=4):
        self.client = client
        self.patch_state = patch_state
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending = []
        self._futures = []

    def add(self, instance_ids):
        self._pending.extend(instance_ids)
        while len(self._pending) >= SSM_BATCH:
            self._submit(self._pending[:SSM_BATCH])
            del self._pending[:SSM_BATCH]

    def _submit(self, batch):
        self._futures.append(self._pool.submit(self._lookup, batch))

    def _lookup(self, batch):
        info = R.read_agents(self.client, batch)
        states = R.read_patch_states(self.client, [i for i in batch if i in info]) if self.patch_state and info else {}
        return info, states

    def results(self):
        """(agent records by id, patch-state records by id or None without patch_state); re-raises the first failed batch's error."""
        try:
            if self._pending:
                self._submit(self._pending)
                self._pending = []
            info, states = {}, {}
            for future in self._futures:
                batch_info, batch_states = future.result()
                info.update(batch_info)
                states.update(batch_states)
            return info, (states if self.patch_state else None)
        finally:
            self.close()

    def close(self):
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)


def host_vars(instance, region, agent=None, patch_state=None, role_arn=None, external_id=None):
    """The host variables of one instance record (JSON-serialisable, so the inventory cache can store them).

    agent is its agent record (None: SSM does not manage it); patch_state is left out when None (option off);
    pass {} for "asked, but SSM has none".
    """
    hostvars = {
        "instance_id": instance["instance_id"],
        "account_id": instance["account_id"] or role_account_id(role_arn),
        "region": region,
        "availability_zone": instance["availability_zone"],
        "instance_type": instance["instance_type"],
        "instance_state": instance["state"],
        "image_id": instance["image_id"],
        "launch_time": instance["launch_time"],
        "platform": R.platform_of(instance, agent),
        "private_ip_address": instance["private_ip_address"],
        "private_dns_name": instance["private_dns_name"],
        "public_ip_address": instance["public_ip_address"],
        "vpc_id": instance["vpc_id"],
        "subnet_id": instance["subnet_id"],
        "ec2_tags": instance["tags"],
        "ssm": R.agent_facts(agent),
    }
    if patch_state is not None:
        hostvars["patch_state"] = patch_state
    if role_arn:
        hostvars["cms_patching_role_arn"] = role_arn
        if external_id:
            hostvars["cms_patching_external_id"] = external_id
    return hostvars


def default_groups(hostvars):
    """The groups every host joins, sanitised the way Ansible transforms group names."""
    tags = hostvars.get("ec2_tags") or {}
    groups = [
        "ssm_online" if (hostvars.get("ssm") or {}).get("ping_status") == ONLINE else "ssm_offline",
        "platform_" + hostvars["platform"],
        "region_" + hostvars["region"],
    ]
    if hostvars.get("account_id"):
        groups.append("account_" + hostvars["account_id"])
    if patch_group(tags):
        groups.append("patch_group_" + patch_group(tags))
    if tags.get("Environment"):
        groups.append("env_" + tags["Environment"])
    return [sanitize_group_name(g) for g in groups]


def _preference_value(instance, preference):
    if preference.startswith("tag:"):
        return instance["tags"].get(preference[4:]) or None
    return instance.get(HOSTNAME_FIELDS[preference]) or None


def hostname_of(instance, preferences):
    """The first preference that has a value; the instance id when none has (a host is never dropped)."""
    for pref in preferences or ():
        if isinstance(pref, dict):
            name = _preference_value(instance, pref["name"])
            prefix = _preference_value(instance, pref["prefix"]) if pref.get("prefix") else None
            if name and prefix:
                name = prefix + pref.get("separator", "_") + name
        else:
            name = _preference_value(instance, pref)
        if name:
            return name
    return instance["instance_id"]


def hostname_problem(pref):
    """Why a `hostnames` entry is unusable, or None."""
    def bad_name(value):
        if not isinstance(value, str) or not (value in HOSTNAME_FIELDS or (value.startswith("tag:") and len(value) > 4)):
            return f"unknown hostnames entry {value!r}: use one of {', '.join(sorted(HOSTNAME_FIELDS))} or tag:<key>"
        return None

    if isinstance(pref, dict):
        unknown = set(pref) - {"name", "prefix", "separator"}
        if unknown or "name" not in pref:
            return f"a hostnames dict takes name (required), prefix and separator, got {sorted(pref)}"
        return bad_name(pref["name"]) or (bad_name(pref["prefix"]) if pref.get("prefix") else None)
    return bad_name(pref)


def make_hostnames_unique(hosts):
    """A name two instances share would merge them into one host: later ones fall back to their instance id.

    hosts are {"name", "vars"} records, changed in place; returns one warning per renamed host.
    """
    taken, warnings = {}, []
    for host in hosts:
        instance_id = host["vars"]["instance_id"]
        if host["name"] in taken:
            warnings.append(f"hostname {host['name']} of {instance_id} is already used by {taken[host['name']]}; listing it as {instance_id}")
            host["name"] = instance_id
        taken[host["name"]] = instance_id
    return warnings


def account_problem(account):
    """Why an `accounts` entry is unusable, or None (external ids are never echoed)."""
    if not isinstance(account, dict):
        return f"accounts entries must be dicts with role_arn (and external_id), got {type(account).__name__}"
    unknown = sorted(str(k) for k in set(account) - {"role_arn", "external_id"})
    if unknown:
        return f"unknown key(s) {', '.join(unknown)} in an accounts entry (allowed: role_arn, external_id)"
    if not role_account_id(account.get("role_arn")):
        return f"accounts role_arn {account.get('role_arn')!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)"
    return None
