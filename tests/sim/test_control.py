"""Control endpoints, accounting, throttling, STS multi-account and S3."""
from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from .conftest import Sim, http


def test_health_and_global_config(sim_url):
    assert http(f"{sim_url}/_sim/health") == {"ok": True}
    cfg = http(f"{sim_url}/_sim/config")
    assert set(cfg) >= {"image_pending_s", "command_s", "reboot_s", "replace_root_s", "throttle_rate"}


def test_per_key_stats_count_actions_and_mutations(sim):
    ids = sim.ids(count=2)
    ec2, ssm = sim.client("ec2"), sim.client("ssm")
    ec2.describe_instances(InstanceIds=ids)
    ec2.create_tags(Resources=ids, Tags=[{"Key": "a", "Value": "b"}])
    ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ids}])
    sim.client("sts").get_caller_identity()
    stats = sim.stats()
    assert stats["calls"] == {"ec2:RunInstances": 1, "ec2:DescribeInstances": 1, "ec2:CreateTags": 1,
                              "ssm:DescribeInstanceInformation": 1, "sts:GetCallerIdentity": 1}
    assert stats["mutating"] == {"ec2:RunInstances": 1, "ec2:CreateTags": 1}
    other = Sim(sim.url)
    assert other.stats() == {"calls": {}, "mutating": {}, "throttled": 0}
    http(f"{sim.url}/_sim/stats/reset?key={sim.key}", "POST")
    assert sim.stats()["calls"] == {}


def test_throttling_is_retried_transparently(sim):
    sim.config(throttle_rate=0.3)
    ec2, ssm = sim.client("ec2", retries=20), sim.client("ssm", retries=20)
    # 40 calls each: at a 0.3 throttle rate the chance that a service sees no throttling at all is 0.7**40 (< 1e-6);
    # with 10 it was 3 %, and CI met it.
    for _attempt in range(40):
        ec2.describe_instances(MaxResults=5)
        ssm.describe_instance_information(MaxResults=5)
    stats = sim.stats()
    calls = stats["calls"]
    assert calls["ec2:DescribeInstances"] > 40 and calls["ssm:DescribeInstanceInformation"] > 40  # retries happened
    assert stats["throttled"] == sum(calls.values()) - 80  # every extra request was a throttled one


def test_throttling_error_shapes(sim):
    sim.config(throttle_rate=1)
    with pytest.raises(ClientError) as err:
        sim.client("ec2", retries=1).describe_instances()
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    with pytest.raises(ClientError) as err:
        sim.client("ssm", retries=1).list_commands()
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_assume_role_other_account_is_isolated_and_accounted(sim):
    sts = sim.client("sts")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    tag = uuid.uuid4().hex
    seeded = sim.seed(account_id="222222222222", tags={"cms-test": tag})
    assert seeded[0]["account_id"] == "222222222222"
    flt = [{"Name": "tag:cms-test", "Values": [tag]}]
    assert sim.client("ec2").describe_instances(Filters=flt)["Reservations"] == []
    creds = sts.assume_role(RoleArn="arn:aws:iam::222222222222:role/cms-patching", RoleSessionName="test")["Credentials"]
    import boto3  # pylint: disable=import-outside-toplevel
    other = boto3.client("ec2", region_name="us-east-1", endpoint_url=sim.url, aws_access_key_id=creds["AccessKeyId"],
                         aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    found = [i["InstanceId"] for r in other.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]]
    assert found == [seeded[0]["instance_id"]]
    calls = sim.stats()["calls"]
    assert calls["sts:AssumeRole"] == 2 and calls["ec2:RunInstances"] == 1 and calls["ec2:DescribeInstances"] == 2
    assert "sts:AssumeRole" not in sim.stats()["mutating"]


def test_s3_requests_are_counted(sim):
    s3 = sim.client("s3")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    calls = sim.stats()["calls"]
    assert calls["s3:CreateBucket"] == 1 and calls["s3:PutObject"] == 1 and calls["s3:GetObject"] == 1
