"""cms.patching.ec2_fleet against the simulator, run the way users run it: ansible-inventory --list / --graph.

Each test seeds its own fleet carrying a unique cms-test tag and filters on it, so tests share one simulator.
"""

import json
import math
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = str(Path(sys.executable).parent / "ansible-inventory")
OTHER_ACCOUNT = "222222222222"
OTHER_ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/cms-patching"
# The shared readers' key sets (module_utils/readers.py), the same in ec2_patch_scan's results.
PATCH_STATE_KEYS = {"missing", "failed", "installed", "installed_other", "installed_pending_reboot", "installed_rejected",
                    "not_applicable", "critical_non_compliant", "security_non_compliant", "operation", "operation_end_time",
                    "baseline_id", "snapshot_id"}
SSM_KEYS = ["ping_status", "platform_type", "platform_name", "platform_version", "agent_version", "last_ping"]


def plain(value):
    """ansible-core 2.19 writes plugin-provided strings as {"__ansible_unsafe": ...} in --list output."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def write_inventory(tmp_path, tag, **options):
    config = {"plugin": "cms.patching.ec2_fleet", "regions": ["us-east-1"], "filters": {"tag:cms-test": tag}}
    config.update(options)
    path = tmp_path / "fleet.ec2_fleet.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_inventory(inventory, env, *args):
    return subprocess.run([ANSIBLE_INVENTORY, "-i", str(inventory), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def inventory_list(inventory, env):
    proc = run_inventory(inventory, env, "--list")
    assert proc.returncode == 0, proc.stderr
    return plain(json.loads(proc.stdout))


def groups_of(data, host):
    return {name for name, group in data.items() if name != "_meta" and host in group.get("hosts", [])}


def graph(text):
    """--graph output -> {group: set(hosts)} (our groups are flat children of all)."""
    groups, current = {}, None
    for line in text.splitlines():
        item = line.split("|--")[-1].strip()
        if item.startswith("@"):
            current = item[1:].rstrip(":")
            groups.setdefault(current, set())
        elif item and current:
            groups[current].add(item)
    return groups


def seed(sim, groups, tag=None):
    tag = tag or uuid.uuid4().hex[:12]
    fleet = sim.seed({"tags": {"cms-test": tag}, "groups": groups})
    return tag, {i["name"]: i["instance_id"] for i in fleet}


def calls(sim):
    return sim.stats()["calls"]


def test_mixed_fleet_over_pages_and_two_regions(sim, tmp_path):
    tag, ids = seed(sim, [
        {"count": 40, "name_prefix": "web", "patch_group": "web-prod", "environment": "prod"},
        {"count": 6, "name_prefix": "win", "platform": "windows", "environment": "dev", "tags": {"PatchGroup": "Win Servers"}},
        {"count": 3, "name_prefix": "off", "faults": ["ssm-offline"]},
        {"count": 3, "name_prefix": "unm", "faults": ["ssm-unmanaged"]},
        {"count": 2, "name_prefix": "stop", "state": "stopped"},
        {"count": 4, "name_prefix": "eu", "region": "eu-west-1", "patch_group": "eu-web"},
    ])
    inventory = write_inventory(tmp_path, tag, regions=["us-east-1", "eu-west-1"], page_size=20, include_patch_state=True)
    sim.reset_stats()
    data = inventory_list(inventory, sim.env)
    stats = sim.stats()

    hostvars = data["_meta"]["hostvars"]
    assert set(hostvars) == set(ids.values())  # hostnames default to the instance id

    web = ids["web-001"]
    assert groups_of(data, web) == {"ssm_online", "platform_linux", "patch_group_web_prod", "env_prod", "region_us_east_1",
                                    "account_123456789012"}
    ec2 = sim.client("ec2").describe_instances(InstanceIds=[web])["Reservations"][0]["Instances"][0]
    hv = hostvars[web]
    assert (hv["instance_id"], hv["account_id"], hv["region"]) == (web, "123456789012", "us-east-1")
    assert hv["private_ip_address"] == ec2["PrivateIpAddress"]
    assert hv["ec2_tags"]["Name"] == "web-001" and hv["ec2_tags"]["Patch Group"] == "web-prod"
    assert hv["ssm"]["ping_status"] == "Online" and hv["ssm"]["platform_type"] == "Linux"
    assert hv["ssm"]["platform_name"] and hv["ssm"]["agent_version"] and set(hv["ssm"]) == set(SSM_KEYS)
    assert set(hv["patch_state"]) == PATCH_STATE_KEYS and hv["patch_state"]["missing"] == 3
    assert "cms_patching_role_arn" not in hv and "ansible_connection" not in hv

    win = ids["win-002"]
    assert {"platform_windows", "patch_group_Win_Servers", "env_dev", "ssm_online"} <= groups_of(data, win)
    assert hostvars[win]["ssm"]["platform_type"] == "Windows"

    offline = [ids[n] for n in ("off-001", "off-002", "off-003", "unm-001", "unm-002", "unm-003", "stop-001", "stop-002")]
    assert set(data["ssm_offline"]["hosts"]) == set(offline)
    assert hostvars[ids["off-001"]]["ssm"]["ping_status"] == "ConnectionLost"
    assert hostvars[ids["unm-001"]]["ssm"] == dict.fromkeys(SSM_KEYS)
    assert hostvars[ids["unm-001"]]["patch_state"] == {}
    assert set(data["ssm_online"]["hosts"]) == set(ids.values()) - set(offline)

    eu = [ids[f"eu-{n:03d}"] for n in range(1, 5)]
    assert set(data["region_eu_west_1"]["hosts"]) == set(data["patch_group_eu_web"]["hosts"]) == set(eu)
    assert hostvars[eu[0]]["region"] == "eu-west-1"
    assert len(data["region_us_east_1"]["hosts"]) == 54

    # ceil(54/20) + ceil(4/20) pages; ceil(54/50) + ceil(4/50) SSM batches; read-only
    assert stats["calls"]["ec2:DescribeInstances"] == math.ceil(54 / 20) + 1
    assert stats["calls"]["ssm:DescribeInstanceInformation"] == 2 + 1
    assert stats["calls"]["ssm:DescribeInstancePatchStates"] == 2 + 1
    assert stats["mutating"] == {}

    proc = run_inventory(inventory, sim.env, "--graph")
    assert proc.returncode == 0, proc.stderr
    shown = graph(proc.stdout)
    assert shown["ssm_offline"] == set(offline)
    assert shown["patch_group_Win_Servers"] == {ids[f"win-{n:03d}"] for n in range(1, 7)}
    assert shown["region_eu_west_1"] == set(eu)


def test_accounts_are_gathered_through_assume_role(sim, tmp_path):
    tag, ids = seed(sim, [{"count": 3, "name_prefix": "own"},
                          {"count": 2, "name_prefix": "other", "account_id": OTHER_ACCOUNT, "environment": "prod"}])
    accounts = [{"role_arn": OTHER_ROLE, "external_id": "ext-123"}]
    sim.reset_stats()
    data = inventory_list(write_inventory(tmp_path, tag, accounts=accounts, include_default_account=True, hostnames=["tag:Name"]), sim.env)
    assert calls(sim)["sts:AssumeRole"] == 1

    assert set(data["_meta"]["hostvars"]) == {"own-001", "own-002", "own-003", "other-001", "other-002"}
    assert set(data[f"account_{OTHER_ACCOUNT}"]["hosts"]) == {"other-001", "other-002"}
    assert set(data["account_123456789012"]["hosts"]) == {"own-001", "own-002", "own-003"}
    other = data["_meta"]["hostvars"]["other-001"]
    assert other["account_id"] == OTHER_ACCOUNT and other["instance_id"] == ids["other-001"]
    assert other["cms_patching_role_arn"] == OTHER_ROLE and other["cms_patching_external_id"] == "ext-123"
    assert "cms_patching_role_arn" not in data["_meta"]["hostvars"]["own-001"]

    # without include_default_account only the listed accounts are inventoried
    data = inventory_list(write_inventory(tmp_path, tag, accounts=accounts), sim.env)
    assert set(data["_meta"]["hostvars"]) == {ids["other-001"], ids["other-002"]}


def test_cache_hit_makes_no_aws_call(sim, tmp_path):
    tag, ids = seed(sim, [{"count": 3, "name_prefix": "c"}, {"count": 1, "name_prefix": "x", "account_id": OTHER_ACCOUNT}])
    inventory = write_inventory(tmp_path, tag, accounts=[{"role_arn": OTHER_ROLE}], include_default_account=True,
                                cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(tmp_path / "cache"))
    sim.reset_stats()
    first = run_inventory(inventory, sim.env, "--list")
    assert first.returncode == 0, first.stderr
    assert calls(sim)["ec2:DescribeInstances"] == 2 and calls(sim)["sts:AssumeRole"] == 1

    sim.reset_stats()
    second = run_inventory(inventory, sim.env, "--list")
    assert second.returncode == 0, second.stderr
    assert sim.stats()["calls"] == {} and sim.stats()["mutating"] == {}
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert set(plain(json.loads(second.stdout))["_meta"]["hostvars"]) == set(ids.values())

    flushed = run_inventory(inventory, sim.env, "--list", "--flush-cache")
    assert flushed.returncode == 0, flushed.stderr
    assert calls(sim)["ec2:DescribeInstances"] == 2


def test_exclude_filters_win_over_filters(sim, tmp_path):
    tag, ids = seed(sim, [{"count": 4, "name_prefix": "keep"},
                          {"count": 2, "name_prefix": "skip", "tags": {"cms-patching:exclude": "true"}},
                          {"count": 2, "name_prefix": "down", "state": "stopped"}])
    inventory = write_inventory(tmp_path, tag, exclude_filters=[{"tag:cms-patching:exclude": "true"}, {"instance-state-name": ["stopped"]}])
    sim.reset_stats()
    data = inventory_list(inventory, sim.env)
    assert set(data["_meta"]["hostvars"]) == {ids[f"keep-00{n}"] for n in range(1, 5)}
    assert calls(sim)["ec2:DescribeInstances"] == 3  # one query per exclude filter plus the include query


@pytest.mark.parametrize("options, env, message", [
    ({"regionz": ["us-east-1"]}, {}, "unknown option(s) regionz for cms.patching.ec2_fleet"),
    ({"regions": ["us-east1"]}, {}, "unknown region(s) us-east1"),
    ({"accounts": [{"role_arn": "arn:aws:iam::22:role/x"}]}, {}, "is not an IAM role ARN"),
    ({"hostnames": ["public-ip"]}, {}, "unknown hostnames entry 'public-ip'"),
    ({"page_size": 5000}, {}, "page_size must be between 5 and 1000"),
    ({}, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, 'DescribeInstances failed for us-east-1: Could not connect to the endpoint URL: "http://127.0.0.1:9/"'),
])
def test_bad_configuration_fails_with_one_clear_line(sim, tmp_path, options, env, message):
    inventory = write_inventory(tmp_path, "none", **options)
    sim.reset_stats()
    proc = run_inventory(inventory, dict(sim.env, **env), "--list")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "No inventory was parsed" in output  # unparsed_is_failed: never a silent empty inventory
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if message in line]
    assert lines, output
    assert sim.stats()["calls"] == {}


def test_shipped_inventory_file_works_unchanged_against_the_simulator(sim):
    _tag, ids = seed(sim, [{"count": 2, "name_prefix": "demo", "patch_group": "demo-web", "environment": "demo"}])
    data = inventory_list(ROOT / "inventories" / "aws_ec2.yml", sim.env)
    for instance_id in ids.values():
        assert {"ssm_online", "platform_linux", "region_us_east_1", "patch_group_demo_web", "env_demo"} <= groups_of(data, instance_id)
