"""IAM enforcement of the ELBv2 and Auto Scaling writes the wave makes, with plain boto3.

Service Authorization Reference: elasticloadbalancing:RegisterTargets / DeregisterTargets act on resource type
targetgroup (arn:aws:elasticloadbalancing:${Region}:${Account}:targetgroup/${TargetGroupName}/${TargetGroupId});
autoscaling:EnterStandby / ExitStandby on autoScalingGroup
(arn:aws:autoscaling:${Region}:${Account}:autoScalingGroup:${GroupId}:autoScalingGroupName/${GroupName}). A policy
scoped to some target groups or groups allows those calls on them only.
"""
from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from awssim import fleet


def _policy(*statements):
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["elasticloadbalancing:Describe*", "autoscaling:Describe*"],
                                                    "Resource": "*"}, *statements]}


def _refused(call, **kwargs):
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def test_target_group_writes_are_authorised_on_the_target_group_arn(sim):
    tag = uuid.uuid4().hex[:8]
    allowed, other = f"ok-{tag}", f"no-{tag}"
    seeded = fleet.seed({"region": "us-east-1", "groups": [{"count": 1, "target_groups": [allowed, other]}]}, sim.url, sim.key)
    iid = seeded[0]["instance_id"]
    elb = sim.client("elbv2")
    arns = {g["TargetGroupName"]: g["TargetGroupArn"] for g in elb.describe_target_groups(Names=[allowed, other])["TargetGroups"]}
    sim.config(iam_policy=_policy({"Effect": "Allow", "Action": ["elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets"],
                                   "Resource": f"arn:aws:elasticloadbalancing:*:*:targetgroup/ok-{tag}/*"}))
    elb.deregister_targets(TargetGroupArn=arns[allowed], Targets=[{"Id": iid}])
    elb.register_targets(TargetGroupArn=arns[allowed], Targets=[{"Id": iid}])
    error = _refused(elb.deregister_targets, TargetGroupArn=arns[other], Targets=[{"Id": iid}])
    assert error["Code"] == "AccessDenied" and "elasticloadbalancing:DeregisterTargets" in error["Message"]
    assert arns[other] in error["Message"]
    sim.config(iam_policy=None)
    states = {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in elb.describe_target_health(TargetGroupArn=arns[other])["TargetHealthDescriptions"]}
    assert states[iid] != "draining"  # nothing changed by the refused call


def test_standby_is_authorised_on_the_group_arn(sim):
    tag = uuid.uuid4().hex[:8]
    allowed, other = f"ok-{tag}", f"no-{tag}"
    seeded = fleet.seed({"region": "us-east-1", "groups": [{"count": 1, "asg": allowed}, {"count": 1, "asg": other}]}, sim.url, sim.key)
    asg = sim.client("autoscaling")
    sim.config(iam_policy=_policy({"Effect": "Allow", "Action": ["autoscaling:EnterStandby", "autoscaling:ExitStandby"],
                                   "Resource": f"arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/ok-{tag}"}))
    mine = next(s["instance_id"] for s in seeded if s["name"].startswith(seeded[0]["name"][:-4]) and s is seeded[0])
    asg.enter_standby(AutoScalingGroupName=allowed, InstanceIds=[mine], ShouldDecrementDesiredCapacity=True)
    error = _refused(asg.enter_standby, AutoScalingGroupName=other, InstanceIds=[seeded[1]["instance_id"]], ShouldDecrementDesiredCapacity=True)
    assert error["Code"] == "AccessDenied" and "autoscaling:EnterStandby" in error["Message"]
    assert f":autoScalingGroupName/{other}" in error["Message"] and ":autoScalingGroup:*:" not in error["Message"]
    sim.config(iam_policy=None)
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[other])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1 and {i["LifecycleState"] for i in group["Instances"]} == {"InService"}


def test_delete_tags_is_authorised_per_instance_with_the_keys_it_removes(sim):
    """ec2:DeleteTags acts on each resource, with aws:TagKeys (Service Authorization Reference, Amazon EC2)."""
    iid = fleet.seed({"region": "us-east-1", "groups": [{"count": 1}]}, sim.url, sim.key)[0]["instance_id"]
    ec2 = sim.client("ec2")
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "cms-patching:drained", "Value": "web:80"}, {"Key": "keep", "Value": "1"}])
    sim.config(iam_policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
        {"Effect": "Allow", "Action": "ec2:DeleteTags", "Resource": "arn:aws:ec2:*:*:instance/*",
         "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": ["cms-patching:drained*", "cms-patching:standby"]}}}]})
    error = _refused(ec2.delete_tags, Resources=[iid], Tags=[{"Key": "keep"}])
    assert error["Code"] == "UnauthorizedOperation" and "ec2:DeleteTags" in error["Message"]
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": "cms-patching:drained"}])
    tags = {t["Key"] for t in ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]}
    assert "keep" in tags and "cms-patching:drained" not in tags
