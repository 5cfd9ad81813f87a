"""`make bench` in small: a full playbooks/patch.yml over 50 instances stays within the batching design's API-call budget.

The budget (scripts/bench/budget.py, derived in docs/performance.md) counts calls, never time: the polls are at least as
long as the simulated durations, so every wait ends by its second poll however fast the machine is.
"""

import json
import sys
import uuid
from pathlib import Path

import yaml

from helpers import ROOT, run_playbook

sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import budget  # noqa: E402  pylint: disable=wrong-import-position,import-error
from simctl import SPREAD_ACCOUNTS, SPREAD_REGIONS, fleet_spec, spread_spec  # noqa: E402  pylint: disable=wrong-import-position,import-error

N = 50


def test_full_run_of_50_stays_within_the_call_budget(sim, tmp_path):
    tag = f"bench-smoke-{uuid.uuid4().hex[:8]}"
    seeded = sim.seed(fleet_spec(N, tag))
    assert len(seeded) == N
    inventory = tmp_path / "smoke.ec2_fleet.yml"
    inventory.write_text(yaml.safe_dump({"plugin": "cms.patching.ec2_fleet", "regions": ["us-east-1"], "filters": {"tag:cms-bench": tag}}))
    sim.configure(image_pending_s=0.2, command_s=0.2, reboot_s=0.2, replace_root_s=0.2)
    sim.reset_stats()

    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory,
                        extra_vars={"backup_poll_interval": 1, "patching_poll_interval": 1, "cms_patching_report_dir": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:]

    report = json.loads(next(Path(tmp_path).glob("*/report.json")).read_text())
    assert {i["instance_id"]: i["final_status"] for i in report["instances"]} == {s["instance_id"]: "patched" for s in seeded}

    calls = sim.stats()["calls"]
    sizes = budget.waves(N)
    # Discovery reads every target group of the region (issue 17): other tests' groups in the shared simulator count.
    elb = sim.client("elbv2")
    groups = [g for p in elb.get_paginator("describe_target_groups").paginate() for g in p["TargetGroups"] if g.get("TargetType") == "instance"]
    lbs = [lb for p in elb.get_paginator("describe_load_balancers").paginate() for lb in p["LoadBalancers"]]
    terms = budget.full_run(N, sizes, target_groups=len(groups), load_balancers=len(lbs))
    topology = terms["discovery topology (DescribeTargetGroups pages, DescribeLoadBalancers pages, DescribeTargetHealth per group)"]
    a, b, c = budget.linear_form()
    assert calls["ec2:CreateImage"] == N
    # Per wave (each below 50 instances here): one patch command, and one pre-check command per platform in the wave;
    # and the backup play's pre-flight free-space check (issue 18), one command per platform.
    assert 2 * len(sizes) <= calls["ssm:SendCommand"] <= 3 * len(sizes) + budget.PREFLIGHT_COMMANDS
    total = sum(calls.values())
    assert total <= sum(terms.values()), json.dumps({"total": total, "calls": calls, "budget": terms}, sort_keys=True)
    assert total <= a * N + b * len(sizes) + c + topology - budget.TOPOLOGY_PER_REGION


def test_the_spread_case_puts_the_same_fleet_evenly_in_every_partition():
    # `make bench`'s spread case compares 600 instances in one region with the same mix over 3 regions x 2 accounts.
    one, spread = fleet_spec(600), spread_spec(600)
    assert sum(g["count"] for g in spread["groups"]) == 600
    per_part = {}
    for group in spread["groups"]:
        part = (group["region"], group.get("account_id"))
        per_part[part] = per_part.get(part, 0) + group["count"]
    assert per_part == {(region, account): 100 for region in SPREAD_REGIONS for account in SPREAD_ACCOUNTS}
    for kind in one["groups"]:  # the same platform and patch-group mix as the one-region fleet
        same = [g for g in spread["groups"] if (g["platform"], g["patch_group"]) == (kind["platform"], kind["patch_group"])]
        assert sum(g["count"] for g in same) == kind["count"]
