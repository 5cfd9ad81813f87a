"""A throttling storm (30 % of EC2 and SSM requests refused) changes nothing in the outcome of a full run.

Two identical fleets, each with its own access key, run the site playbook side by side: one with throttle_rate 0,
one with 0.3. Per instance (matched by name) they must end with the same final status and reason, and in the
throttled run no instance may be lost or handled twice: one image per backed-up instance, and each instance in
exactly one patch SendCommand.
"""

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from helpers import FAST, ROOT, run_module, run_playbook, write_fleet_inventory

GROUPS = [
    {"count": 4, "name_prefix": "web"},
    {"count": 2, "name_prefix": "win", "platform": "windows"},
    {"count": 1, "name_prefix": "patchfail", "faults": ["patch-fail"]},
    {"count": 1, "name_prefix": "amifail", "faults": ["ami-fail"]},
    {"count": 1, "name_prefix": "offline", "faults": ["ssm-offline"]},
]


def full_run(sim, tmp_path, label, throttle_rate):
    tag = f"throttle-{label}-{uuid.uuid4().hex[:6]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": GROUPS})
    sim.configure(throttle_rate=throttle_rate)  # after seeding: the storm is for the tool, not for the test's own set-up
    sim.reset_stats()  # seeding is not part of the run
    hosts = {i["instance_id"]: {"instance_id": i["instance_id"], "region": i["region"], "account_id": i["account_id"]} for i in instances}
    inventory = tmp_path / f"{label}.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    run_id = f"thr-{label}-{uuid.uuid4().hex[:6]}"
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars={
        "cms_patching_run_id": run_id, "cms_patching_report_dir": str(tmp_path / "reports"), "cms_patching_serial": ["100%"],
        "cms_patching_max_fail_percentage": 100, "patching_poll_interval": 0.2, "backup_poll_interval": 0.2})
    report = json.loads((tmp_path / "reports" / run_id / "report.json").read_text())
    return {"instances": instances, "proc": proc, "report": report, "stats": sim.stats(), "run_id": run_id}


def outcomes(run):
    names = {i["instance_id"]: i["name"] for i in run["instances"]}
    return {names[e["instance_id"]]: (e["final_status"], e.get("reason"), (e.get("discovery") or {}).get("reasons"))
            for e in run["report"]["instances"]}


@pytest.fixture(scope="module")
def runs(sim_url, tmp_path_factory):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    calm, storm = Sim(sim_url), Sim(sim_url)
    work = tmp_path_factory.mktemp("throttling")
    with ThreadPoolExecutor(2) as pool:
        calm_run, storm_run = pool.map(lambda args: full_run(*args), [(calm, work, "calm", 0.0), (storm, work, "storm", 0.3)])
    storm.configure(throttle_rate=0.0)
    storm_run["sim"] = storm
    return calm_run, storm_run


def test_same_outcome_per_instance_with_and_without_throttling(runs):
    calm, storm = runs
    assert outcomes(calm) == outcomes(storm)
    assert calm["proc"].returncode == storm["proc"].returncode
    statuses = {name: status for name, (status, _reason, _why) in outcomes(storm).items()}
    assert statuses["web-001"] == "patched" and statuses["patchfail-001"] == "rolled_back"
    assert statuses["amifail-001"] == "failed" and statuses["offline-001"] == "skipped"
    assert len(statuses) == sum(g["count"] for g in GROUPS)  # nobody lost


def test_the_storm_really_throttled(runs):
    _calm, storm = runs
    # The simulator counts the requests it answered with a throttling error; every one was retried.
    assert runs[0]["stats"]["throttled"] == 0
    storm_total = sum(storm["stats"]["calls"].values())
    assert storm["stats"]["throttled"] > 0.15 * storm_total, (storm["stats"]["throttled"], storm_total)


