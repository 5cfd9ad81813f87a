"""Seed a fleet of simulated instances from a spec, with batched RunInstances calls."""
from __future__ import annotations

import boto3

from .state import FAULTS

DEFAULT_ACCOUNT = "123456789012"
BATCH = 500
IMAGES = {"linux": "ami-0a1b2c3d4e5f60001", "windows": "ami-0a1b2c3d4e5f60002", "macos": "ami-0a1b2c3d4e5f60003"}
GROUP_KEYS = {"count", "name_prefix", "platform", "patch_group", "environment", "faults", "missing", "state", "asg",
              "root_device", "extra_volumes", "region", "account_id", "tags", "instance_type"}


class SpecError(ValueError):
    """The fleet spec is invalid."""


def validate(spec: dict) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("groups"), list):
        raise SpecError("spec must be a mapping with a 'groups' list")
    for pos, group in enumerate(spec["groups"], 1):
        where = f"group {pos}"
        unknown = set(group) - GROUP_KEYS
        if unknown:
            raise SpecError(f"{where}: unknown keys {sorted(unknown)}")
        if not isinstance(group.get("count"), int) or group["count"] < 1:
            raise SpecError(f"{where}: count must be a positive integer")
        bad = set(group.get("faults") or []) - FAULTS
        if bad:
            raise SpecError(f"{where}: unknown faults {sorted(bad)}; known: {', '.join(sorted(FAULTS))}")
        if group.get("platform", "linux") not in IMAGES:
            raise SpecError(f"{where}: platform must be one of {sorted(IMAGES)}")
        if group.get("state", "running") not in ("running", "stopped"):
            raise SpecError(f"{where}: state must be running or stopped")
        if group.get("root_device", "ebs") not in ("ebs", "instance-store"):
            raise SpecError(f"{where}: root_device must be ebs or instance-store")


class _Sessions:
    """One boto3 session per account: the default account directly, others through sts AssumeRole."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        self.endpoint = endpoint
        self.base = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self.cache: dict[str, boto3.session.Session] = {}

    def client(self, service: str, account: str, region: str):
        if account == DEFAULT_ACCOUNT:
            session = self.base
        else:
            if account not in self.cache:
                sts = self.base.client("sts", region_name=region, endpoint_url=self.endpoint)
                creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/cms-patching", RoleSessionName="cms-fleet")["Credentials"]
                self.cache[account] = boto3.session.Session(
                    aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                    aws_session_token=creds["SessionToken"])
            session = self.cache[account]
        return session.client(service, region_name=region, endpoint_url=self.endpoint)


def _tags(spec: dict, group: dict, name_template: str) -> dict[str, str]:
    tags = {"Name": name_template, "sim:platform": group.get("platform", "linux"), "sim:missing": str(group.get("missing", 3))}
    tags.update({str(k): str(v) for k, v in (spec.get("tags") or {}).items()})
    tags.update({str(k): str(v) for k, v in (group.get("tags") or {}).items()})
    optional = {"Patch Group": group.get("patch_group"), "Environment": group.get("environment"),
                "aws:autoscaling:groupName": group.get("asg")}
    tags.update({k: str(v) for k, v in optional.items() if v})
    if group.get("faults"):
        tags["sim:fault"] = ",".join(group["faults"])
    if group.get("root_device") == "instance-store":
        tags["sim:root-device"] = "instance-store"
    return tags


def seed(spec: dict, endpoint: str, access_key: str = "testing", secret_key: str = "testing") -> list[dict]:
    validate(spec)
    sessions = _Sessions(endpoint, access_key, secret_key)
    out: list[dict] = []
    for pos, group in enumerate(spec["groups"], 1):
        region = group.get("region") or spec.get("region") or "us-east-1"
        account = str(group.get("account_id") or spec.get("account_id") or DEFAULT_ACCOUNT)
        ec2 = sessions.client("ec2", account, region)
        prefix = group.get("name_prefix") or f"group{pos}"
        platform = group.get("platform", "linux")
        mappings = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True, "VolumeType": "gp3"}}]
        mappings += [{"DeviceName": f"/dev/sd{chr(ord('f') + n)}", "Ebs": {"VolumeSize": 10, "DeleteOnTermination": True, "VolumeType": "gp3"}}
                     for n in range(int(group.get("extra_volumes") or 0))]
        ids: list[str] = []
        done = 0
        while done < group["count"]:
            batch = min(BATCH, group["count"] - done)
            tags = _tags(spec, group, f"{prefix}-{{seq:{done + 1}:3}}")
            resp = ec2.run_instances(
                ImageId=IMAGES[platform], MinCount=batch, MaxCount=batch, InstanceType=group.get("instance_type", "t3.micro"),
                BlockDeviceMappings=mappings,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
            for inst in sorted(resp["Instances"], key=lambda i: i["AmiLaunchIndex"]):
                ids.append(inst["InstanceId"])
                out.append({"instance_id": inst["InstanceId"], "region": region, "account_id": account,
                            "name": f"{prefix}-{done + 1 + inst['AmiLaunchIndex']:03d}", "platform": platform,
                            "faults": list(group.get("faults") or []), "patch_group": group.get("patch_group"),
                            "environment": group.get("environment")})
            done += batch
        if group.get("state") == "stopped":
            for start in range(0, len(ids), 1000):
                ec2.stop_instances(InstanceIds=ids[start:start + 1000])
    return out
