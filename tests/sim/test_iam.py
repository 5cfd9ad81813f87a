"""IAM enforcement: /_sim/config iam_policy authorises every call of the key as AWS would, with plain boto3."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

from .conftest import http, wait_for

MANAGED = {"Key": "cms-patching:managed", "Value": "true"}


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*", **extra):
    return dict({"Effect": "Allow", "Action": action, "Resource": resource}, **extra)


READ = allow(["ec2:Describe*", "ssm:Describe*", "ssm:List*"])


def denied(call, *args, **kwargs):
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response


def available_image(sim, ec2, iid, tags=None):
    sim.config(image_pending_s=0)
    spec = [{"ResourceType": "image", "Tags": tags}] if tags else []
    image_id = ec2.create_image(InstanceId=iid, Name=f"img-{iid}-{len(tags or [])}", TagSpecifications=spec)["ImageId"]
    wait_for(lambda: ec2.describe_images(ImageIds=[image_id])["Images"][0]["State"] == "available")
    return image_id


def test_no_policy_means_no_enforcement_and_null_clears_it(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    sim.config(iam_policy=policy(READ))
    ec2.describe_instances(InstanceIds=[iid])
    assert denied(ec2.create_tags, Resources=[iid], Tags=[{"Key": "a", "Value": "b"}])["Error"]["Code"] == "UnauthorizedOperation"
    assert http(f"{sim.url}/_sim/config?key={sim.key}")["iam_policy"] == policy(READ)
    sim.config(iam_policy=None)
    assert "iam_policy" not in http(f"{sim.url}/_sim/config?key={sim.key}")
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "a", "Value": "b"}])


def test_invalid_policy_is_refused_with_one_line_and_numbers_still_work(sim):
    body = json.dumps({"key": sim.key, "iam_policy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "x"}]}})
    req = urllib.request.Request(f"{sim.url}/_sim/config", data=body.encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)  # pylint: disable=consider-using-with
    assert err.value.code == 400
    assert "Resource" in json.loads(err.value.read())["error"]
    assert "iam_policy" not in http(f"{sim.url}/_sim/config?key={sim.key}")  # nothing changed
    sim.config(command_s=0.5)
    assert http(f"{sim.url}/_sim/config?key={sim.key}") == {"command_s": 0.5}
    sim.config(command_s=None)  # null clears a numeric key too: back to the global value
    assert http(f"{sim.url}/_sim/config?key={sim.key}") == {}


def test_ec2_denial_is_unauthorized_operation_naming_action_and_resource(sim):
    iid = sim.ids()[0]
    sim.config(iam_policy=policy(READ))
    response = denied(sim.client("ec2").create_tags, Resources=[iid], Tags=[{"Key": "a", "Value": "b"}])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    message = response["Error"]["Message"]
    assert message.startswith("You are not authorized to perform this operation. User: arn:aws:iam::123456789012:")
    assert f"is not authorized to perform: ec2:CreateTags on resource: arn:aws:ec2:us-east-1:123456789012:instance/{iid}" in message
    assert "Encoded authorization failure message: " in message


def test_tag_on_create_needs_create_tags_with_create_action(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    create = allow("ec2:CreateImage", ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"])
    sim.config(iam_policy=policy(READ, create))
    tags = [{"ResourceType": "image", "Tags": [MANAGED]}, {"ResourceType": "snapshot", "Tags": [MANAGED]}]
    message = denied(ec2.create_image, InstanceId=iid, Name="refused", TagSpecifications=tags)["Error"]["Message"]
    assert "ec2:CreateTags on resource: arn:aws:ec2:us-east-1::image/*" in message
    ec2.create_image(InstanceId=iid, Name="untagged")  # no TagSpecifications: CreateImage alone is enough
    # ec2:CreateAction scopes tagging to creation: CreateTags on existing images stays refused.
    on_create = allow("ec2:CreateTags", ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"],
                      Condition={"StringEquals": {"ec2:CreateAction": "CreateImage"}})
    sim.config(iam_policy=policy(READ, create, on_create))
    image_id = ec2.create_image(InstanceId=iid, Name="tagged", TagSpecifications=tags)["ImageId"]
    assert denied(ec2.create_tags, Resources=[image_id], Tags=[MANAGED])["Error"]["Code"] == "UnauthorizedOperation"


def test_replace_root_volume_task_tags_need_create_tags_on_the_task(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    image_id = available_image(sim, ec2, iid)
    rollback = allow("ec2:CreateReplaceRootVolumeTask", ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*",
                                                         "arn:aws:ec2:*:*:replace-root-volume-task/*", "arn:aws:ec2:*::image/*"])
    sim.config(iam_policy=policy(READ, rollback))
    spec = [{"ResourceType": "replace-root-volume-task", "Tags": [MANAGED]}]
    message = denied(ec2.create_replace_root_volume_task, InstanceId=iid, ImageId=image_id, TagSpecifications=spec)["Error"]["Message"]
    assert "ec2:CreateTags on resource: arn:aws:ec2:us-east-1:123456789012:replace-root-volume-task/*" in message
    assert ec2.describe_replace_root_volume_tasks(Filters=[{"Name": "instance-id", "Values": [iid]}])["ReplaceRootVolumeTasks"] == []
    tag_task = allow("ec2:CreateTags", "arn:aws:ec2:*:*:replace-root-volume-task/*",
                     Condition={"StringEquals": {"ec2:CreateAction": "CreateReplaceRootVolumeTask"}})
    sim.config(iam_policy=policy(READ, rollback, tag_task))
    task = ec2.create_replace_root_volume_task(InstanceId=iid, ImageId=image_id, TagSpecifications=spec)["ReplaceRootVolumeTask"]
    assert task["Tags"] == [MANAGED]
    # Without an image: the image resource is not part of the request, the others still are.
    sim.config(iam_policy=policy(READ, tag_task, allow("ec2:CreateReplaceRootVolumeTask", "arn:aws:ec2:*:*:instance/*")))
    message = denied(ec2.create_replace_root_volume_task, InstanceId=iid, TagSpecifications=spec)["Error"]["Message"]
    assert "ec2:CreateReplaceRootVolumeTask on resource: arn:aws:ec2:us-east-1:123456789012:replace-root-volume-task/*" in message


def test_resource_tag_conditions_read_the_resources_tags(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    own = available_image(sim, ec2, iid, [MANAGED])
    foreign = available_image(sim, ec2, iid)
    managed_only = {"StringEquals": {"aws:ResourceTag/cms-patching:managed": "true"}}
    sim.config(iam_policy=policy(READ, allow("ec2:DeregisterImage", "arn:aws:ec2:*::image/*", Condition=managed_only)))
    message = denied(ec2.deregister_image, ImageId=foreign)["Error"]["Message"]
    assert f"ec2:DeregisterImage on resource: arn:aws:ec2:us-east-1::image/{foreign}" in message
    ec2.deregister_image(ImageId=own)
    assert [i["ImageId"] for i in ec2.describe_images(ImageIds=[foreign])["Images"]] == [foreign]  # refused means untouched


def test_explicit_deny_wins(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    deny = {"Effect": "Deny", "Action": "ec2:CreateTags", "Resource": "*", "Condition": {"StringEquals": {"aws:RequestTag/owner": "me"}}}
    sim.config(iam_policy=policy(allow("ec2:*"), deny))
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "owner", "Value": "you"}])
    message = denied(ec2.create_tags, Resources=[iid], Tags=[{"Key": "owner", "Value": "me"}])["Error"]["Message"]
    assert "with an explicit deny in an identity-based policy" in message


def test_ssm_denial_is_access_denied_exception(sim):
    iid = sim.ids()[0]
    ssm = sim.client("ssm")
    run = allow("ssm:SendCommand", ["arn:aws:ssm:*::document/AWS-RunShellScript", "arn:aws:ec2:*:*:instance/*"])
    locks = allow(["ssm:GetParameters", "ssm:PutParameter"], "arn:aws:ssm:*:*:parameter/cms-patching/locks/*")
    sim.config(iam_policy=policy(READ, run, locks))
    ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]})
    response = denied(ssm.send_command, InstanceIds=[iid], DocumentName="AWS-RunPowerShellScript", Parameters={"commands": ["x"]})
    assert response["Error"]["Code"] == "AccessDeniedException"
    assert "ssm:SendCommand on resource: arn:aws:ssm:us-east-1::document/AWS-RunPowerShellScript" in response["Error"]["Message"]
    ssm.put_parameter(Name=f"/cms-patching/locks/{iid}", Value="x", Type="String")
    assert denied(ssm.put_parameter, Name="/elsewhere/x", Value="x", Type="String")["Error"]["Code"] == "AccessDeniedException"
    message = denied(ssm.get_parameters, Names=[f"/cms-patching/locks/{iid}", "/elsewhere/x"])["Error"]["Message"]
    assert "arn:aws:ssm:us-east-1:123456789012:parameter/elsewhere/x" in message


def test_sts_denial_and_assumed_role_keys_follow_their_root_keys_policy(sim):
    other = "333333333333"
    sts = sim.client("sts")
    sim.config(iam_policy=policy(READ))
    response = denied(sts.assume_role, RoleArn=f"arn:aws:iam::{other}:role/cms-patching", RoleSessionName="ss")
    assert response["Error"]["Code"] == "AccessDenied" and response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert f"sts:AssumeRole on resource: arn:aws:iam::{other}:role/cms-patching" in response["Error"]["Message"]
    sts.get_caller_identity()  # needs no permission
    sim.config(iam_policy=policy(READ, allow("sts:AssumeRole", "arn:aws:iam::*:role/cms-patching")))
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{other}:role/cms-patching", RoleSessionName="night")["Credentials"]
    assumed = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                    aws_session_token=creds["SessionToken"]).client("ec2", region_name="eu-west-1", endpoint_url=sim.url)
    assumed.describe_instances()
    message = denied(assumed.create_tags, Resources=["i-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])["Error"]["Message"]
    assert f"User: arn:aws:sts::{other}:assumed-role/cms-patching/night is not authorized to perform: ec2:CreateTags" in message
    assert f"arn:aws:ec2:eu-west-1:{other}:instance/i-0123456789abcdef0" in message


def test_authorised_request_contexts_are_recorded_for_replay(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    tag = allow("ec2:CreateTags", "arn:aws:ec2:*:*:instance/*")
    sim.config(iam_policy=policy(READ, tag))
    for _repeat in range(3):
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "cms-patching:status", "Value": "patched"}])
    ec2.describe_instances(InstanceIds=[iid])
    denied(ec2.create_tags, Resources=["ami-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    authz = http(f"{sim.url}/_sim/authz?key={sim.key}")
    calls = {c["call"]: c for c in authz["calls"]}
    assert sorted(calls) == ["ec2:CreateTags", "ec2:DescribeInstances"]  # identical contexts are kept once
    check = calls["ec2:CreateTags"]["checks"][0]
    assert check["resource"] == f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"
    assert check["keys"]["aws:RequestTag/cms-patching:status"] == "patched" and check["keys"]["aws:ResourceTag/Name"]
    assert [d["refused"]["resource"] for d in authz["denied"]] == ["arn:aws:ec2:us-east-1::image/ami-0123456789abcdef0"]
    http(f"{sim.url}/_sim/authz/reset?key={sim.key}", "POST", {})
    assert http(f"{sim.url}/_sim/authz?key={sim.key}") == {"calls": [], "denied": []}


def test_s3_denial_is_access_denied(sim):
    s3 = sim.client("s3")
    bucket = f"iam-{sim.key.lower()}"
    s3.create_bucket(Bucket=bucket)
    sim.config(iam_policy=policy(allow(["s3:ListBucket", "s3:PutObject"], [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"])))
    s3.put_object(Bucket=bucket, Key="a/report.json", Body=b"{}")
    response = denied(s3.put_object, Bucket=bucket, Key="b", Body=b"{}", ACL="private")
    assert response["Error"]["Code"] == "AccessDenied"
    assert f"s3:PutObjectAcl on resource: arn:aws:s3:::{bucket}/b" in response["Error"]["Message"]
    assert denied(s3.get_object, Bucket=bucket, Key="a/report.json")["Error"]["Code"] == "AccessDenied"


def test_deregister_with_snapshots_skips_a_snapshot_the_caller_may_not_delete(sim):
    # EC2 API Reference, DeregisterImage: DeleteSnapshotResults ReturnCode "missing-permissions"; the image still goes.
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    image_id = available_image(sim, ec2, iid, [MANAGED])
    snapshots = [m["Ebs"]["SnapshotId"] for m in ec2.describe_images(ImageIds=[image_id])["Images"][0]["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshots
    sim.config(iam_policy=policy(READ, allow("ec2:DeregisterImage", "arn:aws:ec2:*::image/*")))
    results = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)["DeleteSnapshotResults"]
    assert {r["SnapshotId"]: r["ReturnCode"] for r in results} == {s: "missing-permissions" for s in snapshots}
    assert not [i for i in ec2.describe_images(ImageIds=[image_id])["Images"] if i["State"] != "deregistered"]
    assert {s["SnapshotId"] for s in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]} == set(snapshots)
