"""The simulator's IAM evaluator and request contexts, as pure functions (no server)."""

import json

import pytest

from awssim import iam

POLICY = {"Version": "2012-10-17", "Statement": []}


def policy(*statements):
    return dict(POLICY, Statement=list(statements))


def allow(action, resource="*", **extra):
    return dict({"Effect": "Allow", "Action": action, "Resource": resource}, **extra)


def check(action, resource="*", **keys):
    return {"action": action, "resource": resource, "keys": keys}


def decision(pol, chk):
    return iam.evaluate(pol, chk)[0]


def test_default_deny_allow_and_explicit_deny_wins():
    assert decision(policy(), check("ec2:DescribeImages")) == iam.IMPLICIT_DENY
    pol = policy(allow("ec2:Describe*"))
    assert decision(pol, check("ec2:DescribeImages")) == iam.ALLOW
    assert decision(pol, check("ec2:CreateImage")) == iam.IMPLICIT_DENY
    pol["Statement"].append({"Effect": "Deny", "Action": "ec2:DescribeImages", "Resource": "*"})
    assert decision(pol, check("ec2:DescribeImages")) == iam.DENY
    assert decision(pol, check("ec2:DescribeInstances")) == iam.ALLOW


def test_action_wildcards_are_case_insensitive_and_notaction_inverts():
    assert iam.action_matches("EC2:describe*", "ec2:DescribeImages")
    assert iam.action_matches("ssm:Get?arameters", "ssm:GetParameters")
    assert not iam.action_matches("ssm:Get?arameters", "ssm:GetParameter")
    pol = policy({"Effect": "Allow", "NotAction": "ec2:Delete*", "Resource": "*"})
    assert decision(pol, check("ec2:CreateTags")) == iam.ALLOW
    assert decision(pol, check("ec2:DeleteSnapshot")) == iam.IMPLICIT_DENY


def test_resource_arns_match_per_segment():
    assert iam.arn_matches("arn:aws:ec2:*::image/*", "arn:aws:ec2:us-east-1::image/ami-12345678")
    # an image ARN has no account: a pattern with an account segment of '*' still matches the empty segment
    assert iam.arn_matches("arn:aws:ec2:*:*:image/*", "arn:aws:ec2:us-east-1::image/ami-12345678")
    assert not iam.arn_matches("arn:aws:ec2:*::image/*", "arn:aws:ec2:us-east-1:123456789012:instance/i-12345678")
    assert not iam.arn_matches("arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1")
    assert iam.arn_matches("arn:aws:ssm:*:*:parameter/cms-patching/locks/*", "arn:aws:ssm:eu-west-1:1:parameter/cms-patching/locks/i-1")
    assert not iam.arn_matches("arn:aws:ssm:*:*:parameter/cms-patching/locks/*", "arn:aws:ssm:eu-west-1:1:parameter/other/i-1")
    assert not iam.arn_matches("arn:aws:ec2:us-?ast-1:*:instance/*", "arn:aws:ec2:eu-west-1:1:instance/i-1")
    assert iam.arn_matches("*", "arn:aws:s3:::bucket")
    # a '*' inside a segment does not cross a colon; one that ends a segment may
    assert not iam.arn_matches("arn:aws:ec2:us*1:1:instance/*", "arn:aws:ec2:us-east:x1:1:instance/i")
    pol = policy({"Effect": "Allow", "Action": "ec2:DeleteSnapshot", "NotResource": "arn:aws:ec2:*::snapshot/snap-keep"})
    assert decision(pol, check("ec2:DeleteSnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-other")) == iam.ALLOW
    assert decision(pol, check("ec2:DeleteSnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-keep")) == iam.IMPLICIT_DENY


