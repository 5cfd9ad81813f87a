"""Seed a fleet of simulated instances from a spec, with batched RunInstances calls."""
from __future__ import annotations

import re
import time

import boto3

from .state import FAULTS

DEFAULT_ACCOUNT = "123456789012"
BATCH = 500
IMAGES = {"linux": "ami-0a1b2c3d4e5f60001", "windows": "ami-0a1b2c3d4e5f60002", "macos": "ami-0a1b2c3d4e5f60003"}
GROUP_KEYS = {"count", "name_prefix", "platform", "patch_group", "environment", "faults", "missing", "state", "asg",
              "root_device", "extra_volumes", "region", "account_id", "tags", "instance_type"}
# Topology keys (elbv2.py, autoscaling.py): zones to spread the group over round-robin (letters of the region's zones),
# target groups its instances are registered with, and the sizes of the Auto Scaling group named by `asg`.
GROUP_KEYS |= {"zones", "target_groups", "asg_min_size", "asg_max_size"}
TARGET_GROUP_KEYS = {"name", "port", "unused", "lb_zones"}
# ELBv2 API reference, CreateTargetGroup Name: at most 32 alphanumerics or hyphens, not beginning or ending with a hyphen.
TG_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")
ZONE_RE = re.compile(r"^[a-z]$")
ATTACH_MAX = 20  # AttachInstances InstanceIds: up to 20 per call (Auto Scaling API reference)


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
        _validate_topology(where, group)
    _target_group_specs(spec)
    _asg_specs(spec)


def _zone_list(where: str, key: str, value) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(z, str) and ZONE_RE.match(z) for z in value) \
            or len(set(value)) != len(value):
        raise SpecError(f"{where}: {key} must be a list of distinct zone letters, e.g. [a, b, c]")
    return value


def _validate_topology(where: str, group: dict) -> None:
    if "zones" in group:
        _zone_list(where, "zones", group["zones"])
    tgs = group.get("target_groups")
    if tgs is not None and not isinstance(tgs, list):
        raise SpecError(f"{where}: target_groups must be a list of names or mappings with {sorted(TARGET_GROUP_KEYS)}")
    for item in tgs or []:
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or set(entry) - TARGET_GROUP_KEYS or not isinstance(entry.get("name"), str):
            raise SpecError(f"{where}: target_groups items must be names or mappings with {sorted(TARGET_GROUP_KEYS)} (name required)")
        if not TG_NAME_RE.match(entry["name"]):
            raise SpecError(f"{where}: target group name {entry['name']!r} must be 1-32 letters, digits or inner hyphens")
        port = entry.get("port", 80)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise SpecError(f"{where}: target group {entry['name']}: port must be an integer 1..65535")
        if not isinstance(entry.get("unused", False), bool):
            raise SpecError(f"{where}: target group {entry['name']}: unused must be true or false")
        if "lb_zones" in entry and len(_zone_list(where, f"target group {entry['name']}: lb_zones", entry["lb_zones"])) < 2:
            # ELB guide, "Application Load Balancers" (Availability Zones): at least two zones per load balancer.
            raise SpecError(f"{where}: target group {entry['name']}: lb_zones needs at least two zones (an ALB's minimum)")
    for key in ("asg_min_size", "asg_max_size"):
        if key in group:
            if not group.get("asg"):
                raise SpecError(f"{where}: {key} needs asg")
            if not isinstance(group[key], int) or isinstance(group[key], bool) or group[key] < 0:
                raise SpecError(f"{where}: {key} must be a non-negative integer")


def _place(spec: dict, group: dict) -> tuple[str, str]:
    return (str(group.get("account_id") or spec.get("account_id") or DEFAULT_ACCOUNT),
            group.get("region") or spec.get("region") or "us-east-1")


def _target_group_specs(spec: dict) -> dict:
    """(account, region, name) -> {port, unused, lb_zones}; the same target group named in several groups must agree."""
    out: dict = {}
    for pos, group in enumerate(spec["groups"], 1):
        for item in group.get("target_groups") or []:
            entry = {"name": item} if isinstance(item, str) else item
            key = _place(spec, group) + (entry["name"],)
            given = {k: entry[k] for k in ("port", "unused", "lb_zones") if k in entry}
            known = out.setdefault(key, {})
            for name, value in given.items():
                if name in known and known[name] != value:
                    raise SpecError(f"group {pos}: target group {entry['name']}: {name} {value!r} contradicts {known[name]!r} given before")
                known[name] = value
    return {key: {"port": v.get("port", 80), "unused": v.get("unused", False), "lb_zones": v.get("lb_zones")} for key, v in out.items()}


