"""The wave plan on the simulator: a mixed fleet in 3 zones behind two target groups (plus a one-member group and an
unused one) with Auto Scaling groups. Discovery reads the topology per account and region, plans every eligible
instance into a wave before the first change, writes the plan to the instances' tags (not in check mode) and the
report; the patching play runs the plan; a later --tags patching run of the same run id follows the tagged plan.

Budgets are checked against what the simulator says (DescribeTargetHealth / DescribeAutoScalingGroups, plain boto3),
not against the collection's own numbers.
"""

import json
import math
import uuid

import pytest

from helpers import FAST, FAST_VARS, ROOT, read_report, run_module, run_playbook, write_fleet_inventory

WAVE_TAG = "cms-patching:wave"
REGION = "us-west-2"
GROUPS = [
    {"count": 9, "name_prefix": "web", "zones": ["a", "b", "c"], "target_groups": ["tg-web"]},
    {"count": 6, "name_prefix": "api", "zones": ["a", "b", "c"], "target_groups": ["tg-web", {"name": "tg-api", "port": 8080}]},
    {"count": 1, "name_prefix": "solo", "zones": ["b"], "target_groups": ["tg-solo"]},
    {"count": 2, "name_prefix": "dark", "zones": ["c"], "target_groups": [{"name": "tg-dark", "unused": True}]},
    {"count": 6, "name_prefix": "asg", "zones": ["a", "b", "c"], "asg": "web-asg", "asg_min_size": 4},
    {"count": 2, "name_prefix": "tight", "zones": ["a", "b"], "asg": "tight-asg", "asg_min_size": 2},
    {"count": 1, "name_prefix": "off", "zones": ["a"], "faults": ["ssm-offline"]},
]


def unique(groups, suffix):
    """Target group and Auto Scaling group names of one test (they are per account and region in the simulator)."""
    out = []
    for group in groups:
        group = dict(group)
        if "target_groups" in group:
            group["target_groups"] = [dict(t, name=f"{t['name']}-{suffix}") if isinstance(t, dict) else f"{t}-{suffix}"
                                      for t in group["target_groups"]]
        if "asg" in group:
            group["asg"] = f"{group['asg']}-{suffix}"
        out.append(group)
    return out


@pytest.fixture
def fleet(sim, tmp_path):
    # Targets healthy soon after seeding, and drained at once when a wave deregisters them (simulated durations).
    sim.configure(**FAST, health_s=0.3, drain_s=0.3, asg_transition_s=0.3)
    suffix = uuid.uuid4().hex[:6]
    tag = f"plan-{suffix}"
    # A region of its own: discovery reads every target group of a region, and other tests count calls in us-east-1.
    instances = sim.seed({"region": REGION, "tags": {"cms-test": tag}, "groups": unique(GROUPS, suffix)})
    return instances, write_fleet_inventory(tmp_path, tag, regions=(REGION,)), suffix


def run(sim, tmp_path, inventory, run_id, **kwargs):
    extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                 cms_patching_max_fail_percentage=100)
    extra.update(kwargs.pop("extra", {}))
    return run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=extra, **kwargs)


def rooms(sim, suffix, pct=50):
    """{target group name or asg name: how many healthy members one wave may take out}, read with plain boto3."""
    elb, asg = sim.client("elbv2", REGION), sim.client("autoscaling", REGION)
    out, members = {}, {}
    for group in elb.describe_target_groups()["TargetGroups"]:
        if not group["TargetGroupName"].endswith(suffix):
            continue
        health = elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
        used = [d for d in health if d["TargetHealth"]["State"] != "unused"]
        healthy = [d["Target"]["Id"] for d in used if d["TargetHealth"]["State"] == "healthy"]
        out[group["TargetGroupName"]] = len(healthy) - math.ceil(len(used) * pct / 100)
        members[group["TargetGroupName"]] = set(healthy)
    for group in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:
        if group["AutoScalingGroupName"].endswith(suffix):
            out[group["AutoScalingGroupName"]] = group["DesiredCapacity"] - group["MinSize"]
            members[group["AutoScalingGroupName"]] = {i["InstanceId"] for i in group["Instances"]}
    return out, members