def test_string_conditions_and_missing_keys():
    managed = allow("ec2:DeregisterImage", Condition={"StringEquals": {"aws:ResourceTag/cms-patching:managed": "true"}})
    pol = policy(managed)
    image = "arn:aws:ec2:us-east-1::image/ami-1"
    assert decision(pol, check("ec2:DeregisterImage", image, **{"aws:ResourceTag/cms-patching:managed": "true"})) == iam.ALLOW
    assert decision(pol, check("ec2:DeregisterImage", image, **{"aws:ResourceTag/cms-patching:managed": "True"})) == iam.IMPLICIT_DENY
    assert decision(pol, check("ec2:DeregisterImage", image)) == iam.IMPLICIT_DENY  # untagged: key missing
    # condition key names are case-insensitive, values are not
    assert decision(pol, check("ec2:DeregisterImage", image, **{"AWS:resourcetag/cms-patching:managed": "true"})) == iam.ALLOW

    not_prod = policy(allow("ec2:CreateTags", Condition={"StringNotEquals": {"aws:ResourceTag/env": "prod"}}))
    assert decision(not_prod, check("ec2:CreateTags", **{"aws:ResourceTag/env": "dev"})) == iam.ALLOW
    assert decision(not_prod, check("ec2:CreateTags", **{"aws:ResourceTag/env": "prod"})) == iam.IMPLICIT_DENY
    assert decision(not_prod, check("ec2:CreateTags")) == iam.ALLOW  # negated operator: a missing key matches

    like = policy(allow("ssm:SendCommand", Condition={"StringLike": {"ssm:resourceTag/Name": ["web-*", "db-?"]}}))
    assert decision(like, check("ssm:SendCommand", **{"ssm:resourceTag/Name": "web-001"})) == iam.ALLOW
    assert decision(like, check("ssm:SendCommand", **{"ssm:resourceTag/Name": "db-1"})) == iam.ALLOW
    assert decision(like, check("ssm:SendCommand", **{"ssm:resourceTag/Name": "db-12"})) == iam.IMPLICIT_DENY

    if_exists = policy(allow("ec2:CreateTags", Condition={"StringEqualsIfExists": {"aws:ResourceTag/env": "dev"}}))
    assert decision(if_exists, check("ec2:CreateTags")) == iam.ALLOW
    assert decision(if_exists, check("ec2:CreateTags", **{"aws:ResourceTag/env": "prod"})) == iam.IMPLICIT_DENY


def test_arn_null_bool_and_multivalued_conditions():
    role = policy(allow("sts:AssumeRole", Condition={"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/cms-*"}}))
    assert decision(role, check("sts:AssumeRole", **{"aws:PrincipalArn": "arn:aws:iam::1:role/cms-patching"})) == iam.ALLOW
    assert decision(role, check("sts:AssumeRole", **{"aws:PrincipalArn": "arn:aws:iam::1:role/other"})) == iam.IMPLICIT_DENY

    untagged = policy(allow("ec2:CreateTags", Condition={"Null": {"aws:ResourceTag/owner": "true"}}))
    assert decision(untagged, check("ec2:CreateTags")) == iam.ALLOW
    assert decision(untagged, check("ec2:CreateTags", **{"aws:ResourceTag/owner": "x"})) == iam.IMPLICIT_DENY

    grant = policy(allow("kms:CreateGrant", Condition={"Bool": {"kms:GrantIsForAWSResource": True}}))
    assert decision(grant, check("kms:CreateGrant", **{"kms:GrantIsForAWSResource": "true"})) == iam.ALLOW
    assert decision(grant, check("kms:CreateGrant", **{"kms:GrantIsForAWSResource": "false"})) == iam.IMPLICIT_DENY
    assert decision(grant, check("kms:CreateGrant")) == iam.IMPLICIT_DENY

    only = policy(allow("ec2:CreateTags", Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}))
    assert decision(only, check("ec2:CreateTags", **{"aws:TagKeys": ["a"]})) == iam.ALLOW
    assert decision(only, check("ec2:CreateTags", **{"aws:TagKeys": ["a", "c"]})) == iam.IMPLICIT_DENY
    assert decision(only, check("ec2:CreateTags")) == iam.ALLOW  # ForAllValues on a missing key is true
    any_of = policy(allow("ec2:CreateTags", Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}))
    assert decision(any_of, check("ec2:CreateTags", **{"aws:TagKeys": ["c", "a"]})) == iam.ALLOW
    assert decision(any_of, check("ec2:CreateTags", **{"aws:TagKeys": ["c"]})) == iam.IMPLICIT_DENY
    assert decision(any_of, check("ec2:CreateTags")) == iam.IMPLICIT_DENY

    both = policy(allow("ec2:CreateTags", Condition={"StringEquals": {"ec2:CreateAction": "CreateImage", "aws:RequestTag/a": "1"}}))
    assert decision(both, check("ec2:CreateTags", **{"ec2:CreateAction": "CreateImage", "aws:RequestTag/a": "1"})) == iam.ALLOW
    assert decision(both, check("ec2:CreateTags", **{"ec2:CreateAction": "CreateImage"})) == iam.IMPLICIT_DENY  # keys are ANDed


