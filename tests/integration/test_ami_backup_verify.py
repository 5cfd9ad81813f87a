"""cms.patching.ami_backup_verify against the simulator: real images going pending -> available, faults, re-runs,
retention and the API calls it costs. Images take 0.5 s here, so every test really waits and polls."""

import math
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from helpers import run_module

MANAGED = {"Name": "tag:cms-patching:managed", "Values": ["true"]}
POLL = 0.1
PENDING_S = 0.5
SLOW_S = 3.0  # long enough to look at images still pending after a module run returned (module start-up is ~1 s)


def seed(sim, *groups, pending=PENDING_S):
    sim.configure(image_pending_s=pending)
    return [i["instance_id"] for i in sim.seed({"groups": list(groups)})]


def backup(sim, ids, check_mode=False, **args):
    return run_module("ami_backup_verify", dict({"instance_ids": ids, "poll_interval": POLL}, **args), sim.env, check_mode=check_mode)


def images_of(sim, ids, managed_only=False):
    filters = [{"Name": "tag:cms-patching:source-instance", "Values": ids}] + ([MANAGED] if managed_only else [])
    return sim.client("ec2").describe_images(Owners=["self"], Filters=filters)["Images"]


def snapshots(sim, snapshot_ids):
    found = sim.client("ec2").describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": snapshot_ids}])
    return {s["SnapshotId"]: s for s in found["Snapshots"]}


