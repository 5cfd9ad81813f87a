"""What the pre-flight checks read, as the simulator serves it, with plain boto3: Service Quotas for AMIs and snapshots,
the SSM agent's version, KMS key states; and EC2 power actions authorised per instance (scoped by its tags)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from .conftest import wait_for
from .test_iam import READ, allow, denied, policy


def test_service_quotas_for_amis_and_snapshots_follow_the_applied_value(sim):
    quotas = sim.client("service-quotas")
    ami = quotas.get_service_quota(ServiceCode="ec2", QuotaCode="L-B665C33B")["Quota"]
    assert (ami["QuotaName"], ami["Value"], ami["Adjustable"]) == ("AMIs", 50000.0, True)
    assert ami["QuotaArn"].endswith(":ec2/L-B665C33B")
    snap = quotas.get_service_quota(ServiceCode="ebs", QuotaCode="L-309BACF6")["Quota"]
    assert (snap["QuotaName"], snap["Value"]) == ("Snapshots per Region", 100000.0)
    sim.config(quota_amis=3, quota_snapshots=7)
    assert quotas.get_service_quota(ServiceCode="ec2", QuotaCode="L-B665C33B")["Quota"]["Value"] == 3.0
    assert quotas.get_service_quota(ServiceCode="ebs", QuotaCode="L-309BACF6")["Quota"]["Value"] == 7.0
    # The default is the default, whatever was applied.
    assert quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode="L-B665C33B")["Quota"]["Value"] == 50000.0
    with pytest.raises(ClientError) as err:
        sim.client("service-quotas", retries=1).get_service_quota(ServiceCode="ec2", QuotaCode="L-00000000")
    assert err.value.response["Error"]["Code"] == "NoSuchResourceException"


def test_agent_version_is_the_tagged_one(sim):
    old = sim.ids(tags={"sim:agent-version": "2.0.672.0"})[0]
    new = sim.ids()[0]
    ssm = sim.client("ssm")
    info = {i["InstanceId"]: i for i in ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [old, new]}])["InstanceInformationList"]}
    assert (info[old]["AgentVersion"], info[old]["IsLatestVersion"]) == ("2.0.672.0", False)
    assert (info[new]["AgentVersion"], info[new]["IsLatestVersion"]) == ("3.3.987.0", True)


def test_kms_describe_key_reports_a_disabled_key(sim):
    kms = sim.client("kms")
    key = kms.create_key(Description="volumes")["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    meta = kms.describe_key(KeyId=key["Arn"])["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)


def test_power_actions_are_authorised_per_instance_and_its_tags(sim):
    keep, excluded = sim.ids()[0], sim.ids(tags={"cms-patching:exclude": "true"})[0]
    ec2 = sim.client("ec2", retries=1)
    not_excluded = {"StringNotEqualsIgnoreCase": {"aws:ResourceTag/cms-patching:exclude": "true"}}
    sim.config(iam_policy=policy(READ, allow(["ec2:RebootInstances", "ec2:StopInstances", "ec2:StartInstances"],
                                             "arn:aws:ec2:*:*:instance/*", Condition=not_excluded)))
    ec2.reboot_instances(InstanceIds=[keep])
    message = denied(ec2.reboot_instances, InstanceIds=[keep, excluded])["Error"]["Message"]
    assert f"ec2:RebootInstances on resource: arn:aws:ec2:us-east-1:123456789012:instance/{excluded}" in message
    denied(ec2.stop_instances, InstanceIds=[excluded])
    assert ec2.describe_instances(InstanceIds=[excluded])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    ec2.stop_instances(InstanceIds=[keep])
    assert wait_for(lambda: ec2.describe_instances(InstanceIds=[keep])["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped",
                    timeout=10)  # StartInstances of a stopping instance is IncorrectInstanceState
    ec2.start_instances(InstanceIds=[keep])