def test_a_call_needs_every_check_and_get_caller_identity_needs_none():
    pol = policy(allow("ec2:CreateImage"))
    call = {"call": "ec2:CreateImage", "checks": [check("ec2:CreateImage", "a"), check("ec2:CreateTags", "b")]}
    result, refused = iam.authorize_call(pol, call)
    assert result == iam.IMPLICIT_DENY and refused["action"] == "ec2:CreateTags"
    deny_all = policy({"Effect": "Deny", "Action": "*", "Resource": "*"})
    assert iam.authorize_call(deny_all, {"call": "sts:GetCallerIdentity", "checks": [check("sts:GetCallerIdentity")]})[0] == iam.ALLOW


@pytest.mark.parametrize("bad, message", [
    ("{", "not JSON"),
    ({"Statement": []}, "Version"),
    (dict(POLICY, Statement=[{"Effect": "Maybe", "Action": "a", "Resource": "*"}]), "Effect"),
    (dict(POLICY, Statement=[{"Effect": "Allow", "Resource": "*"}]), "Action"),
    (dict(POLICY, Statement=[{"Effect": "Allow", "Action": "a"}]), "Resource"),
    (dict(POLICY, Statement=[{"Effect": "Allow", "Action": "a", "Resource": "*", "Condition": {"StringSorta": {"k": "v"}}}]), "StringSorta"),
    (dict(POLICY, Statement=[{"Effect": "Allow", "Action": "a", "Resource": "*", "Conditions": {}}]), "Conditions"),
])
def test_invalid_policies_are_refused_with_one_line(bad, message):
    with pytest.raises(ValueError, match=message) as exc:
        iam.validate_policy(bad)
    assert "\n" not in str(exc.value)


class Stub(iam.Resolver):
    def __init__(self, tags=None, snapshots=None):
        self._tags = tags or {}
        self._snaps = snapshots or {}

    def tags(self, rtype, rid):
        return self._tags.get(rid)

    def image_snapshots(self, image_id):
        return self._snaps.get(image_id, [])


def test_create_image_context_includes_tag_on_create_checks():
    params = {"Action": "CreateImage", "InstanceId": "i-0123456789abcdef0", "Name": "n",
              "TagSpecification.1.ResourceType": "image", "TagSpecification.1.Tag.1.Key": "cms-patching:managed",
              "TagSpecification.1.Tag.1.Value": "true", "TagSpecification.2.ResourceType": "snapshot",
              "TagSpecification.2.Tag.1.Key": "cms-patching:managed", "TagSpecification.2.Tag.1.Value": "true"}
    call = iam.build_call("ec2", "CreateImage", params, "us-east-1", "123456789012", Stub({"i-0123456789abcdef0": {"Name": "web"}}))
    pairs = [(c["action"], c["resource"]) for c in call["checks"]]
    assert pairs == [
        ("ec2:CreateImage", "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"),
        ("ec2:CreateImage", "arn:aws:ec2:us-east-1::image/*"),
        ("ec2:CreateImage", "arn:aws:ec2:us-east-1::snapshot/*"),
        ("ec2:CreateTags", "arn:aws:ec2:us-east-1::image/*"),
        ("ec2:CreateTags", "arn:aws:ec2:us-east-1::snapshot/*"),
    ]
    assert call["checks"][0]["keys"]["aws:ResourceTag/Name"] == "web"
    tag_check = call["checks"][3]["keys"]
    assert tag_check["ec2:CreateAction"] == "CreateImage" and tag_check["aws:RequestTag/cms-patching:managed"] == "true"
    assert tag_check["aws:TagKeys"] == ["cms-patching:managed"]
    json.dumps(call)  # recorded calls travel as JSON


