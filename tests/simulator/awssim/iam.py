"""IAM authorisation: a policy evaluator and the request context AWS builds for each call.

Two halves:
- Pure functions (`validate_policy`, `evaluate`, `authorize_call`): an identity-based policy against a call's request
  context. No server, no moto; tests/sim/test_iam_eval.py tests them on their own.
- The simulator side (`check_request`): while `/_sim/config` holds an `iam_policy` for the caller's root key, every
  request is turned into its request context (action, resource ARNs by resource type, condition keys read from moto's
  backends), authorised, recorded when allowed (GET /_sim/authz?key=... returns them for replay) and refused with the
  service's own error shape when denied.

moto has its own access control (moto/iam/access_control.py, `IAMRequest`), but it matches actions only: its module
docstring lists Resource and Condition as not supported, it has no request context (no aws:ResourceTag, aws:RequestTag,
ec2:CreateAction), and a statement whose condition fails counts there as an explicit deny. Hence this module.

A call is a dict {"call": "ec2:CreateImage", "checks": [check, ...]}; a check is {"action", "resource", "keys"}. AWS
authorises one action on each resource the call touches, each with its own condition keys, and the call succeeds only
if every check is allowed (IAM user guide, "Policy evaluation logic": the request context). Tags given at creation
add checks of ec2:CreateTags on the new resources with ec2:CreateAction (EC2 user guide, "Grant permission to tag
resources during creation"). A call may also carry "partial" checks: a refused one skips its resource instead of
failing the call (DeregisterImage's DeleteAssociatedSnapshots reports such a snapshot "missing-permissions").
"""
from __future__ import annotations

import base64
import functools
import io
import json
import re
import threading
import uuid
from urllib.parse import parse_qs, unquote

# ---------------------------------------------------------------------------------------------------------------------
# The evaluator (pure)
# ---------------------------------------------------------------------------------------------------------------------

ALLOW, DENY, IMPLICIT_DENY = "Allow", "Deny", "ImplicitDeny"
# IAM user guide, "IAM JSON policy elements: Condition operators".
_BASE_OPERATORS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike",
    "StringNotLike", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike", "Bool", "Null",
    "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan",
    "NumericGreaterThanEquals",
}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike", "NumericNotEquals"}
_STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal", "NotPrincipal"}
# Actions that need no permission: "No permissions are required to perform this operation" (STS API reference,
# GetCallerIdentity); even an explicit deny does not block it.
ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity"})


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _split_operator(name: str) -> tuple[str | None, str, bool]:
    """'ForAnyValue:StringLikeIfExists' -> ('ForAnyValue', 'StringLike', True)."""
    qualifier = None
    if ":" in name:
        qualifier, _sep, name = name.partition(":")
        if qualifier not in ("ForAnyValue", "ForAllValues"):
            raise ValueError(f"unknown condition set operator {qualifier!r}")
    if_exists = name.endswith("IfExists") and name != "IfExists"
    base = name[: -len("IfExists")] if if_exists else name
    if base not in _BASE_OPERATORS:
        raise ValueError(f"unknown condition operator {name!r}")
    return qualifier, base, if_exists


