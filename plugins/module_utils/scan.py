# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Discovery: find instances and decide, for each one, whether it can be patched and why not.

Cost for N instances: ceil(N/1000) DescribeInstances pages + 2 * ceil(N/50) SSM calls, through the shared readers,
plus the topology reads per account and region (module_utils/topology.py) when ELBv2 and Auto Scaling clients are given.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import readers as R
from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils import topology as TOPO
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.models import Instance

SUPPORTED_PLATFORMS = R.SUPPORTED_PLATFORMS
# Reasons in the order an operator should fix them; not_in_patch_group last, since it is a choice, not a fault.
REASONS = ("not_running", "excluded_by_tag", "asg_member", "no_ebs_root", "ssm_unmanaged", "ssm_offline", "unsupported_platform",
           R.NOT_IN_PATCH_GROUP)


def ec2_filter_list(filters):
    """amazon.aws-style {'name': value-or-list} to the EC2 Filters list."""
    result = []
    for name, values in (filters or {}).items():
        if not isinstance(values, list):
            values = [values]
        result.append({"Name": name, "Values": [str(v) for v in values]})
    return result


def build_instance(record, region, agent=None, patch_state=None, placement=None):
    """An Instance from the readers' instance record, agent record, patch-state record and topology entry."""
    placement = placement or {}
    return Instance(
        instance_id=record["instance_id"],
        region=region,
        name=record["name"],
        state=record["state"],
        platform=R.platform_of(record, agent),
        patch_group=record["patch_group"],
        account_id=record["account_id"],
        root_device_type=record["root_device_type"],
        root_device_name=record["root_device_name"],
        ebs_volumes=[v["volume_id"] for v in record["volumes"]],
        tags=record["tags"],
        ssm=R.agent_facts(agent),
        patch_state=patch_state or {},
        zone=placement.get("zone", record.get("availability_zone")),
        target_groups=placement.get("target_groups") or [],
        asg_name=placement.get("asg_name", record["tags"].get(T.ASG_KEY)),
        asg=placement.get("asg"),
    )


def ineligibility_reasons(instance, exclude_tags, allow_asg_members=False, managed=True, patch_groups=None, asg_mode="skip"):
    """Every reason code that stops this instance from being patched, in fixing order.

    Auto Scaling members are skipped (asg_member) only with asg_mode skip; allow_asg_members (deprecated) is in_place.
    """
    allow_asg_members = allow_asg_members or asg_mode in ("in_place", "standby")
    reasons = []
    if instance.state != "running":
        reasons.append("not_running")
    if any(instance.tags.get(k) == str(v) for k, v in (exclude_tags or {}).items()):
        reasons.append("excluded_by_tag")
    if T.ASG_KEY in instance.tags and not allow_asg_members:
        reasons.append("asg_member")
    if instance.root_device_type != "ebs":
        reasons.append("no_ebs_root")
    if instance.state == "running":
        if not managed:
            reasons.append("ssm_unmanaged")
        elif instance.ssm.get("ping_status") != "Online":
            reasons.append("ssm_offline")
    if instance.platform not in SUPPORTED_PLATFORMS:
        reasons.append("unsupported_platform")
    if R.outside_patch_groups(instance.patch_group, patch_groups):
        reasons.append(R.NOT_IN_PATCH_GROUP)
    return reasons


def scan(ec2, ssm, region, instance_ids=None, filters=None, patch_groups=None, exclude_tags=None,
         allow_asg_members=False, include_patch_state=True, page_size=1000, **topology):
    """Discover and classify instances (discover() without the topology summary)."""
    return discover(ec2, ssm, region, instance_ids, filters, patch_groups, exclude_tags, allow_asg_members,
                    include_patch_state, page_size, **topology)[0]


def discover(ec2, ssm, region, instance_ids=None, filters=None, patch_groups=None, exclude_tags=None,
             allow_asg_members=False, include_patch_state=True, page_size=1000, elbv2=None, autoscaling=None, asg_mode="skip"):
    """(instances, topology summary); raises PatchingError for ids that do not exist in the region.

    An instance outside `patch_groups` is kept, ineligible with reason not_in_patch_group (the rule the discovery
    role and the report use), so a scan never hides an instance it was asked about. With `elbv2` and `autoscaling`
    clients every instance also gets its zone, target groups and Auto Scaling group (module_utils/topology.py), read
    before anything else can fail half-way: a missing Describe permission fails the scan as a whole.
    """
    records = R.read_instances(ec2, instance_ids or None, ec2_filter_list(filters), page_size)
    if instance_ids:
        missing = sorted(set(instance_ids) - {r["instance_id"] for r in records})
        if missing:
            raise PatchingError(f"instance(s) not found in {region}: {', '.join(missing)}")
    else:
        # Terminated instances linger in DescribeInstances for an hour; they are not part of the fleet.
        records = [r for r in records if r["state"] != "terminated"]

    if elbv2 is not None and autoscaling is not None and records:
        placements, summary = TOPO.read_topology(elbv2, autoscaling, records)
    else:
        placements, summary = TOPO.zone_only(records), {"target_groups": {}, "auto_scaling_groups": {}}

    running = [r["instance_id"] for r in records if r["state"] == "running"]
    agents = R.read_agents(ssm, running) if running else {}
    managed_ids = [i for i in running if i in agents]
    states = R.read_patch_states(ssm, managed_ids) if include_patch_state and managed_ids else {}

    instances = []
    for record in records:
        iid = record["instance_id"]
        instance = build_instance(record, region, agents.get(iid), states.get(iid), placements.get(iid))
        instance.reasons = ineligibility_reasons(instance, exclude_tags, allow_asg_members, managed=iid in agents,
                                                 patch_groups=patch_groups, asg_mode=asg_mode)
        instance.eligible = not instance.reasons
        instances.append(instance)
    instances.sort(key=lambda i: i.instance_id)
    return instances, summary


def scan_summary(instances):
    by_reason = {reason: 0 for reason in REASONS}
    for instance in instances:
        for reason in instance.reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    eligible = sum(1 for i in instances if i.eligible)
    return {"total": len(instances), "eligible": eligible, "ineligible": len(instances) - eligible,
            "by_reason": {k: v for k, v in by_reason.items() if v}}