def _asg_specs(spec: dict) -> dict:
    """(account, region, name) -> {count, min_size, max_size}: an Auto Scaling group of every instance the spec tags with
    its name; DesiredCapacity is that count."""
    out: dict = {}
    for pos, group in enumerate(spec["groups"], 1):
        if not group.get("asg"):
            continue
        key = _place(spec, group) + (str(group["asg"]),)
        known = out.setdefault(key, {"count": 0})
        known["count"] += group["count"]
        for name in ("asg_min_size", "asg_max_size"):
            if name in group:
                if name in known and known[name] != group[name]:
                    raise SpecError(f"group {pos}: asg {group['asg']}: {name} {group[name]} contradicts {known[name]} given before")
                known[name] = group[name]
    sizes = {}
    for key, known in out.items():
        low, high = known.get("asg_min_size", 0), known.get("asg_max_size", known["count"])
        if not low <= known["count"] <= high:
            raise SpecError(f"asg {key[2]}: its {known['count']} instances (the desired capacity) must be within "
                            f"asg_min_size {low} and asg_max_size {high}")
        sizes[key] = {"count": known["count"], "min_size": low, "max_size": high}
    return sizes


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


def _run(ec2, spec: dict, group: dict, prefix: str, mappings: list, zones: list[str] | None) -> list[tuple[int, dict]]:
    """RunInstances in batches: (index in the group, instance). With zones, instance i goes to zone i % len(zones)
    (one call per zone and batch, as RunInstances places all its instances in one zone)."""
    region = _place(spec, group)[1]
    lanes = [(None, list(range(group["count"])))] if not zones else \
        [(f"{region}{z}", list(range(n, group["count"], len(zones)))) for n, z in enumerate(zones)]
    step = len(zones) if zones else 1
    out = []
    for zone, indexes in lanes:
        for first in range(0, len(indexes), BATCH):
            chunk = indexes[first:first + BATCH]
            seq = f"{{seq:{chunk[0] + 1}:3}}" if step == 1 else f"{{seq:{chunk[0] + 1}:3:{step}}}"
            tags = _tags(spec, group, f"{prefix}-{seq}")
            extra = {"Placement": {"AvailabilityZone": zone}} if zone else {}
            resp = ec2.run_instances(
                ImageId=IMAGES[group.get("platform", "linux")], MinCount=len(chunk), MaxCount=len(chunk),
                InstanceType=group.get("instance_type", "t3.micro"), BlockDeviceMappings=mappings,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}], **extra)
            for inst in sorted(resp["Instances"], key=lambda i: i["AmiLaunchIndex"]):
                out.append((chunk[inst["AmiLaunchIndex"]], inst))
    return sorted(out, key=lambda pair: pair[0])


def _check_zones(spec: dict, sessions: _Sessions) -> None:
    """Every zone letter the spec names (zones, lb_zones) is a zone of its region: checked before anything is launched."""
    known: dict = {}
    for pos, group in enumerate(spec["groups"], 1):
        letters = list(group.get("zones") or [])
        letters += [z for item in group.get("target_groups") or [] if isinstance(item, dict) for z in item.get("lb_zones") or []]
        if not letters:
            continue
        account, region = _place(spec, group)
        if (account, region) not in known:
            zones = sessions.client("ec2", account, region).describe_availability_zones()["AvailabilityZones"]
            known[(account, region)] = {z["ZoneName"] for z in zones}
        bad = sorted({z for z in letters if f"{region}{z}" not in known[(account, region)]})
        if bad:
            raise SpecError(f"group {pos}: zones {bad} are not zones of {region} ({', '.join(sorted(known[(account, region)]))})")


def seed(spec: dict, endpoint: str, access_key: str = "testing", secret_key: str = "testing") -> list[dict]:
    validate(spec)
    sessions = _Sessions(endpoint, access_key, secret_key)
    out: list[dict] = []
    stops: list[tuple[str, str, list[str]]] = []
    members: dict = {}  # (account, region) -> {"tg": {name: [ids]}, "asg": {name: [ids]}}
    _check_zones(spec, sessions)
    for pos, group in enumerate(spec["groups"], 1):
        account, region = _place(spec, group)
        ec2 = sessions.client("ec2", account, region)
        prefix = group.get("name_prefix") or f"group{pos}"
        platform = group.get("platform", "linux")
        mappings = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True, "VolumeType": "gp3"}}]
        mappings += [{"DeviceName": f"/dev/sd{chr(ord('f') + n)}", "Ebs": {"VolumeSize": 10, "DeleteOnTermination": True, "VolumeType": "gp3"}}
                     for n in range(int(group.get("extra_volumes") or 0))]
        ids: list[str] = []
        for index, inst in _run(ec2, spec, group, prefix, mappings, group.get("zones")):
            ids.append(inst["InstanceId"])
            out.append({"instance_id": inst["InstanceId"], "region": region, "account_id": account,
                        "name": f"{prefix}-{index + 1:03d}", "platform": platform,
                        "faults": list(group.get("faults") or []), "patch_group": group.get("patch_group"),
                        "environment": group.get("environment"), "zone": inst["Placement"]["AvailabilityZone"]})
        place = members.setdefault((account, region), {"tg": {}, "asg": {}, "asg_tgs": {}})
        for item in group.get("target_groups") or []:
            name = item if isinstance(item, str) else item["name"]
            if group.get("asg"):  # Auto Scaling registers its members with the group's target groups itself
                place["asg_tgs"].setdefault(str(group["asg"]), []).append(name)
            else:
                place["tg"].setdefault(name, []).extend(ids)
            place["tg"].setdefault(name, [])
        if group.get("asg"):
            place["asg"].setdefault(str(group["asg"]), []).extend(ids)
        if group.get("state") == "stopped":
            stops.append((account, region, ids))
    tg_specs, asg_specs = _target_group_specs(spec), _asg_specs(spec)
    for (account, region), place in members.items():
        arns = _seed_target_groups(sessions, account, region, place["tg"], tg_specs)
        for name, ids in place["asg"].items():
            _seed_asg(sessions, account, region, name, ids, [arns[t] for t in dict.fromkeys(place["asg_tgs"].get(name, []))],
                      asg_specs[(account, region, name)])
    # Stopped last: only running instances can be registered (RegisterTargets: "not in a running state").
    for account, region, ids in stops:
        ec2 = sessions.client("ec2", account, region)
        for start in range(0, len(ids), 1000):
            ec2.stop_instances(InstanceIds=ids[start:start + 1000])
    for account, region, ids in stops:
        _wait_stopped(sessions.client("ec2", account, region), ids)
    return out


