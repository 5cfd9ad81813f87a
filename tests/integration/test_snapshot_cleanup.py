"""ami_backup_verify's clean-up against the simulator's DeregisterImage/DeleteSnapshot race (EC2: a snapshot stays in use
by its image for a while after DeregisterImage): no tagged snapshot is left orphaned, no foreign one is touched."""

from datetime import datetime, timedelta, timezone

from helpers import run_module

OWN = {"cms-patching:managed": "true", "cms-patching:run-id": "run-old", "cms-patching:verified": "true"}


def _tags(values):
    return [{"Key": k, "Value": v} for k, v in values.items()]


def _image(ec2, instance_id, name, image_tags, snapshot_tags):
    specs = [{"ResourceType": "image", "Tags": _tags(image_tags)}] + ([{"ResourceType": "snapshot", "Tags": _tags(snapshot_tags)}] if snapshot_tags else [])
    image_id = ec2.create_image(InstanceId=instance_id, Name=name, NoReboot=True, TagSpecifications=specs)["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return image_id, [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]


def _old_tool_image(ec2, instance_id, days=30):
    created = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = dict(OWN, **{"cms-patching:source-instance": instance_id, "cms-patching:created-at": created})
    return _image(ec2, instance_id, f"cms-patching-{instance_id}-old-{days}", tags, tags)


def _existing(ec2, snapshot_ids):
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": snapshot_ids}])["Snapshots"]
    return sorted(s["SnapshotId"] for s in found)


def _retention(sim, ids, check_mode=False):
    result = run_module("ami_backup_verify", {"instance_ids": ids, "create": False, "retention_days": 7, "poll_interval": 0.5},
                        sim.env, check_mode=check_mode)
    assert result["rc"] == 0 and "Traceback" not in result["stderr"], result.get("msg")
    return result


def test_retention_leaves_no_snapshot_of_a_removed_image(sim):
    # A deregistered image's snapshots stay in use far longer than the module would wait: only deleting them together
    # with the image (DeregisterImage DeleteAssociatedSnapshots=True) removes them in this run.
    sim.configure(image_pending_s=0, deregister_s=60)
    ids = [i["instance_id"] for i in sim.seed({"groups": [{"count": 1, "extra_volumes": 1}]})]
    ec2 = sim.client("ec2")
    old, snaps = _old_tool_image(ec2, ids[0])
    newest, newest_snaps = _old_tool_image(ec2, ids[0], days=1)  # within retention: kept
    result = _retention(sim, ids)
    assert [(p["image_id"], p["reason"], p["error"]) for p in result["pruned"]] == [(old, "retention_days", None)]
    assert result["pruned"][0]["snapshot_ids"] == snaps and result["summary"]["pruned_snapshots"] == 2
    assert _existing(ec2, snaps) == [] and _existing(ec2, newest_snaps) == sorted(newest_snaps)
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [old, newest]}])["Images"]] == [newest]


def test_retention_sweeps_the_tools_orphaned_snapshots_and_never_foreign_ones(sim):
    sim.configure(image_pending_s=0, deregister_s=0)
    ids = [i["instance_id"] for i in sim.seed({"groups": [{"count": 1}]})]
    ec2 = sim.client("ec2")
    _kept, kept_snaps = _old_tool_image(ec2, ids[0], days=1)
    # An earlier run deregistered this image and was killed before it deleted the snapshot.
    gone, orphans = _old_tool_image(ec2, ids[0], days=2)
    ec2.deregister_image(ImageId=gone)
    # Someone else's image of the instance, also deregistered: its snapshot is not the tool's.
    foreign, foreign_snaps = _image(ec2, ids[0], "someone-elses", {"cms-patching:source-instance": ids[0]},
                                    {"cms-patching:source-instance": ids[0]})
    ec2.deregister_image(ImageId=foreign)

    preview = _retention(sim, ids, check_mode=True)
    assert [(p["reason"], p["snapshot_ids"]) for p in preview["pruned"]] == [("orphaned", orphans)]
    assert _existing(ec2, orphans) == orphans

    result = _retention(sim, ids)
    assert [(p["instance_id"], p["image_id"], p["reason"], p["snapshot_ids"], p["error"]) for p in result["pruned"]] == [
        (ids[0], None, "orphaned", orphans, None)]
    assert result["changed"] and result["summary"]["pruned_images"] == 0 and result["summary"]["pruned_snapshots"] == 1
    assert _existing(ec2, orphans) == [] and _existing(ec2, foreign_snaps) == foreign_snaps and _existing(ec2, kept_snaps) == kept_snaps