def test_replace_root_volume_task_tagging_needs_create_tags_on_the_task():
    params = {"InstanceId": "i-0123456789abcdef0", "ImageId": "ami-0123456789abcdef0",
              "TagSpecification.1.ResourceType": "replace-root-volume-task",
              "TagSpecification.1.Tag.1.Key": "cms-patching:managed", "TagSpecification.1.Tag.1.Value": "true"}
    call = iam.build_call("ec2", "CreateReplaceRootVolumeTask", params, "eu-west-1", "222222222222", Stub())
    resources = {c["resource"] for c in call["checks"] if c["action"] == "ec2:CreateReplaceRootVolumeTask"}
    assert resources == {"arn:aws:ec2:eu-west-1:222222222222:instance/i-0123456789abcdef0",
                         "arn:aws:ec2:eu-west-1:222222222222:replace-root-volume-task/*",
                         "arn:aws:ec2:eu-west-1:222222222222:volume/*", "arn:aws:ec2:eu-west-1::image/ami-0123456789abcdef0"}
    tagging = [c for c in call["checks"] if c["action"] == "ec2:CreateTags"]
    assert tagging == [{"action": "ec2:CreateTags", "resource": "arn:aws:ec2:eu-west-1:222222222222:replace-root-volume-task/*",
                        "keys": {"aws:RequestedRegion": "eu-west-1", "ec2:Region": "eu-west-1", "ec2:CreateAction": "CreateReplaceRootVolumeTask",
                                 "aws:RequestTag/cms-patching:managed": "true", "aws:TagKeys": ["cms-patching:managed"]}}]
    # The policy before issue 15 allowed the task but not tagging it: every rollback was refused.
    old = policy(allow("ec2:CreateReplaceRootVolumeTask", ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*",
                                                           "arn:aws:ec2:*:*:replace-root-volume-task/*", "arn:aws:ec2:*::image/*"]))
    result, refused = iam.authorize_call(old, call)
    assert result == iam.IMPLICIT_DENY and refused["action"] == "ec2:CreateTags"


def test_create_tags_on_existing_resources_and_deletions_read_resource_tags():
    stub = Stub({"ami-1": {"cms-patching:managed": "true"}, "snap-1": {}}, {"ami-1": ["snap-1", "snap-2"]})
    call = iam.build_call("ec2", "CreateTags", {"ResourceId.1": "ami-1", "ResourceId.2": "snap-1", "ResourceId.3": "i-1",
                                                "Tag.1.Key": "cms-patching:verified", "Tag.1.Value": "true"}, "us-east-1", "1", stub)
    assert [c["resource"] for c in call["checks"]] == ["arn:aws:ec2:us-east-1::image/ami-1", "arn:aws:ec2:us-east-1::snapshot/snap-1",
                                                       "arn:aws:ec2:us-east-1:1:instance/i-1"]
    assert call["checks"][0]["keys"]["aws:ResourceTag/cms-patching:managed"] == "true"
    assert "ec2:CreateAction" not in call["checks"][0]["keys"]
    assert call["checks"][1]["keys"]["aws:RequestTag/cms-patching:verified"] == "true"
    dereg = iam.build_call("ec2", "DeregisterImage", {"ImageId": "ami-1", "DeleteAssociatedSnapshots": "true"}, "us-east-1", "1", stub)
    assert [(c["action"], c["resource"]) for c in dereg["checks"]] == [("ec2:DeregisterImage", "arn:aws:ec2:us-east-1::image/ami-1")]
    # Snapshots deleted with the image are checked one by one; a refused one is skipped ("missing-permissions"), the
    # image is deregistered all the same (DeregisterImage DeleteSnapshotResults).
    assert [(c["action"], c["resource"]) for c in dereg["partial"]] == [
        ("ec2:DeleteSnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-1"), ("ec2:DeleteSnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-2")]
    managed = policy(allow(["ec2:DeregisterImage", "ec2:DeleteSnapshot"], Condition={"StringEquals": {"aws:ResourceTag/cms-patching:managed": "true"}}))
    assert iam.authorize_call(managed, dereg)[0] == iam.ALLOW
    assert [c["resource"] for c in iam.refused_partial(managed, dereg)] == ["arn:aws:ec2:us-east-1::snapshot/snap-1",
                                                                            "arn:aws:ec2:us-east-1::snapshot/snap-2"]
    assert "partial" not in iam.build_call("ec2", "DeregisterImage", {"ImageId": "ami-1"}, "us-east-1", "1", stub)
    assert iam.build_call("ec2", "DescribeImages", {}, "us-east-1", "1", stub)["checks"][0]["resource"] == "*"


