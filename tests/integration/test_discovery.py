"""Discovery against the simulator: exact classification, check mode, API-call budget and bad input."""

import json
import math
import uuid

import pytest
import yaml

from helpers import run_module, run_playbook

# name prefix -> (group spec, expected reasons)
GROUPS = {
    "web": ({"count": 40, "platform": "linux", "patch_group": "web", "environment": "prod"}, []),
    "app": ({"count": 30, "platform": "linux", "patch_group": "app", "environment": "staging"}, []),
    "win": ({"count": 20, "platform": "windows", "patch_group": "app"}, []),
    "stopped": ({"count": 8, "state": "stopped", "patch_group": "web"}, ["not_running"]),
    "unmanaged": ({"count": 8, "faults": ["ssm-unmanaged"], "patch_group": "web"}, ["ssm_unmanaged"]),
    "offline": ({"count": 8, "faults": ["ssm-offline"], "patch_group": "app"}, ["ssm_offline"]),
    "excluded": ({"count": 6, "tags": {"cms-patching:exclude": "true"}, "patch_group": "web"}, ["excluded_by_tag"]),
    "asg": ({"count": 6, "asg": "web-asg", "patch_group": "web"}, ["asg_member"]),  # named per test run: see fleet()
    "mac": ({"count": 2, "platform": "macos"}, ["unsupported_platform"]),
    "ephemeral": ({"count": 2, "root_device": "instance-store"}, ["no_ebs_root"]),
}
TOTAL = sum(spec["count"] for spec, _reasons in GROUPS.values())


@pytest.fixture(scope="module")
def fleet(sim_url):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    sim = Sim(sim_url)
    tag = f"discovery-{uuid.uuid4().hex[:8]}"
    # Auto Scaling groups are per account and region, and the simulator is shared by the test workers: the group gets
    # this run's name, so another test's members never change what two scans of this fleet see.
    spec = {"region": "us-east-1", "tags": {"cms-test": tag},
            "groups": [dict(spec, name_prefix=prefix, **({"asg": f"web-asg-{tag}"} if "asg" in spec else {}))
                       for prefix, (spec, _reasons) in GROUPS.items()]}
    instances = sim.seed(spec)
    assert len(instances) == TOTAL >= 120
    return sim, tag, instances


def expected_reasons(name):
    return GROUPS[name.rsplit("-", 1)[0]][1]


def test_scan_classifies_every_instance_exactly(fleet):
    sim, tag, instances = fleet
    sim.reset_stats()
    result = run_module("ec2_patch_scan", {"filters": {"tag:cms-test": tag}, "page_size": 50}, sim.env)
    assert result["rc"] == 0, result["msg"]
    assert result["changed"] is False
    by_id = {i["instance_id"]: i for i in result["instances"]}
    assert set(by_id) == {i["instance_id"] for i in instances}
    for seeded in instances:
        got = by_id[seeded["instance_id"]]
        assert got["reasons"] == expected_reasons(seeded["name"]), seeded["name"]
        assert got["eligible"] is (not expected_reasons(seeded["name"]))
    eligible = sum(spec["count"] for spec, reasons in GROUPS.values() if not reasons)
    assert result["summary"]["eligible"] == eligible == len(result["eligible_ids"])
    assert result["summary"]["by_reason"]["ssm_offline"] == 8
    win = next(i for i in result["instances"] if i["name"] == "win-001")
    assert win["platform"] == "windows" and win["patch_group"] == "app" and win["ssm"]["ping_status"] == "Online"
    assert win["patch_state"]["missing"] == 3 and win["root_device_type"] == "ebs" and win["ebs_volumes"]

    # Budget: ceil(N/page) DescribeInstances pages, ceil(running/50) + ceil(managed/50) SSM calls.
    calls = sim.stats()["calls"]
    running = TOTAL - 8
    managed = running - 8
    assert calls["ec2:DescribeInstances"] == math.ceil(TOTAL / 50) > 1
    assert calls["ssm:DescribeInstanceInformation"] == math.ceil(running / 50) > 2
    assert calls["ssm:DescribeInstancePatchStates"] == math.ceil(managed / 50)
    assert not sim.stats()["mutating"]


