"""The shared AWS readers (module_utils/readers.py): batching, paging, key sets, and the platform and patch-group rules.

The clients are real boto3 clients under botocore's Stubber, so every request is checked against the botocore model
and each stubbed response must be asked for with exactly the expected parameters.
"""

import datetime

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.cms.patching.plugins.module_utils import readers as R

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
INSTANCE_KEYS = {"instance_id", "account_id", "state", "name", "tags", "patch_group", "ec2_platform", "instance_type", "image_id",
                 "launch_time", "availability_zone", "private_ip_address", "private_dns_name", "public_ip_address",
                 "public_dns_name", "vpc_id", "subnet_id", "root_device_type", "root_device_name", "volumes"}


def ids(n, start=0):
    return [f"i-{k:017x}" for k in range(start, start + n)]


def client(service):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")


def raw(iid, **extra):
    data = {"InstanceId": iid, "State": {"Name": "running"}, "Tags": [{"Key": "Name", "Value": "web-1"}, {"Key": "PatchGroup", "Value": "web"}],
            "RootDeviceType": "ebs", "RootDeviceName": "/dev/xvda", "LaunchTime": NOW,
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-1"}}, {"DeviceName": "/dev/sdb"}]}
    data.update(extra)
    return data


def info(iid, **extra):
    return dict({"InstanceId": iid, "PingStatus": "Online", "PlatformType": "Linux", "PlatformName": "Amazon Linux",
                 "PlatformVersion": "2023", "AgentVersion": "3.3.1", "LastPingDateTime": NOW}, **extra)


# --- DescribeInstances -------------------------------------------------------------------------------------------

def test_instances_by_id_go_in_filters_of_200_and_every_page_is_read():
    ec2 = client("ec2")
    wanted = ids(250)
    with Stubber(ec2) as stub:
        first = {"Filters": [{"Name": "instance-id", "Values": wanted[:200]}]}
        stub.add_response("describe_instances", {"Reservations": [{"OwnerId": "111111111111", "Instances": [raw(i) for i in wanted[:120]]}],
                                                 "NextToken": "t1"}, first)
        stub.add_response("describe_instances", {"Reservations": [{"OwnerId": "111111111111", "Instances": [raw(i) for i in wanted[120:200]]}]},
                          dict(first, NextToken="t1"))
        stub.add_response("describe_instances", {"Reservations": [{"OwnerId": "222222222222", "Instances": [raw(i) for i in wanted[200:249]]}]},
                          {"Filters": [{"Name": "instance-id", "Values": wanted[200:]}]})
        found = R.read_instances(ec2, wanted)
        stub.assert_no_pending_responses()
    assert [r["instance_id"] for r in found] == wanted[:249]  # the unknown last id is simply absent
    assert found[0]["account_id"] == "111111111111" and found[-1]["account_id"] == "222222222222"


def test_instance_filters_and_page_size_are_passed_and_no_ids_reads_nothing():
    ec2 = client("ec2")
    filters = [{"Name": "tag:Role", "Values": ["web"]}]
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": []}, {"Filters": filters, "MaxResults": 5})
        stub.add_response("describe_instances", {"Reservations": []},
                          {"Filters": filters + [{"Name": "instance-id", "Values": ids(1)}], "MaxResults": 5})
        assert R.read_instances(ec2, filters=filters, page_size=5) == []
        assert R.read_instances(ec2, ids(1), filters, page_size=5) == []
        assert R.read_instances(ec2, []) == []  # an empty id list is no query at all (not "every instance")
        stub.assert_no_pending_responses()


def test_instance_record_key_set():
    record = R.instance_record(raw("i-0123456789abcdef0", InstanceType="t3.micro", PublicDnsName="ec2-1.example"), "111111111111")
    assert set(record) == INSTANCE_KEYS
    assert record["tags"] == {"Name": "web-1", "PatchGroup": "web"} and record["name"] == "web-1" and record["patch_group"] == "web"
    assert record["volumes"] == [{"device_name": "/dev/xvda", "volume_id": "vol-1"}]  # a mapping without EBS is no volume
    assert record["launch_time"] == "2026-01-02T03:04:05+00:00" and record["ec2_platform"] == "linux"
    assert record["public_dns_name"] == "ec2-1.example" and record["account_id"] == "111111111111" and record["state"] == "running"


# --- SSM ---------------------------------------------------------------------------------------------------------

def test_agents_are_read_50_ids_per_call_in_pages_of_50():
    ssm = client("ssm")
    wanted = ids(120)
    with Stubber(ssm) as stub:
        for batch in (wanted[:50], wanted[50:100], wanted[100:]):
            stub.add_response("describe_instance_information", {"InstanceInformationList": [info(i) for i in batch[:-1]]},
                              {"Filters": [{"Key": "InstanceIds", "Values": batch}], "MaxResults": 50})
        agents = R.read_agents(ssm, wanted + wanted[:3])  # a repeated id is asked for once
        stub.assert_no_pending_responses()
    assert len(agents) == 117 and wanted[49] not in agents
    assert agents[wanted[0]] == {"ping_status": "Online", "platform_type": "Linux", "platform_name": "Amazon Linux",
                                 "platform_version": "2023", "agent_version": "3.3.1", "last_ping": "2026-01-02T03:04:05+00:00"}
    assert set(agents[wanted[0]]) == set(R.AGENT_KEYS)


def test_agent_pages_are_followed():
    ssm = client("ssm")
    wanted = ids(3)
    params = {"Filters": [{"Key": "InstanceIds", "Values": wanted}], "MaxResults": 50}
    with Stubber(ssm) as stub:
        stub.add_response("describe_instance_information", {"InstanceInformationList": [info(wanted[0])], "NextToken": "n"}, params)
        stub.add_response("describe_instance_information", {"InstanceInformationList": [info(wanted[2])]}, dict(params, NextToken="n"))
        assert sorted(R.read_agents(ssm, wanted)) == [wanted[0], wanted[2]]
        stub.assert_no_pending_responses()


def test_agent_facts_are_nulls_for_an_unmanaged_instance():
    assert R.agent_facts(None) == dict.fromkeys(R.AGENT_KEYS)
    assert R.agent_facts(R.agent_record(info("i-1")))["ping_status"] == "Online"


def test_patch_states_are_read_50_ids_per_call_with_one_key_set():
    ssm = client("ssm")
    wanted = ids(60)
    state = {"PatchGroup": "web", "BaselineId": "pb-0123456789abcdef0", "OperationStartTime": NOW, "OperationEndTime": NOW,
             "Operation": "Scan", "MissingCount": 2, "SnapshotId": "11111111-2222-3333-4444-555555555555"}
    with Stubber(ssm) as stub:
        for batch in (wanted[:50], wanted[50:]):
            stub.add_response("describe_instance_patch_states", {"InstancePatchStates": [dict(state, InstanceId=i) for i in batch]},
                              {"InstanceIds": batch, "MaxResults": 50})
        states = R.read_patch_states(ssm, wanted)
        stub.assert_no_pending_responses()
    assert len(states) == 60 and tuple(states[wanted[55]]) == R.PATCH_STATE_KEYS
    assert states[wanted[0]] == {
        "missing": 2, "failed": 0, "installed": 0, "installed_other": 0, "installed_pending_reboot": 0, "installed_rejected": 0,
        "not_applicable": 0, "critical_non_compliant": 0, "security_non_compliant": 0, "operation": "Scan",
        "operation_end_time": "2026-01-02T03:04:05+00:00", "baseline_id": "pb-0123456789abcdef0",
        "snapshot_id": "11111111-2222-3333-4444-555555555555"}


def test_no_ids_make_no_ssm_call():
    ssm = client("ssm")
    with Stubber(ssm) as stub:
        assert R.read_agents(ssm, []) == {} and R.read_patch_states(ssm, []) == {}
        stub.assert_no_pending_responses()


# --- rules -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("instance, agent, platform", [
    ({"ec2_platform": "linux"}, {"platform_type": "Windows"}, "windows"),   # SSM's view wins when SSM manages it
    ({"ec2_platform": "windows"}, None, "windows"),
    ({"ec2_platform": "linux"}, {"platform_type": "MacOS"}, "macos"),
    ({"ec2_platform": "windows"}, {"platform_type": None}, "windows"),
    (None, {"platform_type": "Linux"}, "linux"),
    (None, None, None),
])
def test_one_platform_rule(instance, agent, platform):
    assert R.platform_of(instance, agent) == platform


