# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Discovery: find instances and decide, for each one, whether it can be patched and why not.

Cost for N instances: ceil(N/1000) DescribeInstances pages + 2 * ceil(N/50) SSM calls.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.batching import SSM_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.models import Instance

# EC2 accepts at most 200 values per filter.
FILTER_VALUES_MAX = 200
SUPPORTED_PLATFORMS = ("linux", "windows")
# Reasons in the order an operator should fix them.
REASONS = ("not_running", "excluded_by_tag", "asg_member", "no_ebs_root", "ssm_unmanaged", "ssm_offline", "unsupported_platform")

PATCH_STATE_FIELDS = {
    "MissingCount": "missing",
    "FailedCount": "failed",
    "InstalledCount": "installed",
    "InstalledOtherCount": "installed_other",
    "InstalledPendingRebootCount": "installed_pending_reboot",
    "InstalledRejectedCount": "installed_rejected",
    "NotApplicableCount": "not_applicable",
    "CriticalNonCompliantCount": "critical_non_compliant",
    "SecurityNonCompliantCount": "security_non_compliant",
    "Operation": "operation",
    "OperationEndTime": "operation_end_time",
    "BaselineId": "baseline_id",
    "SnapshotId": "snapshot_id",
}


def ec2_filter_list(filters):
    """amazon.aws-style {'name': value-or-list} to the EC2 Filters list."""
    result = []
    for name, values in (filters or {}).items():
        if not isinstance(values, list):
            values = [values]
        result.append({"Name": name, "Values": [str(v) for v in values]})
    return result


def describe_instances(ec2, instance_ids=None, filters=None, page_size=1000):
    """Raw instances (with OwnerId) matching ids and filters, one paginated query per 200 ids."""
    base = ec2_filter_list(filters)
    if not instance_ids:
        return _describe(ec2, base, page_size)
    found = []
    for chunk in chunked(instance_ids, FILTER_VALUES_MAX):
        found.extend(_describe(ec2, base + [{"Name": "instance-id", "Values": chunk}], page_size))
    return found


def _describe(ec2, filters, page_size):
    instances = []
    params = {"MaxResults": page_size}
    if filters:
        params["Filters"] = filters
    for reservation in paginate(ec2, "describe_instances", "Reservations", **params):
        for raw in reservation.get("Instances", []):
            raw["OwnerId"] = reservation.get("OwnerId")
            instances.append(raw)
    return instances


def ssm_instance_information(ssm, instance_ids):
    """{instance_id: DescribeInstanceInformation entry}, in batches of 50 ids."""
    info = {}
    for chunk in chunked(instance_ids, SSM_BATCH):
        for item in paginate(ssm, "describe_instance_information", "InstanceInformationList",
                             Filters=[{"Key": "InstanceIds", "Values": chunk}], MaxResults=50):
            info[item["InstanceId"]] = item
    return info


def ssm_patch_states(ssm, instance_ids):
    """{instance_id: patch-state dict with snake_case counts}, in batches of 50 ids."""
    states = {}
    for chunk in chunked(instance_ids, SSM_BATCH):
        for item in paginate(ssm, "describe_instance_patch_states", "InstancePatchStates", InstanceIds=chunk, MaxResults=50):
            states[item["InstanceId"]] = patch_state_dict(item)
    return states


def patch_state_dict(item):
    state = {}
    for aws_key, key in PATCH_STATE_FIELDS.items():
        value = item.get(aws_key)
        state[key] = value.isoformat() if hasattr(value, "isoformat") else value
    return state


def ssm_facts(info):
    if not info:
        return {}
    last_ping = info.get("LastPingDateTime")
    return {
        "ping_status": info.get("PingStatus"),
        "platform_type": info.get("PlatformType"),
        "platform_name": info.get("PlatformName"),
        "platform_version": info.get("PlatformVersion"),
        "agent_version": info.get("AgentVersion"),
        "last_ping": last_ping.isoformat() if hasattr(last_ping, "isoformat") else last_ping,
    }


def build_instance(raw, region, info=None, patch_state=None):
    tags = T.tag_dict(raw.get("Tags"))
    ssm = ssm_facts(info)
    platform = (ssm.get("platform_type") or raw.get("Platform") or "linux").lower()
    return Instance(
        instance_id=raw["InstanceId"],
        region=region,
        name=tags.get("Name"),
        state=raw.get("State", {}).get("Name"),
        platform=platform,
        patch_group=T.patch_group(tags),
        account_id=raw.get("OwnerId"),
        root_device_type=raw.get("RootDeviceType"),
        root_device_name=raw.get("RootDeviceName"),
        ebs_volumes=[m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("VolumeId")],
        tags=tags,
        ssm=ssm,
        patch_state=patch_state or {},
    )


def ineligibility_reasons(instance, exclude_tags, allow_asg_members=False, managed=True):
    """Every reason code that stops this instance from being patched, in fixing order."""
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
    return reasons


def scan(ec2, ssm, region, instance_ids=None, filters=None, patch_groups=None, exclude_tags=None,
         allow_asg_members=False, include_patch_state=True, page_size=1000):
    """Discover and classify instances; raises PatchingError for ids that do not exist in the region."""
    raws = describe_instances(ec2, instance_ids, filters, page_size)
    if instance_ids:
        missing = sorted(set(instance_ids) - {r["InstanceId"] for r in raws})
        if missing:
            raise PatchingError(f"instance(s) not found in {region}: {', '.join(missing)}")
    else:
        # Terminated instances linger in DescribeInstances for an hour; they are not part of the fleet.
        raws = [r for r in raws if r.get("State", {}).get("Name") != "terminated"]
    if patch_groups:
        raws = [r for r in raws if T.patch_group(T.tag_dict(r.get("Tags"))) in patch_groups]

    running = [r["InstanceId"] for r in raws if r.get("State", {}).get("Name") == "running"]
    info = ssm_instance_information(ssm, running) if running else {}
    managed_ids = [i for i in running if i in info]
    states = ssm_patch_states(ssm, managed_ids) if include_patch_state and managed_ids else {}

    instances = []
    for raw in raws:
        iid = raw["InstanceId"]
        instance = build_instance(raw, region, info.get(iid), states.get(iid))
        instance.reasons = ineligibility_reasons(instance, exclude_tags, allow_asg_members, managed=iid in info)
        instance.eligible = not instance.reasons
        instances.append(instance)
    instances.sort(key=lambda i: i.instance_id)
    return instances


def scan_summary(instances):
    by_reason = {reason: 0 for reason in REASONS}
    for instance in instances:
        for reason in instance.reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    eligible = sum(1 for i in instances if i.eligible)
    return {"total": len(instances), "eligible": eligible, "ineligible": len(instances) - eligible,
            "by_reason": {k: v for k, v in by_reason.items() if v}}