def test_check_mode_gives_identical_results(fleet):
    sim, tag, _instances = fleet
    normal = run_module("ec2_patch_scan", {"filters": {"tag:cms-test": tag}}, sim.env)
    checked = run_module("ec2_patch_scan", {"filters": {"tag:cms-test": tag}}, sim.env, check_mode=True)
    assert without_ping_time(normal) == without_ping_time(checked) and normal["summary"] == checked["summary"]


def without_ping_time(result):
    """The agent's last ping moves between two scans; everything else must match."""
    return [dict(i, ssm={k: v for k, v in i["ssm"].items() if k != "last_ping"}) for i in result["instances"]]


def test_patch_group_selection_and_instance_ids(fleet):
    sim, tag, instances = fleet
    web = run_module("ec2_patch_scan", {"filters": {"tag:cms-test": tag}, "patch_groups": ["web"]}, sim.env)
    # Outside the patch groups is a reason, as in the discovery role and the report, not a silent drop.
    assert len(web["instances"]) == TOTAL
    for got in web["instances"]:
        outside = got["patch_group"] != "web"
        assert ("not_in_patch_group" in got["reasons"]) is outside, got["name"]
        assert got["reasons"] == expected_reasons(got["name"]) + (["not_in_patch_group"] if outside else [])
    outside = sum(spec["count"] for spec, _r in GROUPS.values() if spec.get("patch_group") != "web")
    assert web["summary"]["by_reason"]["not_in_patch_group"] == outside
    assert {i["patch_group"] for i in web["instances"] if i["eligible"]} == {"web"}
    picked = [i["instance_id"] for i in instances[:3]]
    by_id = run_module("ec2_patch_scan", {"instance_ids": picked}, sim.env)
    assert [i["instance_id"] for i in by_id["instances"]] == sorted(picked)


def test_asg_members_allowed_on_request(fleet):
    sim, tag, _instances = fleet
    result = run_module("ec2_patch_scan", {"filters": {"tag:cms-test": tag, "tag:aws:autoscaling:groupName": f"web-asg-{tag}"},
                                           "allow_asg_members": True}, sim.env)
    assert len(result["instances"]) == 6 and all(i["eligible"] for i in result["instances"])


def test_empty_selection_is_a_valid_empty_result(sim):
    result = run_module("ec2_patch_scan", {"filters": {"tag:cms-test": "no-such-fleet"}}, sim.env)
    assert result["rc"] == 0 and result["instances"] == [] and result["summary"]["total"] == 0


@pytest.mark.parametrize("args, message", [
    ({"instance_ids": ["i-12"]}, "malformed instance id(s): i-12"),
    ({"instance_ids": ["i-0123456789abcdef0"]}, "instance(s) not found in us-east-1: i-0123456789abcdef0"),
    ({"region": "us-nowhere-1"}, "unknown region 'us-nowhere-1'"),
    ({"allow_asg_members": "maybe"}, "allow_asg_members"),
    ({"page_size": 0}, "page_size must be between 5 and 1000"),
    ({"filters": {"bogus-filter": "x"}}, "InvalidParameterValue: The filter 'bogus-filter' is invalid"),
])
def test_bad_input_is_one_line_and_changes_nothing(sim, args, message):
    result = run_module("ec2_patch_scan", args, sim.env)
    assert result["rc"] != 0 and result["failed"]
    assert message in result["msg"] and "\n" not in result["msg"] and "Traceback" not in result["stderr"]
    assert not sim.stats()["mutating"]


def test_discovery_role_routes_and_records(fleet, tmp_path):
    sim, tag, instances = fleet
    hosts = {i["instance_id"]: {"instance_id": i["instance_id"], "region": i["region"], "account_id": i["account_id"]}
             for i in instances}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    run_id = f"disc-{uuid.uuid4().hex[:8]}"
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, tags="discovery",
                        extra_vars={"cms_patching_run_id": run_id, "cms_patching_report_dir": str(tmp_path / "reports")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "failed=1" not in proc.stdout, proc.stdout[:6000]
    assert "failed=1" not in proc.stdout
    report = json.loads((tmp_path / "reports" / run_id / "report.json").read_text())
    entries = {e["instance_id"]: e for e in report["instances"]}
    for seeded in instances:
        entry = entries[seeded["instance_id"]]
        assert entry["discovery"]["reasons"] == expected_reasons(seeded["name"])
        assert entry["final_status"] == ("skipped" if expected_reasons(seeded["name"]) else "discovered")
    assert report["summary"]["skipped"] == TOTAL - 90
    assert report["caller_arn"].startswith("arn:aws:")
