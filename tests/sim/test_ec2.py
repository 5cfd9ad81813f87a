"""EC2 behaviour the stock moto server lacks: pagination, platform tags, aws: tags, instance-store roots."""
from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError


def _all(ec2, **kwargs) -> tuple[list[str], int]:
    ids, pages = [], 0
    for page in ec2.get_paginator("describe_instances").paginate(**kwargs):
        pages += 1
        ids += [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
    return ids, pages


def test_describe_instances_honours_max_results(sim):
    tag = uuid.uuid4().hex
    ids = sim.ids(count=12, tags={"cms-test": tag})
    ec2 = sim.client("ec2")
    first = ec2.describe_instances(MaxResults=5, Filters=[{"Name": "tag:cms-test", "Values": [tag]}])
    assert sum(len(r["Instances"]) for r in first["Reservations"]) == 5
    assert first.get("NextToken")
    seen, pages = _all(ec2, Filters=[{"Name": "tag:cms-test", "Values": [tag]}], PaginationConfig={"PageSize": 5})
    assert pages == 3 and sorted(seen) == sorted(ids)


def test_describe_instances_filters(sim):
    tag = uuid.uuid4().hex
    running = sim.ids(count=3, tags={"cms-test": tag})
    stopped = sim.ids(count=2, tags={"cms-test": tag}, state="stopped")
    ec2 = sim.client("ec2")
    base = [{"Name": "tag:cms-test", "Values": [tag]}]
    seen, _pages = _all(ec2, Filters=base + [{"Name": "instance-state-name", "Values": ["stopped"]}])
    assert sorted(seen) == sorted(stopped)
    seen, _pages = _all(ec2, Filters=base + [{"Name": "instance-id", "Values": running[:2]}])
    assert sorted(seen) == sorted(running[:2])
    seen, _pages = _all(ec2, InstanceIds=running)
    assert sorted(seen) == sorted(running)


def test_max_results_range_is_validated(sim):
    with pytest.raises(ClientError) as err:
        sim.client("ec2").describe_instances(MaxResults=2000)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_unknown_filter_name_is_a_client_error(sim):
    with pytest.raises(ClientError) as err:
        sim.client("ec2").describe_instances(Filters=[{"Name": "bogus-filter", "Values": ["x"]}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "The filter 'bogus-filter' is invalid" in err.value.response["Error"]["Message"]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_windows_platform_from_tag(sim):
    win = sim.ids(platform="windows")[0]
    lin = sim.ids(platform="linux")[0]
    ec2 = sim.client("ec2")
    insts = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=[win, lin])["Reservations"] for i in r["Instances"]}
    assert insts[win]["Platform"] == "windows" and insts[win]["PlatformDetails"] == "Windows"
    assert "Platform" not in insts[lin] and insts[lin]["PlatformDetails"] == "Linux/UNIX"


def test_names_asg_tag_and_instance_store(sim):
    seeded = sim.seed(count=3, name_prefix="app", asg="my-asg", root_device="instance-store")
    ec2 = sim.client("ec2")
    insts = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=[s["instance_id"] for s in seeded])["Reservations"]
             for i in r["Instances"]}
    assert [s["name"] for s in seeded] == ["app-001", "app-002", "app-003"]
    for item in seeded:
        inst = insts[item["instance_id"]]
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["aws:autoscaling:groupName"] == "my-asg" and tags["Name"] == item["name"]
        assert inst["RootDeviceType"] == "instance-store"
    with pytest.raises(ClientError) as err:
        ec2.create_image(InstanceId=seeded[0]["instance_id"], Name=uuid.uuid4().hex)
    assert err.value.response["Error"]["Code"] == "UnsupportedOperation"


def test_fleet_rejects_unknown_fault(sim):
    from awssim import fleet  # pylint: disable=import-outside-toplevel
    with pytest.raises(fleet.SpecError, match="unknown faults"):
        sim.seed(faults=["patch-fial"])