def validate_policy(policy) -> dict:
    """A policy document as IAM would accept it (the parts this evaluator reads), or ValueError with one clear line."""
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except ValueError as exc:
            raise ValueError(f"iam_policy is not JSON: {exc}") from None
    if not isinstance(policy, dict):
        raise ValueError("iam_policy must be a policy document (a JSON object with Version and Statement)")
    if policy.get("Version") not in ("2012-10-17", "2008-10-17"):
        raise ValueError("iam_policy Version must be 2012-10-17 (or 2008-10-17)")
    statements = _as_list(policy.get("Statement"))
    if not statements or not all(isinstance(s, dict) for s in statements):
        raise ValueError("iam_policy Statement must be one statement object or a list of them")
    for pos, stmt in enumerate(statements, 1):
        where = f"iam_policy statement {stmt.get('Sid', pos)}"
        unknown = set(stmt) - _STATEMENT_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown element(s) {sorted(unknown)}")
        if stmt.get("Effect") not in (ALLOW, DENY):
            raise ValueError(f"{where}: Effect must be Allow or Deny")
        if ("Action" in stmt) == ("NotAction" in stmt):
            raise ValueError(f"{where}: exactly one of Action and NotAction is required")
        if ("Resource" in stmt) == ("NotResource" in stmt):
            raise ValueError(f"{where}: exactly one of Resource and NotResource is required")
        for element in ("Action", "NotAction", "Resource", "NotResource"):
            if element in stmt and not all(isinstance(v, str) and v for v in _as_list(stmt[element])):
                raise ValueError(f"{where}: {element} must be a string or a list of strings")
        condition = stmt.get("Condition", {})
        if not isinstance(condition, dict):
            raise ValueError(f"{where}: Condition must be an object")
        for operator, block in condition.items():
            _split_operator(operator)
            if not isinstance(block, dict):
                raise ValueError(f"{where}: Condition {operator} must map condition keys to values")
    return policy


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool = False) -> re.Pattern:
    """IAM string wildcards: * any run of characters, ? any one character; the whole value must match."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.S | (re.I if ignore_case else 0))


def action_matches(pattern: str, action: str) -> bool:
    # Action names are not case-sensitive (IAM user guide, "IAM JSON policy elements: Action").
    return bool(_glob(pattern, ignore_case=True).fullmatch(action))


def arn_matches(pattern: str, arn: str) -> bool:
    """IAM user guide, "IAM JSON policy elements: Resource": * and ? work within an ARN segment (the parts between
    colons); a * that is the last character of a segment can expand beyond the colon boundaries. Case-sensitive."""
    return pattern == "*" or bool(_arn_regex(pattern).fullmatch(arn))


@functools.lru_cache(maxsize=4096)
def _arn_regex(pattern: str) -> re.Pattern:
    out = []
    for pos, c in enumerate(pattern):
        if c == "*":
            last_of_segment = pos + 1 == len(pattern) or pattern[pos + 1] == ":"
            out.append(".*" if last_of_segment else "[^:]*")
        elif c == "?":
            out.append("[^:]")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.S)


def _lookup_key(keys: dict, name: str):
    """Condition key names are not case-sensitive (IAM user guide, "IAM JSON policy elements: Condition")."""
    lowered = name.lower()
    for key, value in keys.items():
        if key.lower() == lowered:
            return value
    return None


def _value_matches(base: str, policy_value, request_value) -> bool:
    pv, rv = str(policy_value), str(request_value)
    if base in ("StringEquals", "StringNotEquals"):
        return pv == rv
    if base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return pv.lower() == rv.lower()
    if base in ("StringLike", "StringNotLike"):
        return bool(_glob(pv).fullmatch(rv))
    if base in ("ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike"):
        return arn_matches(pv, rv)
    if base == "Bool":
        return pv.lower() == rv.lower()
    try:
        left, right = float(rv), float(pv)
    except ValueError:
        return False
    return {"NumericEquals": left == right, "NumericNotEquals": left == right, "NumericLessThan": left < right,
            "NumericLessThanEquals": left <= right, "NumericGreaterThan": left > right,
            "NumericGreaterThanEquals": left >= right}[base]


def condition_key_matches(operator: str, key: str, policy_values, keys: dict) -> bool:
    """One key of one condition operator (IAM user guide, "Condition operators" and "Single-valued vs. multivalued
    context keys"): the policy's values are ORed; a missing key is false, except for the negated operators (true),
    ...IfExists (true), Null, and ForAllValues (true on a missing or empty key)."""
    qualifier, base, if_exists = _split_operator(operator)
    request = _lookup_key(keys, key)
    policy_values = _as_list(policy_values)
    if base == "Null":
        present = request is not None and request != []
        return any(str(v).lower() == ("false" if present else "true") for v in policy_values)
    if request is None or request == []:
        if qualifier == "ForAllValues" or if_exists:
            return True
        if qualifier == "ForAnyValue":
            return False
        return base in _NEGATED
    values = _as_list(request)
    negated = base in _NEGATED

    def one(value) -> bool:
        hit = any(_value_matches(base, pv, value) for pv in policy_values)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in values)
    # ForAnyValue, and (leniently) a single-valued operator given a multivalued key: any value that matches.
    return any(one(v) for v in values)


def conditions_match(condition: dict | None, keys: dict) -> bool:
    # Operators are ANDed, and so are the keys within one operator.
    return all(condition_key_matches(op, key, values, keys)
               for op, block in (condition or {}).items() for key, values in block.items())


def statement_applies(stmt: dict, check: dict) -> bool:
    action, resource = check["action"], check["resource"]
    if "Action" in stmt:
        if not any(action_matches(p, action) for p in _as_list(stmt["Action"])):
            return False
    elif any(action_matches(p, action) for p in _as_list(stmt["NotAction"])):
        return False
    if "Resource" in stmt:
        if not any(arn_matches(p, resource) for p in _as_list(stmt["Resource"])):
            return False
    elif any(arn_matches(p, resource) for p in _as_list(stmt["NotResource"])):
        return False
    return conditions_match(stmt.get("Condition"), check.get("keys") or {})


def evaluate(policy: dict, check: dict) -> tuple[str, str | None]:
    """(decision, Sid or index of the deciding statement): an explicit deny wins, then any allow; else denied by default
    (IAM user guide, "Policy evaluation logic")."""
    allowed_by = None
    for pos, stmt in enumerate(_as_list(policy.get("Statement"))):
        if statement_applies(stmt, check):
            sid = stmt.get("Sid", str(pos))
            if stmt["Effect"] == DENY:
                return DENY, sid
            allowed_by = allowed_by or sid
    return (ALLOW, allowed_by) if allowed_by else (IMPLICIT_DENY, None)


def authorize_call(policy: dict, call: dict) -> tuple[str, dict | None]:
    """(ALLOW, None) or (DENY/IMPLICIT_DENY, the first refused check) for a whole call."""
    if call["call"] in ALWAYS_ALLOWED:
        return ALLOW, None
    for check in call["checks"]:
        decision, _sid = evaluate(policy, check)
        if decision != ALLOW:
            return decision, check
    return ALLOW, None


def without_statement(policy: dict, index: int) -> dict:
    statements = _as_list(policy["Statement"])
    return dict(policy, Statement=statements[:index] + statements[index + 1:])


# ---------------------------------------------------------------------------------------------------------------------
# Request contexts (pure: the caller passes a resolver that reads tags and relations from the backends)
# ---------------------------------------------------------------------------------------------------------------------

# EC2 ARNs by id prefix; images and snapshots have no account in their ARN (Service Authorization Reference, "Resource
# types defined by Amazon EC2").
_EC2_TYPES = {"i": "instance", "ami": "image", "snap": "snapshot", "vol": "volume", "replacevol": "replace-root-volume-task"}
_NO_ACCOUNT = {"image", "snapshot"}


def ec2_arn(region: str, account: str, rtype: str, rid: str) -> str:
    return f"arn:aws:ec2:{region}:{'' if rtype in _NO_ACCOUNT else account}:{rtype}/{rid}"


def ec2_type_of(resource_id: str) -> str | None:
    return _EC2_TYPES.get(resource_id.rpartition("-")[0] if resource_id.startswith("replacevol-") else resource_id.split("-")[0])


def _members(params: dict, name: str) -> list[str]:
    """EC2 query lists: Name.1, Name.2, ... in order."""
    found = sorted((int(k[len(name) + 1:]), v) for k, v in params.items()
                   if k.startswith(name + ".") and k[len(name) + 1:].isdigit())
    return [v for _n, v in found]


def ec2_tag_specs(params: dict) -> dict[str, dict[str, str]]:
    """TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value -> {resource type: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for n in sorted({k.split(".")[1] for k in params if k.startswith("TagSpecification.") and k.split(".")[1].isdigit()}, key=int):
        prefix = f"TagSpecification.{n}."
        rtype = params.get(prefix + "ResourceType", "")
        tags = out.setdefault(rtype, {})
        for m in sorted({k.split(".")[3] for k in params if k.startswith(prefix + "Tag.")}, key=int):
            tags[params.get(f"{prefix}Tag.{m}.Key", "")] = params.get(f"{prefix}Tag.{m}.Value", "")
    return out


def request_tag_keys(tags: dict[str, str]) -> dict:
    keys = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        keys["aws:TagKeys"] = list(tags)
    return keys


def resource_tag_keys(tags: dict[str, str] | None, prefixes=("aws",)) -> dict:
    return {f"{p}:ResourceTag/{k}" if p == "aws" else f"{p}:resourceTag/{k}": v
            for k, v in (tags or {}).items() for p in prefixes}


class Resolver:
    """What the context builders need from the backends; the simulator passes MotoResolver, tests a stub."""

    def tags(self, rtype: str, rid: str) -> dict[str, str] | None:  # pylint: disable=unused-argument
        return None

    def image_snapshots(self, image_id: str) -> list[str]:  # pylint: disable=unused-argument
        return []


def _check(action: str, resource: str, base: dict, extra: dict | None = None) -> dict:
    return {"action": action, "resource": resource, "keys": dict(base, **(extra or {}))}


def ec2_checks(action: str, params: dict, region: str, account: str, resolver: Resolver) -> list[dict]:
    """Checks for one EC2 Query call (Service Authorization Reference, "Actions defined by Amazon EC2")."""
    name = f"ec2:{action}"
    base = {"aws:RequestedRegion": region, "ec2:Region": region}

    def existing(rtype: str, rid: str) -> dict:
        return _check(name, ec2_arn(region, account, rtype, rid), base, resource_tag_keys(resolver.tags(rtype, rid), ("aws", "ec2")))

    def new(rtype: str, tags: dict) -> dict:
        # A resource being created has no id yet: its ARN ends in '*' (as in EC2's encoded authorization messages).
        return _check(name, ec2_arn(region, account, rtype, "*"), base, request_tag_keys(tags))

    specs = ec2_tag_specs(params)
    if action == "CreateImage":
        checks = [existing("instance", params.get("InstanceId", "")), new("image", specs.get("image", {})),
                  new("snapshot", specs.get("snapshot", {}))]
    elif action == "CreateReplaceRootVolumeTask":
        checks = [existing("instance", params.get("InstanceId", "")),
                  new("replace-root-volume-task", specs.get("replace-root-volume-task", {})), new("volume", {})]
        if params.get("ImageId"):
            checks.append(existing("image", params["ImageId"]))
        if params.get("SnapshotId"):
            checks.append(existing("snapshot", params["SnapshotId"]))
    elif action == "CreateTags":
        tags = dict(zip(_members_sub(params, "Tag", "Key"), _members_sub(params, "Tag", "Value", fill=True)))
        checks = []
        for rid in _members(params, "ResourceId"):
            rtype = ec2_type_of(rid) or "unknown"
            check = existing(rtype, rid)
            check["keys"].update(request_tag_keys(tags))
            checks.append(check)
    elif action == "DeleteTags":
        # Service Authorization Reference, "Actions defined by Amazon EC2": DeleteTags acts on each tagged resource, with
        # aws:TagKeys (the keys the request removes; absent when it names none, i.e. removes every tag) and the
        # resource's own aws:ResourceTag keys.
        keys = _members_sub(params, "Tag", "Key")
        checks = []
        for rid in _members(params, "ResourceId"):
            check = existing(ec2_type_of(rid) or "unknown", rid)
            if keys:
                check["keys"]["aws:TagKeys"] = keys
            checks.append(check)
    elif action in ("RebootInstances", "StopInstances", "StartInstances"):
        # Service Authorization Reference, "Actions defined by Amazon EC2": these act on resource type instance, one
        # check per instance, with aws:ResourceTag/${TagKey} (a policy can scope them by the instances' tags).
        checks = [existing("instance", iid) for iid in _members(params, "InstanceId")]
    elif action == "DeregisterImage":
        checks = [existing("image", params.get("ImageId", ""))]
    elif action == "DeleteSnapshot":
        checks = [existing("snapshot", params.get("SnapshotId", ""))]
    elif action == "DeleteVolume":
        checks = [existing("volume", params.get("VolumeId", ""))]
    else:
        # Describe* and the rest: no resource-level permissions, Resource "*".
        checks = [_check(name, "*", base)]
    # Tags in TagSpecifications need ec2:CreateTags on each new resource type, with ec2:CreateAction set to the
    # creating action (EC2 user guide, "Grant permission to tag resources during creation").
    for rtype, tags in specs.items():
        if tags:
            checks.append(_check("ec2:CreateTags", ec2_arn(region, account, rtype, "*"), base,
                                 dict(request_tag_keys(tags), **{"ec2:CreateAction": action})))
    return checks


def ec2_partial_checks(action: str, params: dict, region: str, account: str, resolver: Resolver) -> list[dict]:
    """Checks that skip a resource rather than fail the call. DeregisterImage with DeleteAssociatedSnapshots deletes
    each snapshot as ec2:DeleteSnapshot would; one the caller may not delete is left with ReturnCode
    "missing-permissions" (botocore model, DeregisterImage DeleteSnapshotResults)."""
    if action != "DeregisterImage" or str(params.get("DeleteAssociatedSnapshots", "")).lower() != "true":
        return []
    base = {"aws:RequestedRegion": region, "ec2:Region": region}
    return [_check("ec2:DeleteSnapshot", ec2_arn(region, account, "snapshot", snap), base,
                   resource_tag_keys(resolver.tags("snapshot", snap), ("aws", "ec2")))
            for snap in resolver.image_snapshots(params.get("ImageId", ""))]


def _members_sub(params: dict, name: str, field: str, fill: bool = False) -> list[str]:
    indexes = sorted({int(k.split(".")[1]) for k in params if k.startswith(name + ".") and k.split(".")[1].isdigit()})
    return [params.get(f"{name}.{i}.{field}", "" if fill else None) for i in indexes]


def ssm_instance_arn(region: str, account: str, iid: str) -> str:
    if iid.startswith("mi-"):
        return f"arn:aws:ssm:{region}:{account}:managed-instance/{iid}"
    return ec2_arn(region, account, "instance", iid)


def ssm_document_arn(region: str, account: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    # AWS-owned public documents have no account in their ARN (SSM user guide, "Setting up identity based policies
    # examples": the account ID shouldn't be specified in the ARN for AWS owned public documents).
    owner = "" if name.startswith(("AWS-", "AWSEC2-", "AWSSupport-", "AmazonCloudWatch-", "AWSConfigRemediation-")) else account
    return f"arn:aws:ssm:{region}:{owner}:document/{name}"


def ssm_parameter_arn(region: str, account: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"


def ssm_checks(action: str, params: dict, region: str, account: str, resolver: Resolver) -> list[dict]:
    """Checks for one SSM JSON call (Service Authorization Reference, "Actions defined by AWS Systems Manager")."""
    name = f"ssm:{action}"
    base = {"aws:RequestedRegion": region}

    def instance(iid: str) -> dict:
        tags = resolver.tags("instance", iid)
        return _check(name, ssm_instance_arn(region, account, iid), base, resource_tag_keys(tags, ("aws", "ssm")))

    if action == "SendCommand":
        checks = [_check(name, ssm_document_arn(region, account, params.get("DocumentName", "")), base)]
        checks += [instance(i) for i in params.get("InstanceIds") or []]
        if params.get("OutputS3BucketName"):
            checks.append(_check(name, f"arn:aws:s3:::{params['OutputS3BucketName']}", base))
        return checks
    if action == "DescribeInstancePatchStates":
        return [instance(i) for i in params.get("InstanceIds") or []] or [_check(name, "*", base)]
    if action in ("GetParameters", "DeleteParameters"):
        return [_check(name, ssm_parameter_arn(region, account, n), base) for n in params.get("Names") or []]
    if action in ("GetParameter", "DeleteParameter", "PutParameter", "GetParameterHistory", "LabelParameterVersion"):
        extra = {}
        if action == "PutParameter":
            extra = request_tag_keys({t["Key"]: t.get("Value", "") for t in params.get("Tags") or []})
            extra["ssm:Overwrite"] = "true" if params.get("Overwrite") else "false"
        return [_check(name, ssm_parameter_arn(region, account, params.get("Name", "")), base, extra)]
    return [_check(name, "*", base)]


def sts_checks(action: str, params: dict, region: str) -> list[dict]:
    base = {"aws:RequestedRegion": region}
    if action == "AssumeRole":
        extra = {"sts:RoleSessionName": params.get("RoleSessionName", "")}
        if params.get("ExternalId"):
            extra["sts:ExternalId"] = params["ExternalId"]
        return [_check("sts:AssumeRole", params.get("RoleArn", ""), base, extra)]
    return [_check(f"sts:{action}", "*", base)]


# S3 operations -> the IAM action that authorises them, and whether the resource is the bucket or the object
# (Service Authorization Reference, "Actions defined by Amazon S3"; HeadBucket and ListObjects need s3:ListBucket).
_S3_ACTIONS = {
    "ListBuckets": ("ListAllMyBuckets", None), "HeadBucket": ("ListBucket", "bucket"),
    "ListObjects": ("ListBucket", "bucket"), "ListObjectsV2": ("ListBucket", "bucket"),
    "GetBucketLocation": ("GetBucketLocation", "bucket"), "HeadObject": ("GetObject", "object"),
    "GetObject": ("GetObject", "object"), "PutObject": ("PutObject", "object"),
    "GetObjectTagging": ("GetObjectTagging", "object"), "PutObjectTagging": ("PutObjectTagging", "object"),
    "GetObjectAcl": ("GetObjectAcl", "object"), "PutObjectAcl": ("PutObjectAcl", "object"),
    "DeleteObject": ("DeleteObject", "object"), "CopyObject": ("PutObject", "object"),
    "CreateMultipartUpload": ("PutObject", "object"), "CompleteMultipartUpload": ("PutObject", "object"),
}


def s3_checks(operation: str, path: str, headers: dict, region: str) -> list[dict]:
    parts = [unquote(p) for p in path.split("/") if p]
    bucket, key = (parts[0] if parts else ""), "/".join(parts[1:])
    action, kind = _S3_ACTIONS.get(operation, (operation, "bucket" if len(parts) == 1 else "object" if parts else None))
    resource = {"bucket": f"arn:aws:s3:::{bucket}", "object": f"arn:aws:s3:::{bucket}/{key}"}.get(kind, "*")
    base = {"aws:RequestedRegion": region}
    checks = [_check(f"s3:{action}", resource, base)]
    if operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
        # An ACL or tags given with the upload need their own permissions (S3 API reference, PutObject: x-amz-acl
        # needs s3:PutObjectAcl, x-amz-tagging needs s3:PutObjectTagging).
        lowered = {k.lower(): v for k, v in headers.items()}
        if any(h.startswith("x-amz-grant-") for h in lowered) or "x-amz-acl" in lowered:
            checks.append(_check("s3:PutObjectAcl", resource, base))
        if "x-amz-tagging" in lowered:
            checks.append(_check("s3:PutObjectTagging", resource, base))
    return checks


def json_resource_arn(service: str, params: dict, region: str, account: str) -> str:
    """The resource of a KMS or Service Quotas call (Service Authorization Reference: KMS resource type key,
    arn:aws:kms:${Region}:${Account}:key/${KeyId}; Service Quotas resource type quota,
    arn:aws:servicequotas:${Region}:${Account}:${ServiceCode}/${QuotaCode}); "*" when the call names none."""
    if service == "kms":
        key = str(params.get("KeyId") or "")
        if key.startswith("arn:"):
            return key
        return f"arn:aws:kms:{region}:{account}:{key if key.startswith('alias/') else 'key/' + key}" if key else "*"
    if params.get("ServiceCode") and params.get("QuotaCode"):
        return f"arn:aws:servicequotas:{region}:{account}:{params['ServiceCode']}/{params['QuotaCode']}"
    return "*"


# Service Authorization Reference, "Actions defined by Elastic Load Balancing V2" / "by Amazon EC2 Auto Scaling": these
# writes act on resource type targetgroup (arn:aws:elasticloadbalancing:${Region}:${Account}:targetgroup/${Name}/${Id})
# and autoScalingGroup (arn:aws:autoscaling:${Region}:${Account}:autoScalingGroup:${GroupId}:autoScalingGroupName/${Name});
# the Describe* reads name no resource ("*"). Resource tags are not looked up here: a policy conditioned on them is refused
# (never allowed more than AWS would).
TARGET_GROUP_ACTIONS = ("RegisterTargets", "DeregisterTargets")
ASG_ACTIONS = ("EnterStandby", "ExitStandby")


def asg_arn(region: str, account: str, name: str) -> str:
    """The group's ARN from moto's backend (its GroupId is a UUID AWS assigns); a wildcard id when it does not exist."""
    try:
        from moto.autoscaling.models import autoscaling_backends  # pylint: disable=import-outside-toplevel
        group = autoscaling_backends[account][region].autoscaling_groups.get(name)
    except (ImportError, KeyError):
        group = None
    if group is not None and getattr(group, "arn", None):
        return group.arn
    return f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{name}"


def capacity_checks(service: str, action: str, params: dict, region: str, account: str) -> list[dict]:
    base = {"aws:RequestedRegion": region}
    if service == "elasticloadbalancing" and action in TARGET_GROUP_ACTIONS:
        return [_check(f"{service}:{action}", params.get("TargetGroupArn") or "*", base)]
    if service == "autoscaling" and action in ASG_ACTIONS:
        return [_check(f"{service}:{action}", asg_arn(region, account, params.get("AutoScalingGroupName", "")), base)]
    return [_check(f"{service}:{action}", "*", base)]


def build_call(service: str, action: str, params: dict, region: str, account: str, resolver: Resolver,
               path: str = "", headers: dict | None = None) -> dict:
    partial = []
    if service == "ec2":
        checks = ec2_checks(action, params, region, account, resolver)
        partial = ec2_partial_checks(action, params, region, account, resolver)
    elif service == "ssm":
        checks = ssm_checks(action, params, region, account, resolver)
    elif service == "sts":
        checks = sts_checks(action, params, region)
    elif service == "s3":
        checks = s3_checks(action, path, headers or {}, region)
    elif service in ("kms", "servicequotas"):
        checks = [_check(f"{service}:{action}", json_resource_arn(service, params, region, account), {"aws:RequestedRegion": region})]
    elif service in ("elasticloadbalancing", "autoscaling"):
        checks = capacity_checks(service, action, params, region, account)
    else:
        checks = [_check(f"{service}:{action}", "*", {"aws:RequestedRegion": region})]
    call = {"call": f"{service}:{action}", "checks": checks}
    if partial:
        call["partial"] = partial
    return call


def refused_partial(policy: dict, call: dict) -> list[dict]:
    """The partial checks of an allowed call that the policy refuses (their resources are skipped)."""
    return [c for c in call.get("partial", ()) if evaluate(policy, c)[0] != ALLOW]


# ---------------------------------------------------------------------------------------------------------------------
# The simulator side: moto's backends, the per-key policy, recording and the error shapes
# ---------------------------------------------------------------------------------------------------------------------

_LOCK = threading.Lock()
_RECORDED: dict[str, dict[str, dict]] = {}  # root key -> {canonical JSON: call}, in first-seen order
_DENIED: dict[str, list[dict]] = {}  # root key -> the refused calls (for a test's diagnostics)
_REQUEST = threading.local()  # the resource ids the current request may not touch (refused partial checks)
_REGION_RE = re.compile(r"Credential=[^/,\s]+/[^/]+/([^/]+)/")


class MotoResolver(Resolver):
    """Tags and relations read from moto's EC2 backend of the request's account and region."""

    def __init__(self, account: str, region: str) -> None:
        from moto.ec2.models import ec2_backends  # pylint: disable=import-outside-toplevel
        self.backend = ec2_backends[account][region]

    def _resource(self, rtype: str, rid: str):
        backend = self.backend
        if rtype == "instance":
            from .ec2 import _lookup  # pylint: disable=import-outside-toplevel
            return _lookup(backend, rid)
        if rtype == "image":
            return backend.amis.get(rid)
        if rtype == "snapshot":
            return backend.snapshots.get(rid)
        if rtype == "volume":
            return backend.volumes.get(rid)
        return None

    def tags(self, rtype: str, rid: str) -> dict[str, str] | None:
        if rtype == "replace-root-volume-task":
            from .images import TASKS  # pylint: disable=import-outside-toplevel
            task = TASKS.get((self.backend.account_id, self.backend.region_name), {}).get(rid)
            return {t["Key"]: t["Value"] for t in task["Tags"]} if task else None
        if self._resource(rtype, rid) is None:
            return None  # unknown resource: no aws:ResourceTag keys, as for a resource that has no tags
        return dict(self.backend.tags.get(rid, {}))

    def image_snapshots(self, image_id: str) -> list[str]:
        image = self.backend.amis.get(image_id)
        if image is None:
            return []
        mappings = image.__dict__.get("_sim_bdm") or []
        return [m["Ebs"]["SnapshotId"] for m in mappings if m.get("Ebs", {}).get("SnapshotId")]


def policy_for(akid: str | None) -> dict | None:
    from . import state  # pylint: disable=import-outside-toplevel
    return state.ACCOUNTING.json_setting("iam_policy", akid)


def _principal(akid: str, account: str) -> str:
    try:
        from moto.sts.models import sts_backends  # pylint: disable=import-outside-toplevel
        for role in list(sts_backends[account]["aws"].assumed_roles):
            if role.access_key_id == akid:
                return f"arn:aws:sts::{account}:assumed-role/{role.role_arn.split('/')[-1]}/{role.session_name}"
    except (KeyError, AttributeError):
        pass
    return f"arn:aws:iam::{account}:user/moto"  # what moto's GetCallerIdentity reports for a plain key


def _params(service: str, environ: dict, body: bytes) -> dict:
    if service in ("ssm", "kms", "servicequotas"):  # JSON protocol
        try:
            loaded = json.loads(body or b"{}")
        except ValueError:
            loaded = {}
        return loaded if isinstance(loaded, dict) else {}
    if service == "s3":
        return {}
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if body else {}
    form.update(parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    return {k: v[0] for k, v in form.items()}


def buffer_body(environ: dict) -> bytes:
    """Read the request body once and hand the app behind a fresh stream (the middleware and this module both read it)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def request_call(environ: dict, service: str, action: str, akid: str) -> tuple[dict, str]:
    """(the call's request context, the account) for a WSGI request."""
    from moto.iam.models import get_account_id_from  # pylint: disable=import-outside-toplevel
    match = _REGION_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    region = match.group(1) if match else "us-east-1"
    account = get_account_id_from(akid)
    body = b"" if service == "s3" else buffer_body(environ)
    headers = {k[5:].replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    resolver = MotoResolver(account, region) if service in ("ec2", "ssm") else Resolver()
    call = build_call(service, action, _params(service, environ, body), region, account, resolver,
                      path=environ.get("PATH_INFO", ""), headers=headers)
    return call, account


def check_request(environ: dict, service: str, action: str, akid: str | None, start_response):
    """The middleware's hook: None when the call may proceed, else the WSGI body of the service's denial."""
    _REQUEST.skipped = frozenset()
    policy = policy_for(akid) if akid else None
    if policy is None:
        return None
    from . import state  # pylint: disable=import-outside-toplevel
    root = state.ACCOUNTING.root_key(akid)
    call, account = request_call(environ, service, action, akid)
    decision, refused = authorize_call(policy, call)
    if decision == ALLOW and call.get("partial"):
        _REQUEST.skipped = frozenset(c["resource"].rpartition("/")[2] for c in refused_partial(policy, call))
    with _LOCK:
        if decision == ALLOW:
            _RECORDED.setdefault(root, {}).setdefault(json.dumps(call, sort_keys=True), call)
        else:
            _DENIED.setdefault(root, []).append(dict(call, refused=refused, decision=decision))
    if decision == ALLOW:
        return None
    return denial(service, _principal(akid, account), refused, decision == DENY, start_response)


def skipped_for_permissions(resource_id: str) -> bool:
    """For a backend handler: whether the request being served may not touch this resource (refused partial check), as
    DeregisterImage's "missing-permissions" snapshots."""
    return resource_id in getattr(_REQUEST, "skipped", frozenset())


def recorded(key: str | None) -> dict:
    from . import state  # pylint: disable=import-outside-toplevel
    root = state.ACCOUNTING.root_key(key)
    with _LOCK:
        return {"calls": list(_RECORDED.get(root, {}).values()), "denied": list(_DENIED.get(root, []))}


def reset_recorded(key: str | None) -> None:
    from . import state  # pylint: disable=import-outside-toplevel
    root = state.ACCOUNTING.root_key(key)
    with _LOCK:
        _RECORDED.pop(root, None)
        _DENIED.pop(root, None)


def denial_message(principal: str, check: dict, explicit: bool) -> str:
    # The wording of IAM's access-denied messages (IAM user guide, "Access denied error messages").
    why = "with an explicit deny in an identity-based policy" if explicit else \
        f"because no identity-based policy allows the {check['action']} action"
    return f"User: {principal} is not authorized to perform: {check['action']} on resource: {check['resource']} {why}"


def denial(service: str, principal: str, check: dict, explicit: bool, start_response) -> list[bytes]:
    """The error each service returns for a refused call (botocore models' error shapes): EC2 UnauthorizedOperation
    (HTTP 403, with an encoded authorization message), SSM AccessDeniedException (JSON), STS/IAM AccessDenied (query
    XML), S3 AccessDenied, CloudWatch AccessDenied (JSON 1.0, awsQueryCompatible)."""
    from .protocols import QUERY_COMPATIBLE, query_compatible_error  # pylint: disable=import-outside-toplevel
    request_id = str(uuid.uuid4())
    message = denial_message(principal, check, explicit)
    if service in QUERY_COMPATIBLE:  # CloudWatch: AWS JSON 1.0 with the query code AccessDenied (protocols.py)
        return query_compatible_error(start_response, "403 Forbidden", "AccessDenied", message)
    if service == "ec2":
        encoded = base64.b64encode(json.dumps({"allowed": False, "explicitDeny": explicit, "context": check}).encode()).decode()
        text = f"You are not authorized to perform this operation. {message}. Encoded authorization failure message: {encoded}"
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code>'
                f"<Message>{_xml(text)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>").encode()
        status, headers = "403 Forbidden", [("Content-Type", "text/xml")]
    elif service in ("sts", "iam", "elasticloadbalancing", "autoscaling"):  # query protocol: ErrorResponse, AccessDenied
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{_xml(message)}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode()
        status, headers = "403 Forbidden", [("Content-Type", "text/xml")]
    elif service == "s3":
        body = (f"<Error><Code>AccessDenied</Code><Message>{_xml(message)}</Message><RequestId>{request_id}</RequestId>"
                f"</Error>").encode()
        status, headers = "403 Forbidden", [("Content-Type", "application/xml")]
    else:
        body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
        status, headers = "400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"),
                                              ("x-amzn-ErrorType", "AccessDeniedException")]
    start_response(status, headers + [("x-amzn-RequestId", request_id), ("Content-Length", str(len(body)))])
    return [body]


def _xml(text: str) -> str:
    from xml.sax.saxutils import escape  # pylint: disable=import-outside-toplevel
    return escape(text)