def wave_tags(sim, instances):
    ec2 = sim.client("ec2", REGION)
    found = ec2.describe_instances(InstanceIds=[i["instance_id"] for i in instances])["Reservations"]
    return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(WAVE_TAG) for r in found for i in r["Instances"]}


def by_name(instances):
    return {i["name"]: i["instance_id"] for i in instances}


def test_discovery_check_plans_every_eligible_instance_within_the_budget_and_changes_nothing(sim, tmp_path, fleet):
    instances, inventory, suffix = fleet
    sim.reset_stats()
    run_id = f"plan-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, inventory, run_id, tags="discovery", check=True, extra={"cms_patching_asg_mode": "standby"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    stats = sim.stats()
    assert stats["mutating"] == {}, stats["mutating"]
    # Topology per account and region, never per instance: one DescribeTargetHealth per target group of the region.
    calls = stats["calls"]
    assert calls["elasticloadbalancing:DescribeTargetGroups"] == 1 and calls["autoscaling:DescribeAutoScalingGroups"] == 1
    assert calls["elasticloadbalancing:DescribeTargetHealth"] < len(instances)

    report, entries = read_report(tmp_path / "reports", run_id)
    names = by_name(instances)
    reasons = {n: entries[i]["discovery"]["reasons"] for n, i in names.items()}
    assert reasons["solo-001"] == ["capacity_budget"]  # a one-member group with a 50 % floor
    assert reasons["tight-001"] == reasons["tight-002"] == ["asg_min_size"]  # MinSize == DesiredCapacity: no standby
    assert reasons["off-001"] == ["ssm_offline"]
    assert entries[names["solo-001"]]["final_status"] == "skipped"
    planned = {n for n, r in reasons.items() if not r}
    assert planned == {n for n in names if n.split("-")[0] in ("web", "api", "dark", "asg")}

    # The report carries the topology and the whole plan.
    web1 = entries[names["web-001"]]
    assert web1["zone"] == REGION + "a" and [t["name"] for t in web1["target_groups"]] == [f"tg-web-{suffix}"]
    assert web1["target_groups"][0]["state"] == "healthy" and web1["target_groups"][0]["deregistration_delay"] == 300
    dark = entries[names["dark-001"]]["target_groups"][0]
    assert (dark["state"], dark["reason"]) == ("unused", "Target.NotInUse")
    assert entries[names["asg-001"]]["asg"]["name"] == f"web-asg-{suffix}" and entries[names["asg-001"]]["asg"]["min_size"] == 4
    plan = report["plan"]
    assert [w["wave"] for w in plan] == list(range(1, len(plan) + 1))
    assert sorted(i for w in plan for i in w["instance_ids"]) == sorted(names[n] for n in planned)
    assert len(plan[0]["instance_ids"]) == 1  # the canary
    for wave in plan:
        assert wave["zones"] == sorted({entries[i]["zone"] for i in wave["instance_ids"]})
        assert all(entries[i]["wave"] == wave["wave"] for i in wave["instance_ids"])

    # No wave takes any group below 50 % healthy (the unused group counts nowhere), nor the Auto Scaling group's
    # desired capacity below MinSize.
    room, members = rooms(sim, suffix)
    assert room[f"tg-web-{suffix}"] == 7 and room[f"tg-api-{suffix}"] == 3 and room[f"web-asg-{suffix}"] == 2
    for wave in plan:
        for group, ids in members.items():
            taken = len(ids & set(wave["instance_ids"]))
            assert taken <= max(room[group], 0), (wave, group)
    # Serial sizes stay upper bounds: 10 % then 25 % of the 26 eligible instances (before the budget), as Ansible rounds.
    assert len(planned) + 3 == 26
    bounds = [1, 2, 6]
    assert all(len(w["instance_ids"]) <= bounds[min(n, 2)] for n, w in enumerate(plan))
    # Check mode plans but writes no tag.
    assert set(wave_tags(sim, instances).values()) == {None}