def test_ssm_sts_and_s3_contexts():
    stub = Stub({"i-1": {"Patch Group": "web"}})
    send = iam.build_call("ssm", "SendCommand", {"DocumentName": "AWS-RunPatchBaseline", "InstanceIds": ["i-1", "mi-2"]}, "us-east-1", "1", stub)
    assert [c["resource"] for c in send["checks"]] == ["arn:aws:ssm:us-east-1::document/AWS-RunPatchBaseline",
                                                       "arn:aws:ec2:us-east-1:1:instance/i-1", "arn:aws:ssm:us-east-1:1:managed-instance/mi-2"]
    assert send["checks"][1]["keys"]["ssm:resourceTag/Patch Group"] == "web"
    own_doc = iam.build_call("ssm", "SendCommand", {"DocumentName": "MyDoc"}, "us-east-1", "1", stub)
    assert own_doc["checks"][0]["resource"] == "arn:aws:ssm:us-east-1:1:document/MyDoc"
    params = iam.build_call("ssm", "GetParameters", {"Names": ["/cms-patching/locks/i-1"]}, "us-east-1", "1", stub)
    assert params["checks"][0]["resource"] == "arn:aws:ssm:us-east-1:1:parameter/cms-patching/locks/i-1"
    put = iam.build_call("ssm", "PutParameter", {"Name": "/a/b", "Overwrite": False}, "us-east-1", "1", stub)
    assert put["checks"][0]["keys"]["ssm:Overwrite"] == "false"
    assert iam.build_call("ssm", "ListCommands", {}, "us-east-1", "1", stub)["checks"][0]["resource"] == "*"
    role = iam.build_call("sts", "AssumeRole", {"RoleArn": "arn:aws:iam::2:role/cms-patching", "RoleSessionName": "s"}, "us-east-1", "1", stub)
    assert role["checks"][0]["resource"] == "arn:aws:iam::2:role/cms-patching"
    upload = iam.build_call("s3", "PutObject", {}, "us-east-1", "1", stub, path="/bucket/run/report.json", headers={"X-Amz-Acl": "private"})
    assert [(c["action"], c["resource"]) for c in upload["checks"]] == [
        ("s3:PutObject", "arn:aws:s3:::bucket/run/report.json"), ("s3:PutObjectAcl", "arn:aws:s3:::bucket/run/report.json")]
    assert iam.build_call("s3", "ListBuckets", {}, "us-east-1", "1", stub, path="/")["checks"][0]["action"] == "s3:ListAllMyBuckets"
    assert iam.build_call("s3", "HeadBucket", {}, "us-east-1", "1", stub, path="/bucket")["checks"][0]["resource"] == "arn:aws:s3:::bucket"


def test_without_statement_removes_exactly_one():
    pol = policy(allow("a:A"), allow("b:B"), allow("c:C"))
    assert [s["Action"] for s in iam.without_statement(pol, 1)["Statement"]] == ["a:A", "c:C"]
    assert len(pol["Statement"]) == 3
