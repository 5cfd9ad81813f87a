"""A run killed with SIGKILL mid-backup, then mid-patching, and resumed with the same run id.

Afterwards: one image per instance (no duplicates from the killed backup), instances patched and validated before
the kill are not patched again, every instance ends patched, and the status tags and the report agree.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, run_playbook


def start_playbook(env, inventory, extra_vars, log):
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "playbooks/patch.yml"), "-i", str(inventory),
           "-e", json.dumps(extra_vars)]
    # Own process group: SIGKILL takes ansible-playbook and its workers down at once, as a killed AWX job does.
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_when(proc, log, condition, timeout=300):
    """SIGKILL the run as soon as condition() holds (AWS state, not log timing: robust on a loaded machine)."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before it could be interrupted: " + Path(log).read_text()[-3000:]
        assert time.time() < deadline, Path(log).read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return Path(log).read_text()


@pytest.fixture(scope="module")
def resumed(sim_url, tmp_path_factory):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    sim = Sim(sim_url)
    work = tmp_path_factory.mktemp("interrupted")
    tag = f"intr-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag},
                          "groups": [{"count": 4, "name_prefix": "web"}, {"count": 1, "name_prefix": "win", "platform": "windows"}]})
    hosts = {i["instance_id"]: {"instance_id": i["instance_id"], "region": i["region"], "account_id": i["account_id"]} for i in instances}
    inventory = work / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    run_id = f"intr-{uuid.uuid4().hex[:8]}"
    extra = {"cms_patching_run_id": run_id, "cms_patching_report_dir": str(work / "reports"), "cms_patching_serial": [1, "50%"],
             "patching_poll_interval": 0.2, "backup_poll_interval": 0.2}

    # 1. Killed while the images are pending (they take 4 s here).
    sim.configure(image_pending_s=4)
    kill_when(start_playbook(sim.env, inventory, extra, work / "run1.log"), work / "run1.log",
              lambda: len(images_per_instance(sim, instances)) >= 3)
    pending_after_kill = images_per_instance(sim, instances)
    # 2. Resumed, and killed while the second wave's patch command runs (4 s here); the canary is patched and validated by then.
    sim.configure(image_pending_s=0.2, command_s=4)
    second = kill_when(start_playbook(sim.env, inventory, extra, work / "run2.log"), work / "run2.log",
                       lambda: len(patch_targets(sim, run_id)) > 1)
    canary_tags = status_tags(sim, instances)
    # 3. Resumed to the end, once the killed run's last patch command and its reboots are over (an operator re-runs a
    # killed job later, not within the same second; a reboot in progress would fail that instance's pre-check).
    sim.configure(command_s=0.2)
    wait_until_quiet(sim, instances, run_id)
    final = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=extra)
    report = json.loads((work / "reports" / run_id / "report.json").read_text())
    return {"sim": sim, "instances": instances, "run_id": run_id, "pending_after_kill": pending_after_kill, "second": second,
            "canary_tags": canary_tags, "final": final, "report": report}


def wait_until_quiet(sim, instances, run_id, timeout=60):
    ssm, ids = sim.client("ssm"), [i["instance_id"] for i in instances]
    deadline = time.time() + timeout
    while time.time() < deadline:
        commands = ssm.get_paginator("list_commands").paginate().build_full_result()["Commands"]
        busy = [c for c in commands if c["Comment"].startswith(f"cms-patching {run_id} ") and c["Status"] in ("Pending", "InProgress")]
        online = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": ids}])["InstanceInformationList"]
        if not busy and len(online) == len(ids) and all(i["PingStatus"] == "Online" for i in online):
            return
        time.sleep(0.5)
    raise AssertionError("the killed run's commands did not finish")


def images_per_instance(sim, instances):
    ids = [i["instance_id"] for i in instances]
    images = sim.client("ec2").describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-patching:source-instance", "Values": ids}])
    counts = {}
    for image in images["Images"]:
        source = next(t["Value"] for t in image["Tags"] if t["Key"] == "cms-patching:source-instance")
        counts[source] = counts.get(source, 0) + 1
    return counts


def status_tags(sim, instances):
    reservations = sim.client("ec2").describe_instances(InstanceIds=[i["instance_id"] for i in instances])["Reservations"]
    return {inst["InstanceId"]: {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            for r in reservations for inst in r["Instances"]}


def patch_targets(sim, run_id):
    counts = {}
    for command in sim.client("ssm").get_paginator("list_commands").paginate().build_full_result()["Commands"]:
        if command["Comment"].startswith(f"cms-patching {run_id} patch "):
            for instance_id in command["InstanceIds"]:
                counts[instance_id] = counts.get(instance_id, 0) + 1
    return counts


def test_the_first_kill_left_backups_in_flight(resumed):
    # Without this the test would prove nothing about resuming a backup.
    assert resumed["pending_after_kill"], "the run was killed before any CreateImage"


def test_no_duplicate_images(resumed):
    assert images_per_instance(resumed["sim"], resumed["instances"]) == {i["instance_id"]: 1 for i in resumed["instances"]}


def test_instances_patched_before_the_kill_are_not_patched_again(resumed):
    patched_before = [i for i, tags in resumed["canary_tags"].items()
                      if tags.get("cms-patching:last-patch-status") == "patched" and tags.get("cms-patching:run-id") == resumed["run_id"]]
    assert patched_before, resumed["second"][-3000:]  # the canary wave finished before the kill
    targets = patch_targets(resumed["sim"], resumed["run_id"])
    for instance_id in patched_before:
        assert targets[instance_id] == 1
    assert set(targets) == {i["instance_id"] for i in resumed["instances"]}


def test_final_state_and_report_are_complete_and_consistent(resumed):
    final = resumed["final"]
    assert final.returncode == 0, final.stdout[-3000:]
    tags = status_tags(resumed["sim"], resumed["instances"])
    entries = {e["instance_id"]: e for e in resumed["report"]["instances"]}
    assert set(entries) == set(tags)
    for instance_id, instance_tags in tags.items():
        assert instance_tags["cms-patching:last-patch-status"] == "patched" == entries[instance_id]["final_status"]
        assert instance_tags["cms-patching:run-id"] == resumed["run_id"]
        assert entries[instance_id]["backup"]["verified"] is True
    assert resumed["report"]["summary"]["patched"] == len(tags) == resumed["report"]["summary"]["total"]