@pytest.mark.parametrize("fields, platform", [
    ({}, "linux"), ({"Platform": "windows"}, "windows"), ({"PlatformDetails": "Windows with SQL Server Standard"}, "windows"),
    ({"PlatformDetails": "Linux/UNIX"}, "linux"),
])
def test_ec2_platform(fields, platform):
    assert R.ec2_platform(fields) == platform


@pytest.mark.parametrize("group, groups, outside", [
    ("web", None, False), ("web", [], False), (None, [], False),
    ("web", ["web", "db"], False), ("db", "web, db", False),
    ("app", ["web"], True), (None, ["web"], True), ("app", "web,db", True),
])
def test_one_patch_group_rule(group, groups, outside):
    assert R.outside_patch_groups(group, groups) is outside


# --- the backup's reads ------------------------------------------------------------------------------------------

def test_backup_reads_instance_records_and_leaves_out_instances_going_away():
    from ansible_collections.cms.patching.plugins.module_utils.backup import images as backup  # pylint: disable=import-outside-toplevel
    ec2 = client("ec2")
    wanted = ids(3)
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": [{"OwnerId": "111111111111", "Instances": [
            raw(wanted[0]), raw(wanted[1], State={"Name": "shutting-down"}), raw(wanted[2], RootDeviceType="instance-store")]}]},
            {"Filters": [{"Name": "instance-id", "Values": wanted}]})
        found = backup.describe_instances(ec2, wanted)
        stub.assert_no_pending_responses()
    assert sorted(found) == [wanted[0], wanted[2]]
    assert backup.instance_volumes(found[wanted[0]]) == [("/dev/xvda", "vol-1")] and backup.name_tag(found[wanted[0]]) == "web-1"
    assert backup.ebs_backed(found[wanted[0]]) and not backup.ebs_backed(found[wanted[2]])