def _wait_stopped(ec2, ids: list[str], timeout: float = 60.0) -> None:
    """A `state: stopped` group is seeded stopped: wait out the `stopping` state (stop_s, ec2.py)."""
    deadline = time.monotonic() + timeout
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        while True:
            pages = ec2.describe_instances(InstanceIds=chunk, Filters=[{"Name": "instance-state-name", "Values": ["stopping"]}])
            if not any(r["Instances"] for r in pages["Reservations"]):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"seeded instances still stopping after {timeout:g} s (stop_s too long?)")
            time.sleep(0.05)


def _seed_target_groups(sessions: _Sessions, account: str, region: str, wanted: dict, specs: dict) -> dict:
    """Create (or reuse) each target group, with an Application Load Balancer and a listener forwarding to it unless
    `unused`, and register its members that are not in an Auto Scaling group. Returns name -> ARN."""
    if not wanted:
        return {}
    ec2 = sessions.client("ec2", account, region)
    elb = sessions.client("elbv2", account, region)
    subnets = {s["AvailabilityZone"]: s for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]}
    arns = {}
    for name, ids in wanted.items():
        opts = specs[(account, region, name)]
        try:
            tg = elb.describe_target_groups(Names=[name])["TargetGroups"][0]
        except elb.exceptions.TargetGroupNotFoundException:
            vpc = next(iter(subnets.values()))["VpcId"]
            tg = elb.create_target_group(Name=name, Protocol="HTTP", Port=opts["port"], VpcId=vpc, TargetType="instance")["TargetGroups"][0]
            if not opts["unused"]:
                zones = [f"{region}{z}" for z in opts["lb_zones"]] if opts["lb_zones"] else sorted(subnets)
                missing = [z for z in zones if z not in subnets]
                if missing:
                    raise SpecError(f"target group {name}: lb_zones {missing} are not zones of {region}")
                lb = elb.create_load_balancer(Name=f"{name[:29]}-lb", Subnets=[subnets[z]["SubnetId"] for z in zones],
                                              Type="application")["LoadBalancers"][0]
                elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=opts["port"],
                                    DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
        arns[name] = tg["TargetGroupArn"]
        for start in range(0, len(ids), 500):
            elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": i} for i in ids[start:start + 500]])
    return arns


def _seed_asg(sessions: _Sessions, account: str, region: str, name: str, ids: list[str], tg_arns: list[str], sizes: dict) -> None:
    """A real Auto Scaling group of the seeded instances (all InService), DesiredCapacity = their count, with the target
    groups attached (Auto Scaling registers its members). An existing group of that name gets the instances added."""
    asg = sessions.client("autoscaling", account, region)
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not found:
        ec2 = sessions.client("ec2", account, region)
        zones = sorted({z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]})
        asg.create_auto_scaling_group(AutoScalingGroupName=name, InstanceId=ids[0], MinSize=0, MaxSize=sizes["max_size"],
                                      DesiredCapacity=0, AvailabilityZones=zones, TargetGroupARNs=tg_arns)
        before, high = 0, sizes["max_size"]
    else:
        before = found[0]["DesiredCapacity"]
        high = max(found[0]["MaxSize"], before + len(ids))
        asg.update_auto_scaling_group(AutoScalingGroupName=name, MaxSize=high)
        if tg_arns:
            asg.attach_load_balancer_target_groups(AutoScalingGroupName=name, TargetGroupARNs=tg_arns)
    for start in range(0, len(ids), ATTACH_MAX):
        asg.attach_instances(AutoScalingGroupName=name, InstanceIds=ids[start:start + ATTACH_MAX])
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=sizes["min_size"], MaxSize=high,
                                  DesiredCapacity=before + len(ids))
