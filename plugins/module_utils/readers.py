# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's only readers of EC2 instances, SSM agents and SSM patch states, and its rules for a host's
platform and patch-group membership.

Every reader is batched and paginated (boto3 paginators, which follow NextToken) and returns plain, JSON-safe
records with one key set each (times as ISO 8601 strings):

- instance (DescribeInstances): instance_id, account_id (the reservation's OwnerId), state, name, tags (dict),
  patch_group, ec2_platform (linux or windows, EC2's view), instance_type, image_id, launch_time,
  availability_zone, private_ip_address, private_dns_name, public_ip_address, public_dns_name, vpc_id, subnet_id,
  root_device_type, root_device_name, volumes ([{device_name, volume_id}] of the EBS volumes).
- agent (DescribeInstanceInformation): AGENT_KEYS. An instance SSM does not manage has no record.
- patch state (DescribeInstancePatchStates): PATCH_STATE_KEYS (counts default to 0).

Cost: ceil(N/EC2_ID_BATCH) DescribeInstances queries for N ids (or one query for filters), each one page per
page_size instances; ceil(N/50) calls for each SSM reader (AWS's limit of 50 ids per call), one page each.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, SSM_BATCH, chunked

EC2_PAGE_MAX = 1000
# DescribeInstanceInformation pages default to 10 items (botocore model: MaxResults 5..50, "The default value is
# 10 items"), so every call asks for its whole batch of 50 in one page.
AGENT_PAGE = SSM_BATCH
# DescribeInstancePatchStates: MaxResults 10..100 and at most 50 InstanceIds (botocore model).
PATCH_STATE_PAGE = SSM_BATCH
SUPPORTED_PLATFORMS = ("linux", "windows")
NOT_IN_PATCH_GROUP = "not_in_patch_group"

AGENT_FIELDS = (
    ("ping_status", "PingStatus"),
    ("platform_type", "PlatformType"),
    ("platform_name", "PlatformName"),
    ("platform_version", "PlatformVersion"),
    ("agent_version", "AgentVersion"),
    ("last_ping", "LastPingDateTime"),
)
AGENT_KEYS = tuple(key for key, _field in AGENT_FIELDS)

PATCH_COUNTS = (
    ("missing", "MissingCount"),
    ("failed", "FailedCount"),
    ("installed", "InstalledCount"),
    ("installed_other", "InstalledOtherCount"),
    ("installed_pending_reboot", "InstalledPendingRebootCount"),
    ("installed_rejected", "InstalledRejectedCount"),
    ("not_applicable", "NotApplicableCount"),
    ("critical_non_compliant", "CriticalNonCompliantCount"),
    ("security_non_compliant", "SecurityNonCompliantCount"),
)
PATCH_FIELDS = (
    ("operation", "Operation"),
    ("operation_end_time", "OperationEndTime"),
    ("baseline_id", "BaselineId"),
    ("snapshot_id", "SnapshotId"),
)
PATCH_STATE_KEYS = tuple(key for key, _field in PATCH_COUNTS + PATCH_FIELDS)


def iso(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _pages(client, operation, **params):
    return client.get_paginator(operation).paginate(**params)


# --- EC2 instances -----------------------------------------------------------------------------------------------

def instance_record(raw, owner_id=None):
    """One DescribeInstances entry in the instance key set."""
    tags = T.tag_dict(raw.get("Tags"))
    return {
        "instance_id": raw["InstanceId"],
        "account_id": owner_id or raw.get("OwnerId"),
        "state": (raw.get("State") or {}).get("Name"),
        "name": tags.get("Name"),
        "tags": tags,
        "patch_group": T.patch_group(tags),
        "ec2_platform": ec2_platform(raw),
        "instance_type": raw.get("InstanceType"),
        "image_id": raw.get("ImageId"),
        "launch_time": iso(raw.get("LaunchTime")),
        "availability_zone": (raw.get("Placement") or {}).get("AvailabilityZone"),
        "private_ip_address": raw.get("PrivateIpAddress"),
        "private_dns_name": raw.get("PrivateDnsName"),
        "public_ip_address": raw.get("PublicIpAddress"),
        "public_dns_name": raw.get("PublicDnsName"),
        "vpc_id": raw.get("VpcId"),
        "subnet_id": raw.get("SubnetId"),
        "root_device_type": raw.get("RootDeviceType"),
        "root_device_name": raw.get("RootDeviceName"),
        "volumes": [{"device_name": m.get("DeviceName"), "volume_id": m["Ebs"]["VolumeId"]}
                    for m in raw.get("BlockDeviceMappings") or [] if (m.get("Ebs") or {}).get("VolumeId")],
    }


def ec2_platform(raw):
    """EC2's view: windows when Platform or PlatformDetails says so, else linux (EC2 names no other platform)."""
    if (raw.get("Platform") or "").lower() == "windows" or "windows" in (raw.get("PlatformDetails") or "").lower():
        return "windows"
    return "linux"


def instance_pages(ec2, filters=None, page_size=None):
    """One DescribeInstances query, page by page: a list of instance records per page.

    page_size is MaxResults (5..1000); None lets AWS choose (an id filter of at most EC2_ID_BATCH ids fits one page).
    """
    params = {}
    if filters:
        params["Filters"] = list(filters)
    if page_size:
        params["MaxResults"] = page_size
    for page in _pages(ec2, "describe_instances", **params):
        yield [instance_record(raw, reservation.get("OwnerId"))
               for reservation in page.get("Reservations", []) for raw in reservation.get("Instances", [])]


def read_instances(ec2, instance_ids=None, filters=None, page_size=None):
    """Instance records matching `filters` (a boto3 Filters list) and, when given, `instance_ids`.

    Ids go in an instance-id filter, EC2_ID_BATCH per query, never in InstanceIds: an id EC2 does not know is then
    simply absent, instead of failing the whole call with InvalidInstanceID.NotFound (EC2 API Reference,
    DescribeInstances). An empty id list reads nothing.
    """
    filters = list(filters or [])
    if instance_ids is None:
        return [r for page in instance_pages(ec2, filters, page_size) for r in page]
    found = []
    for ids in chunked(list(dict.fromkeys(instance_ids)), EC2_ID_BATCH):
        for page in instance_pages(ec2, filters + [{"Name": "instance-id", "Values": ids}], page_size):
            found.extend(page)
    return found


# --- SSM agents and patch states ---------------------------------------------------------------------------------

def agent_record(item):
    """One DescribeInstanceInformation entry in the agent key set."""
    return {key: iso(item.get(field)) for key, field in AGENT_FIELDS}


def read_agents(ssm, instance_ids):
    """{instance id: agent record} for the ids SSM manages, 50 ids per DescribeInstanceInformation call."""
    agents = {}
    for ids in chunked(list(dict.fromkeys(instance_ids)), SSM_BATCH):
        for page in _pages(ssm, "describe_instance_information", Filters=[{"Key": "InstanceIds", "Values": ids}], MaxResults=AGENT_PAGE):
            for item in page.get("InstanceInformationList", []):
                agents[item["InstanceId"]] = agent_record(item)
    return agents


def agent_facts(agent):
    """The `ssm` fact of a host: its agent record, or every key null when SSM does not manage it."""
    return dict(agent) if agent else dict.fromkeys(AGENT_KEYS)


def patch_state_record(item):
    """One DescribeInstancePatchStates entry in the patch-state key set."""
    state = {key: item.get(field) or 0 for key, field in PATCH_COUNTS}
    state.update((key, iso(item.get(field))) for key, field in PATCH_FIELDS)
    return state


def read_patch_states(ssm, instance_ids):
    """{instance id: patch-state record} for the ids SSM has a patch state for, 50 ids per call."""
    states = {}
    for ids in chunked(list(dict.fromkeys(instance_ids)), SSM_BATCH):
        for page in _pages(ssm, "describe_instance_patch_states", InstanceIds=ids, MaxResults=PATCH_STATE_PAGE):
            for item in page.get("InstancePatchStates", []):
                states[item["InstanceId"]] = patch_state_record(item)
    return states


# --- rules -------------------------------------------------------------------------------------------------------

def platform_of(instance=None, agent=None):
    """A host's platform, lower case: SSM's PlatformType when SSM manages it (linux, windows, macos...), else EC2's
    view from the instance record; None when neither is known."""
    if agent and agent.get("platform_type"):
        return agent["platform_type"].lower()
    return (instance or {}).get("ec2_platform")


def patch_group_list(patch_groups):
    """Patch groups as a list; a comma-separated string ("web, db") is accepted too."""
    if isinstance(patch_groups, str):
        return [g.strip() for g in patch_groups.split(",") if g.strip()]
    return list(patch_groups or [])


def outside_patch_groups(patch_group, patch_groups):
    """True when patch groups are asked for and the host's (Patch Group or PatchGroup tag) is not one of them.

    Such a host stays in the results, ineligible with reason not_in_patch_group, so the report shows why it was left.
    """
    wanted = patch_group_list(patch_groups)
    return bool(wanted) and patch_group not in wanted
