"""ec2_root_restore against the simulator: rollback from the pre-patch AMI, rollback-fail, check mode, refusals."""

import time
import uuid

import pytest

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, image_pending_s=0.2, ping_interval_s=0.5)  # short agent pings: see helpers.FAST


def seed(sim, groups):
    spec = {"region": "us-east-1", "tags": {"cms-test": f"rr-{uuid.uuid4().hex[:8]}"},
            "groups": [dict(count=n, name_prefix=p, faults=f) for p, (n, f) in groups.items()]}
    return sim.seed(spec)


def backups(sim, fleet):
    """A pre-patch AMI per instance, tagged the way the backup phase tags them."""
    ec2 = sim.client("ec2")
    images = {}
    for inst in fleet:
        iid = inst["instance_id"]
        images[iid] = ec2.create_image(InstanceId=iid, Name=f"pre-patch-{iid}", NoReboot=True, TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": "cms-patching:managed", "Value": "true"},
                                               {"Key": "cms-patching:source-instance", "Value": iid}]}])["ImageId"]
    deadline = time.time() + 10
    while time.time() < deadline:
        states = {i["State"] for i in ec2.describe_images(ImageIds=list(images.values()))["Images"]}
        if states == {"available"}:
            return images
        time.sleep(0.1)
    raise AssertionError(f"images not available: {states}")


def args(images, **kw):
    base = dict(instances=[{"instance_id": i, "image_id": a} for i, a in images.items()], poll_interval=0.2,
                wait_timeout=20, agent_online_timeout=5, run_id="run-rr")
    base.update(kw)
    return base


def test_rollback_restores_hung_instances_and_reports_rollback_fail(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {"ok": (2, []), "hang": (2, ["reboot-hang"]), "rbf": (1, ["health-fail", "rollback-fail"])})
    ids = [i["instance_id"] for i in fleet]
    images = backups(sim, fleet)
    patch = run_module("ssm_patch_run", dict(instance_ids=ids, poll_interval=0.2, agent_online_timeout=2, agent_check_interval=0.5),
                       sim.env)
    assert [r["outcome"] for r in patch["results"]] == ["success", "success", "reboot_timeout", "reboot_timeout", "success"]
    sim.reset_stats()
    result = run_module("ec2_root_restore", args(images), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert result["changed"] is True
    by_id = {r["instance_id"]: r for r in result["results"]}
    for inst in fleet[:4]:
        res = by_id[inst["instance_id"]]
        assert res["status"] == "succeeded" and res["task_state"] == "succeeded" and res["agent_online"] is True, res
        assert res["task_id"].startswith("replacevol-") and res["error"] is None
    failed = by_id[fleet[4]["instance_id"]]
    assert failed["status"] == "failed" and failed["task_state"] == "failed" and "ended failed" in failed["error"]
    assert result["summary"] == {"total": 5, "succeeded": 4, "failed": 1}
    stats = sim.stats()
    assert stats["mutating"] == {"ec2:CreateReplaceRootVolumeTask": 5}
    assert stats["calls"]["ec2:DescribeInstances"] == 1 and stats["calls"]["ec2:DescribeImages"] == 1
    assert stats["calls"]["ec2:DescribeReplaceRootVolumeTasks"] <= 10  # all tasks in one call per poll
    tasks = sim.client("ec2").describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=[r["task_id"] for r in result["results"]])
    for task in tasks["ReplaceRootVolumeTasks"]:
        assert task["ImageId"] == images[task["InstanceId"]] and task["DeleteReplacedRootVolume"] is False
        assert {"Key": "cms-patching:run-id", "Value": "run-rr"} in task["Tags"]
    # the restored disk is the pre-patch one: patches are missing again, and the agent answers
    states = sim.client("ssm").describe_instance_patch_states(InstanceIds=ids[:4])["InstancePatchStates"]
    assert {s["MissingCount"] for s in states} == {3}


def test_check_mode_creates_nothing_and_refusals_are_per_instance(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {"ok": (3, [])})
    images = backups(sim, fleet)
    ids = list(images)
    stopped = ids[2]
    sim.client("ec2").stop_instances(InstanceIds=[stopped])
    plan = {ids[0]: images[ids[0]], ids[1]: images[ids[0]], stopped: images[stopped]}  # ids[1] gets another instance's AMI
    sim.reset_stats()
    result = run_module("ec2_root_restore", args(plan), sim.env, check_mode=True)
    assert result["rc"] == 0, result.get("msg")
    assert [r["status"] for r in result["results"]] == ["would_restore", "failed", "failed"]
    assert f"is the backup of {ids[0]}" in result["results"][1]["error"]
    assert "is stopped" in result["results"][2]["error"]
    assert result["changed"] is True and sim.stats()["mutating"] == {}
    result = run_module("ec2_root_restore", args(plan), sim.env)
    assert [r["status"] for r in result["results"]] == ["succeeded", "failed", "failed"]
    assert sim.stats()["mutating"] == {"ec2:CreateReplaceRootVolumeTask": 1}


def test_wait_timeout_reports_the_task_still_running(sim):
    sim.configure(**dict(FAST, replace_root_s=10))
    fleet = seed(sim, {"ok": (1, [])})
    images = backups(sim, fleet)
    result = run_module("ec2_root_restore", args(images, wait_timeout=1), sim.env)
    res = result["results"][0]
    assert res["status"] == "failed" and res["task_state"] in ("pending", "in-progress")
    assert "after wait_timeout 1s" in res["error"]


@pytest.mark.parametrize("bad, message", [
    (dict(instances=[{"instance_id": "i-0123456789abcdef0", "image_id": "ami-xyz"}]), "malformed image id"),
    (dict(instances=[{"instance_id": "i-bad", "image_id": "ami-0123456789abcdef0"}]), "malformed instance id"),
    (dict(wait_timeout=0), "wait_timeout must be greater than 0"),
    (dict(agent_online_timeout=-3), "agent_online_timeout must be greater than 0"),
    (dict(instances=[]), "instances is empty"),
])
def test_bad_input_is_one_line_and_calls_nothing(sim, bad, message):
    base = args({"i-0123456789abcdef0": "ami-0123456789abcdef0"})
    base.update(bad)
    sim.reset_stats()
    result = run_module("ec2_root_restore", base, sim.env)
    assert result["rc"] != 0 and message in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in result["stderr"]
    assert sim.stats()["calls"] == {}