def test_zone_by_zone_waves_hold_one_zone_and_a_later_patching_run_follows_the_tagged_plan(sim, tmp_path, fleet):
    instances, inventory, _suffix = fleet
    run_id = f"zbz-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, inventory, run_id, tags="discovery", extra={"cms_patching_wave_strategy": "zone_by_zone"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    report, _entries = read_report(tmp_path / "reports", run_id)
    plan = report["plan"]
    assert all(len(w["zones"]) == 1 for w in plan), plan
    zones = [w["zones"][0] for w in plan]
    assert zones == sorted(zones)  # zones in turn, never back
    tags = wave_tags(sim, instances)
    for wave in plan:
        assert {tags[i] for i in wave["instance_ids"]} == {f"{run_id}/{wave['wave']}"}

    # The next day, --tags patching alone with the same run id, another strategy and a --limit (waves 1 and 3): the
    # tagged plan is followed, wave by wave, and nothing outside the limit is touched.
    limit = plan[0]["instance_ids"] + plan[2]["instance_ids"]
    sim.reset_stats()
    proc = run(sim, tmp_path, inventory, run_id, tags="patching", limit=",".join(limit),
               extra={"cms_patching_wave_strategy": "spread", "patching_require_backup": False})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "elasticloadbalancing:DescribeTargetGroups" in sim.stats()["calls"]  # planned again, from the tags
    assert [ids for _t, ids in patch_commands(sim, run_id)] == [sorted(plan[0]["instance_ids"]), sorted(plan[2]["instance_ids"])]
    report, entries = read_report(tmp_path / "reports", run_id)
    assert report["plan"] == plan
    assert {entries[i]["final_status"] for i in limit} == {"patched"}
    assert wave_tags(sim, instances) == tags  # the plan was not rewritten


def patch_commands(sim, run_id):
    commands = sim.client("ssm", REGION).get_paginator("list_commands").paginate().build_full_result()["Commands"]
    mine = [c for c in commands if c.get("Comment", "").startswith(f"cms-patching {run_id} patch ")]
    return [(c["RequestedDateTime"], sorted(c["InstanceIds"])) for c in sorted(mine, key=lambda c: c["RequestedDateTime"])]


@pytest.mark.parametrize("action", ["elasticloadbalancing:DescribeTargetGroups", "autoscaling:DescribeAutoScalingGroups"])
def test_a_missing_read_permission_fails_discovery_with_one_line(sim, tmp_path, fleet, action):
    _instances, inventory, _suffix = fleet
    policy = json.loads((ROOT / "docs" / "iam-policy.json").read_text().replace("REPORT-BUCKET", "no-bucket"))
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = [a for a in actions if a != action] or ["ec2:DescribeImages"]
    sim.configure(iam_policy=policy)
    sim.reset_stats()
    proc = run(sim, tmp_path, inventory, f"deny-{uuid.uuid4().hex[:6]}")
    assert proc.returncode != 0
    lines = [line for line in proc.stdout.splitlines() if action in line and "scan failed" in line]
    assert lines, proc.stdout[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sim.stats()["mutating"] == {}


def test_asg_modes_and_the_deprecated_allow_asg_members(sim, tmp_path, fleet):
    instances, _inventory, suffix = fleet
    members = sorted(i["instance_id"] for i in instances if i["name"].startswith("asg-"))
    args = {"instance_ids": members, "region": REGION}
    skipped = run_module("ec2_patch_scan", args, sim.env)
    assert {tuple(i["reasons"]) for i in skipped["instances"]} == {("asg_member",)} and skipped["asg_mode"] == "skip"
    assert not skipped.get("deprecations")
    standby = run_module("ec2_patch_scan", dict(args, asg_mode="standby"), sim.env)
    assert all(i["eligible"] for i in standby["instances"]) and standby["asg_mode"] == "standby"
    group = next(iter(standby["topology"]["auto_scaling_groups"].values()))
    assert group == {"name": f"web-asg-{suffix}", "members": 6, "healthy": 6, "min_size": 4, "max_size": 6, "desired_capacity": 6}
    old = run_module("ec2_patch_scan", dict(args, allow_asg_members=True), sim.env)
    assert all(i["eligible"] for i in old["instances"]) and old["asg_mode"] == "in_place"
    assert old["deprecations"] and "allow_asg_members" in json.dumps(old["deprecations"])