def tags(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def ok(result):
    assert result["rc"] == 0, result.get("msg")
    assert "Traceback" not in result["stderr"]
    return result


def test_pending_images_become_available_and_are_verified_and_tagged(sim):
    ids = seed(sim, {"count": 3, "extra_volumes": 1, "name_prefix": "web"})
    sim.reset_stats()
    # A poll interval as long as the pending phase: the images are pending when created, and the wait ends by its first
    # poll, which finds them available (a count, not a wall-clock figure).
    result = ok(backup(sim, ids, run_id="run-pending", tags={"Team": "ops"}, poll_interval=PENDING_S))
    assert sim.stats()["calls"]["ec2:DescribeSnapshots"] == 1 and sim.stats()["calls"]["ec2:DescribeImages"] == 2
    assert [b["status"] for b in result["backups"]] == ["created"] * 3
    assert all(b["verified"] and b["state"] == "available" and len(b["snapshot_ids"]) == 2 and b["error"] is None
               for b in result["backups"])
    assert result["changed"] and result["summary"] == {"total": 3, "created": 3, "pruned_images": 0, "pruned_snapshots": 0}
    for image in images_of(sim, ids):
        entry = next(b for b in result["backups"] if b["image_id"] == image["ImageId"])
        assert image["State"] == "available" and image["Name"] == entry["name"] and image["Name"].startswith(f"cms-patching-{entry['instance_id']}-")
        assert {k: v for k, v in tags(image).items() if k != "cms-patching:created-at"} == {
            "cms-patching:managed": "true", "cms-patching:source-instance": entry["instance_id"], "cms-patching:run-id": "run-pending",
            "cms-patching:verified": "true", "Team": "ops"}
        snaps = snapshots(sim, entry["snapshot_ids"])
        assert len(snaps) == 2
        for snap in snaps.values():
            assert snap["State"] == "completed"
            assert tags(snap)["cms-patching:verified"] == "true" and tags(snap)["cms-patching:source-instance"] == entry["instance_id"]


def test_faults_fail_only_their_instances_and_are_cleaned_up(sim):
    ids = seed(sim, {"count": 2, "extra_volumes": 1}, {"count": 2, "faults": ["ami-fail"]},
               {"count": 2, "faults": ["snapshot-error"], "extra_volumes": 1})
    result = ok(backup(sim, ids, run_id="run-faults"))
    by_id = {b["instance_id"]: b for b in result["backups"]}
    assert [by_id[i]["status"] for i in ids] == ["created", "created", "failed", "failed", "failed", "failed"]
    for i in ids[2:4]:
        assert by_id[i]["error"] == f"image {by_id[i]['image_id']} is failed: Client.InternalError: simulated ami-fail fault"
    for i in ids[4:]:
        assert by_id[i]["error"] == f"snapshot {by_id[i]['snapshot_ids'][-1]} of {by_id[i]['image_id']} is in state error"
    assert {b["state"] for b in result["backups"] if b["status"] == "failed"} == {"deregistered"}
    # in AWS: the failed images and every one of their snapshots are gone; the good ones stay
    assert sorted(i["ImageId"] for i in images_of(sim, ids)) == sorted(by_id[i]["image_id"] for i in ids[:2])
    failed_snaps = [s for i in ids[2:] for s in by_id[i]["snapshot_ids"]]
    assert len(failed_snaps) == 6 and snapshots(sim, failed_snaps) == {}
    assert sorted(p["image_id"] for p in result["pruned"]) == sorted(by_id[i]["image_id"] for i in ids[2:])
    assert result["summary"] == {"total": 6, "created": 2, "failed": 4, "pruned_images": 4, "pruned_snapshots": 6}


def test_kill_and_rerun_adopts_pending_images_instead_of_duplicating(sim):
    ids = seed(sim, {"count": 3}, pending=SLOW_S)
    first = ok(backup(sim, ids, run_id="run-kill", wait=False))  # the run "dies" right after starting the images
    assert [(b["status"], b["state"], b["verified"]) for b in first["backups"]] == [("created", "pending", False)] * 3
    assert {i["State"] for i in images_of(sim, ids)} == {"pending"}
    sim.reset_stats()
    second = ok(backup(sim, ids, run_id="run-kill"))
    assert [(b["status"], b["adopted"], b["verified"]) for b in second["backups"]] == [("created", True, True)] * 3
    assert [b["image_id"] for b in second["backups"]] == [b["image_id"] for b in first["backups"]]
    assert "ec2:CreateImage" not in sim.stats()["calls"]
    images = images_of(sim, ids)
    assert len(images) == 3 and all(tags(i)["cms-patching:verified"] == "true" for i in images)


def test_rerun_under_a_new_run_id_adopts_a_pending_image_too(sim):
    ids = seed(sim, {"count": 2}, pending=SLOW_S)
    ok(backup(sim, ids, run_id="run-killed", wait=False))
    result = ok(backup(sim, ids, run_id="run-relaunched"))
    assert [(b["status"], b["adopted"], b["run_id"]) for b in result["backups"]] == [("created", True, "run-killed")] * 2
    assert len(images_of(sim, ids)) == 2


def test_rerun_with_same_run_id_reuses_verified_backups_with_no_mutation(sim):
    ids = seed(sim, {"count": 3})
    first = ok(backup(sim, ids, run_id="run-reuse"))
    sim.reset_stats()
    second = ok(backup(sim, ids, run_id="run-reuse"))
    assert [b["status"] for b in second["backups"]] == ["reused"] * 3 and second["changed"] is False
    assert [b["image_id"] for b in second["backups"]] == [b["image_id"] for b in first["backups"]]
    assert sim.stats()["mutating"] == {}
    # a different run reuses them only when told they are young enough
    assert [b["status"] for b in ok(backup(sim, ids, run_id="run-other", max_age_hours=1, check_mode=True))["backups"]] == ["reused"] * 3
    assert [b["status"] for b in ok(backup(sim, ids, run_id="run-other", check_mode=True))["backups"]] == ["would_create"] * 3


def _old_tool_image(sim, instance_id, days):
    """An image as the tool would have made it `days` ago (created-at is what retention reads)."""
    created = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    own = [{"Key": "cms-patching:managed", "Value": "true"}, {"Key": "cms-patching:source-instance", "Value": instance_id},
           {"Key": "cms-patching:run-id", "Value": "run-ancient"}, {"Key": "cms-patching:created-at", "Value": created},
           {"Key": "cms-patching:verified", "Value": "true"}]
    return sim.client("ec2").create_image(InstanceId=instance_id, Name=f"cms-patching-{instance_id}-ancient", NoReboot=True,
                                          TagSpecifications=[{"ResourceType": r, "Tags": own} for r in ("image", "snapshot")])["ImageId"]


def test_retention_removes_only_the_tools_old_images_and_snapshots(sim):
    ids = seed(sim, {"count": 2})
    ec2 = sim.client("ec2")
    ancient = {i: _old_tool_image(sim, i, days=30) for i in ids}
    # look-alikes: same name pattern and even the source-instance tag, but no ownership tag
    foreign = {i: ec2.create_image(InstanceId=i, Name=f"cms-patching-{i}-20200101T000000Z-run-r0", NoReboot=True,
                                   TagSpecifications=[{"ResourceType": r, "Tags": [{"Key": "cms-patching:source-instance", "Value": i}]}
                                                      for r in ("image", "snapshot")])["ImageId"] for i in ids}
    foreign_snaps = [m["Ebs"]["SnapshotId"] for i in ec2.describe_images(ImageIds=list(foreign.values()))["Images"]
                     for m in i["BlockDeviceMappings"]]
    time.sleep(PENDING_S)
    runs = [ok(backup(sim, ids, run_id=f"run-r{n}")) for n in (1, 2)]
    by_days = ok(backup(sim, ids, run_id="run-r3", retention_days=7))
    assert sorted((p["image_id"], p["reason"]) for p in by_days["pruned"]) == sorted((ancient[i], "retention_days") for i in ids)
    # the clean-up job's way: no new images, keep the two newest verified backups per instance
    by_count = ok(backup(sim, ids, create=False, retention_count=2))
    assert [b["status"] for b in by_count["backups"]] == ["existing"] * 2
    assert [b["image_id"] for b in by_count["backups"]] == [b["image_id"] for b in by_days["backups"]]
    assert sorted((p["image_id"], p["reason"]) for p in by_count["pruned"]) == sorted((b["image_id"], "retention_count") for b in runs[0]["backups"])
    left = {i["ImageId"] for i in images_of(sim, ids)}
    assert left == {b["image_id"] for r in (runs[1], by_days) for b in r["backups"]} | set(foreign.values())
    removed_snaps = [s for r in (by_days, by_count) for p in r["pruned"] for s in p["snapshot_ids"]]
    assert len(removed_snaps) == 4 and snapshots(sim, removed_snaps) == {}
    assert len(snapshots(sim, foreign_snaps)) == len(foreign_snaps) == 2
    assert by_days["summary"]["pruned_snapshots"] == by_count["summary"]["pruned_snapshots"] == 2


def test_check_mode_makes_no_mutating_call(sim):
    ids = seed(sim, {"count": 3})
    _old_tool_image(sim, ids[0], days=30)
    time.sleep(PENDING_S)
    sim.reset_stats()
    result = ok(backup(sim, ids, run_id="run-check", retention_days=7, check_mode=True))
    assert [b["status"] for b in result["backups"]] == ["would_create"] * 3 and result["changed"] is True
    assert [(p["instance_id"], p["reason"]) for p in result["pruned"]] == [(ids[0], "retention_days")]
    assert sim.stats()["mutating"] == {}
    assert len(images_of(sim, ids)) == 1


@pytest.mark.parametrize("max_concurrent", [50, 5])
def test_api_calls_per_instance(sim, max_concurrent):
    ids = seed(sim, {"count": 20, "extra_volumes": 1})
    sim.reset_stats()
    # Polls as long as the pending phase: each round of max_concurrent images ends by its first poll.
    result = ok(backup(sim, ids, run_id=f"run-calls-{max_concurrent}", max_concurrent=max_concurrent, poll_interval=PENDING_S))
    assert result["summary"]["created"] == 20
    calls = sim.stats()["calls"]
    polls = calls["ec2:DescribeSnapshots"]  # exactly one per poll: every in-flight image lists its snapshots
    assert calls["ec2:CreateImage"] == 20
    assert calls["ec2:CreateTags"] == 1
    assert calls["ec2:DescribeInstances"] == 1
    assert calls["ec2:DescribeImages"] == polls + 1  # the one look-up of existing backups, then one per poll
    assert polls == math.ceil(20 / max_concurrent)  # one poll per round: it waited for each round, and only once
    assert set(calls) == {"ec2:CreateImage", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:DescribeImages", "ec2:DescribeSnapshots"}


def test_max_concurrent_caps_images_in_flight(sim):
    ids = seed(sim, {"count": 6})
    ec2, seen, done = sim.client("ec2"), [], threading.Event()

    def watch():  # an outside observer: how many of these instances' images are pending at once
        while not done.is_set():
            seen.append(sum(1 for i in images_of(sim, ids) if i["State"] == "pending"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = ok(backup(sim, ids, run_id="run-cap", max_concurrent=2))
    finally:
        done.set()
        watcher.join()
    assert result["summary"]["created"] == 6 and len(ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "tag:cms-patching:run-id", "Values": ["run-cap"]}, MANAGED])["Images"]) == 6
    assert max(seen) == 2


@pytest.mark.parametrize("args, message", [
    ({"instance_ids": ["i-0123456789abcdef0"]}, "instance(s) not found (or terminated): i-0123456789abcdef0"),
    ({"name": "backup-{instance_id}-{hostname}"}, "name: unknown placeholder {hostname}"),
    ({"wait_timeout": -1}, "wait_timeout must be greater than 0, got -1"),
    ({"retention_count": 0}, "retention_count must be greater than 0, got 0"),
    ({"retention_days": 0}, "retention_days must be greater than 0, got 0"),
    ({"instance_ids": ["i-12"]}, "malformed instance id(s): i-12"),
])
def test_bad_input_is_one_line_and_changes_nothing(sim, args, message):
    ids = seed(sim, {"count": 1})
    sim.reset_stats()
    result = run_module("ami_backup_verify", dict({"instance_ids": ids}, **args), sim.env)
    assert result["rc"] != 0 and result["failed"]
    assert message in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in result["stderr"] and "exception" not in result
    assert sim.stats()["mutating"] == {}


def test_throttling_is_retried_not_reported(sim):
    # ~20 calls at a 15 % throttle rate: almost every run hits RequestLimitExceeded several times
    ids = seed(sim, {"count": 4})
    sim.configure(throttle_rate=0.15)
    try:
        result = ok(backup(sim, ids, run_id="run-throttle"))
    finally:
        sim.configure(throttle_rate=0)
    assert [b["status"] for b in result["backups"]] == ["created"] * 4
    assert len(images_of(sim, ids)) == 4  # retried CreateImage calls made no duplicates
