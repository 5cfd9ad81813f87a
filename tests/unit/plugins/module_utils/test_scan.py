"""Discovery eligibility rules and instance building, without AWS."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils.readers import agent_record, instance_record
from ansible_collections.cms.patching.plugins.module_utils.scan import build_instance as build_from_records
from ansible_collections.cms.patching.plugins.module_utils.scan import ec2_filter_list, ineligibility_reasons, scan_summary

EXCLUDE = {"cms-patching:exclude": "true"}


def raw(state="running", tags=None, root="ebs", platform=None):
    item = {"InstanceId": "i-0123456789abcdef0", "State": {"Name": state}, "RootDeviceType": root, "OwnerId": "123456789012",
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-1"}}]}
    if platform:
        item["Platform"] = platform
    return item


def build_instance(item, region, info=None):
    """An Instance from raw DescribeInstances/DescribeInstanceInformation entries, through the readers' records."""
    return build_from_records(instance_record(item), region, agent_record(info) if info else None)


ONLINE = {"PingStatus": "Online", "PlatformType": "Linux", "PlatformName": "Amazon Linux", "AgentVersion": "3.3"}


@pytest.mark.parametrize("kwargs, info, managed, reasons", [
    ({}, ONLINE, True, []),
    ({"state": "stopped"}, None, False, ["not_running"]),
    ({"tags": EXCLUDE}, ONLINE, True, ["excluded_by_tag"]),
    ({"tags": {"aws:autoscaling:groupName": "asg"}}, ONLINE, True, ["asg_member"]),
    ({"root": "instance-store"}, ONLINE, True, ["no_ebs_root"]),
    ({}, None, False, ["ssm_unmanaged"]),
    ({}, dict(ONLINE, PingStatus="ConnectionLost"), True, ["ssm_offline"]),
    ({}, dict(ONLINE, PlatformType="MacOS"), True, ["unsupported_platform"]),
    ({"tags": EXCLUDE, "root": "instance-store"}, dict(ONLINE, PingStatus="Inactive"), True, ["excluded_by_tag", "no_ebs_root", "ssm_offline"]),
])
def test_every_reason_in_fixing_order(kwargs, info, managed, reasons):
    instance = build_instance(raw(**kwargs), "us-east-1", info)
    assert ineligibility_reasons(instance, EXCLUDE, managed=managed) == reasons


def test_asg_members_allowed_on_request():
    instance = build_instance(raw(tags={"aws:autoscaling:groupName": "asg"}), "us-east-1", ONLINE)
    assert ineligibility_reasons(instance, EXCLUDE, allow_asg_members=True) == []


def test_platform_falls_back_to_ec2_and_patch_group_tag_variants():
    instance = build_instance(raw(platform="windows", tags={"PatchGroup": "db"}), "eu-west-1")
    assert (instance.platform, instance.patch_group, instance.account_id, instance.ebs_volumes) == ("windows", "db", "123456789012", ["vol-1"])


@pytest.mark.parametrize("tags, groups, reasons", [
    ({"Patch Group": "web"}, ["web"], []),
    ({"PatchGroup": "db"}, "web, db", []),
    ({"Patch Group": "app"}, ["web"], ["not_in_patch_group"]),
    ({}, ["web"], ["not_in_patch_group"]),
    ({"Patch Group": "app", **EXCLUDE}, ["web"], ["excluded_by_tag", "not_in_patch_group"]),
    ({}, [], []),
])
def test_outside_the_patch_groups_is_a_reason_not_a_drop(tags, groups, reasons):
    instance = build_instance(raw(tags=tags), "us-east-1", ONLINE)
    assert ineligibility_reasons(instance, EXCLUDE, patch_groups=groups) == reasons


def test_unmanaged_instance_has_null_ssm_facts():
    instance = build_instance(raw(), "us-east-1")
    assert instance.ssm["ping_status"] is None
    assert set(instance.ssm) == {"ping_status", "platform_type", "platform_name", "platform_version", "agent_version", "last_ping"}


def test_filters_take_scalars_and_lists():
    assert ec2_filter_list({"tag:Env": "prod", "instance-state-name": ["running", "stopped"]}) == [
        {"Name": "tag:Env", "Values": ["prod"]}, {"Name": "instance-state-name", "Values": ["running", "stopped"]}]


def test_summary_counts_by_reason():
    a = build_instance(raw(), "us-east-1", ONLINE)
    a.eligible = True
    b = build_instance(raw(state="stopped"), "us-east-1")
    b.reasons = ["not_running"]
    assert scan_summary([a, b]) == {"total": 2, "eligible": 1, "ineligible": 1, "by_reason": {"not_running": 1}}
