"""cms.patching.ami_backup_info against the simulator: the look-up the backup gate and rollback rely on."""

from datetime import datetime, timedelta, timezone

from helpers import run_module


def own_tags(instance_id, run_id, hours_ago, verified=True, managed=True):
    created = (datetime.now(timezone.utc) - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = {"cms-patching:source-instance": instance_id, "cms-patching:run-id": run_id, "cms-patching:created-at": created}
    if managed:
        tags["cms-patching:managed"] = "true"
    if verified:
        tags["cms-patching:verified"] = "true"
    return [{"ResourceType": r, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]} for r in ("image", "snapshot")]


def test_newest_verified_backup_per_instance_in_one_call(sim):
    sim.configure(image_pending_s=0.2)
    ids = [i["instance_id"] for i in sim.seed({"groups": [{"count": 4}]})]
    ec2 = sim.client("ec2")

    def image(instance_id, label, **kw):
        return ec2.create_image(InstanceId=instance_id, Name=f"cms-patching-{instance_id}-{label}", NoReboot=True,
                                TagSpecifications=own_tags(instance_id, label, **kw))["ImageId"]

    image(ids[0], "old", hours_ago=30)
    newest = image(ids[0], "new", hours_ago=2)
    image(ids[0], "unverified", hours_ago=1, verified=False)
    image(ids[0], "foreign", hours_ago=0.5, managed=False)
    stale = image(ids[1], "stale", hours_ago=48)
    made = run_module("ami_backup_verify", {"instance_ids": [ids[2]], "run_id": "run-info", "poll_interval": 0.1}, sim.env)
    assert made["rc"] == 0 and made["backups"][0]["verified"]

    sim.reset_stats()
    result = run_module("ami_backup_info", {"instance_ids": ids}, sim.env)
    assert result["rc"] == 0 and result["changed"] is False
    backups = result["backups"]
    assert backups[ids[0]]["image_id"] == newest and backups[ids[0]]["run_id"] == "new"
    assert 1.9 < backups[ids[0]]["age_hours"] < 2.1 and backups[ids[0]]["verified"] is True
    assert len(backups[ids[0]]["snapshot_ids"]) == 1
    assert backups[ids[1]]["image_id"] == stale
    assert backups[ids[2]]["image_id"] == made["backups"][0]["image_id"] and backups[ids[2]]["run_id"] == "run-info"
    assert backups[ids[2]]["snapshot_ids"] == made["backups"][0]["snapshot_ids"]
    assert backups[ids[3]] is None and result["missing"] == [ids[3]]
    assert sim.stats()["calls"] == {"ec2:DescribeImages": 1}

    young = run_module("ami_backup_info", {"instance_ids": ids, "max_age_hours": 24}, sim.env)
    assert young["backups"][ids[1]] is None and young["missing"] == [ids[1], ids[3]]
    assert young["backups"][ids[0]]["image_id"] == newest


def test_bad_input_is_one_line(sim):
    for args, message in (({"instance_ids": ["i-xyz"]}, "malformed instance id(s): i-xyz"),
                          ({"instance_ids": ["i-0123456789abcdef0"], "max_age_hours": 0}, "max_age_hours must be greater than 0")):
        result = run_module("ami_backup_info", args, sim.env)
        assert result["rc"] != 0 and message in result["msg"] and "\n" not in result["msg"]
    assert sim.stats()["calls"] == {}