def test_no_instance_is_processed_twice_under_throttling(runs):
    _calm, storm = runs
    sim = storm["sim"]
    ec2, ssm = sim.client("ec2"), sim.client("ssm")
    ids = [i["instance_id"] for i in storm["instances"]]
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-patching:source-instance", "Values": ids}])["Images"]
    per_instance = {}
    for image in images:
        source = next(t["Value"] for t in image["Tags"] if t["Key"] == "cms-patching:source-instance")
        per_instance[source] = per_instance.get(source, 0) + 1
    names = {i["instance_id"]: i["name"] for i in storm["instances"]}
    backed_up = {i for i in ids if not names[i].startswith(("amifail", "offline"))}
    assert per_instance == {i: 1 for i in backed_up}

    patched = {}
    for command in ssm.get_paginator("list_commands").paginate().build_full_result()["Commands"]:
        if command["Comment"].startswith(f"cms-patching {storm['run_id']} patch "):
            for instance_id in command["InstanceIds"]:
                patched[instance_id] = patched.get(instance_id, 0) + 1
    assert patched == {i: 1 for i in backed_up}


# 40 % of all EC2 and SSM requests refused: every client's retry policy (botocore standard mode, 10 attempts) must
# carry the inventory and the modules through, SSM's ThrottlingException included. Not 0.5: ten refusals in a row
# (0.5 ** 10, about 1 in 1,000 calls) would make the suite fail now and then; at 0.4 it is about 1 in 10,000.
HEAVY = 0.4
OTHER_ACCOUNT = "222222222222"


def inventory_hosts(inventory, env):
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory), "--list"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    return {host: (str(v["instance_id"]), str(v["ssm"]["ping_status"]), str(v["account_id"])) for host, v in hostvars.items()}


def test_the_inventory_lists_the_same_fleet_under_heavy_throttling(sim, tmp_path):
    tag = f"throttle-inv-{uuid.uuid4().hex[:6]}"
    sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [
        {"count": 60, "name_prefix": "web"}, {"count": 5, "name_prefix": "offline", "faults": ["ssm-offline"]},
        {"count": 10, "name_prefix": "acct", "account_id": OTHER_ACCOUNT}]})
    inventory = write_fleet_inventory(tmp_path, tag, accounts=[OTHER_ACCOUNT], include_patch_state=True)
    calm = inventory_hosts(inventory, sim.env)
    assert len(calm) == 75
    sim.configure(throttle_rate=HEAVY)
    sim.reset_stats()
    try:
        stormy = inventory_hosts(inventory, sim.env)
        stats = sim.stats()
    finally:
        sim.configure(throttle_rate=0.0)
    assert stormy == calm
    # The storm was on (refusals are random: a share of a few dozen calls would itself fail now and then).
    assert stats["throttled"] > 0, stats


def test_a_patch_module_run_is_right_under_heavy_throttling(sim):
    tag = f"throttle-mod-{uuid.uuid4().hex[:6]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [
        {"count": 53, "name_prefix": "ok"}, {"count": 2, "name_prefix": "pfail", "faults": ["patch-fail"]}]})
    sim.configure(**FAST, throttle_rate=HEAVY)
    sim.reset_stats()
    run_id = f"thr-mod-{uuid.uuid4().hex[:6]}"
    try:
        result = run_module("ssm_patch_run", {"instance_ids": [i["instance_id"] for i in instances], "run_id": run_id,
                                              "poll_interval": 0.3, "agent_online_timeout": 60, "agent_check_interval": 1,
                                              "execution_timeout": 600}, sim.env, timeout=900)
        stats = sim.stats()
    finally:
        sim.configure(throttle_rate=0.0)
    assert result["rc"] == 0, result.get("msg")
    expected = {i["instance_id"]: "failed" if i["name"].startswith("pfail") else "success" for i in instances}
    assert {r["instance_id"]: r["outcome"] for r in result["results"]} == expected
    assert stats["throttled"] > 0, stats  # the storm was on (a share of ~20 random refusals is not a stable figure)
    # Each instance got the patch exactly once (two batches: 50 + 5), however many requests were refused.
    sent = {}
    for command in sim.client("ssm").get_paginator("list_commands").paginate().build_full_result()["Commands"]:
        if command["Comment"].startswith(f"cms-patching {run_id} patch"):
            for instance_id in command["InstanceIds"]:
                sent[instance_id] = sent.get(instance_id, 0) + 1
    assert sent == {i: 1 for i in expected}
