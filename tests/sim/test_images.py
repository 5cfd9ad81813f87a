"""CreateImage lifecycle, snapshot tagging and faults, image/snapshot housekeeping, replace-root tasks."""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from .conftest import wait_for


def _image(ec2, image_id):
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]


def _create(ec2, instance_id, run):
    return ec2.create_image(
        InstanceId=instance_id, Name=f"bk-{uuid.uuid4().hex}", NoReboot=True,
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "cms-run", "Value": run}]},
                           {"ResourceType": "snapshot", "Tags": [{"Key": "cms-run", "Value": run}]}])["ImageId"]


def test_image_pending_then_available_with_tagged_snapshot_per_volume(sim):
    sim.config(image_pending_s=0.5)
    iid = sim.ids(extra_volumes=1)[0]
    ec2 = sim.client("ec2")
    run = uuid.uuid4().hex
    image_id = _create(ec2, iid, run)
    image = _image(ec2, image_id)
    assert image["State"] == "pending"
    assert {t["Key"]: t["Value"] for t in image["Tags"]}["cms-run"] == run
    snap_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]
    assert len(snap_ids) == 2
    snaps = ec2.describe_snapshots(Filters=[{"Name": "tag:cms-run", "Values": [run]}], OwnerIds=["self"])["Snapshots"]
    assert sorted(s["SnapshotId"] for s in snaps) == sorted(snap_ids)
    assert {s["State"] for s in snaps} == {"pending"}
    pending = ec2.describe_images(Owners=["self"], Filters=[{"Name": "state", "Values": ["pending"]}, {"Name": "tag:cms-run", "Values": [run]}])
    assert [i["ImageId"] for i in pending["Images"]] == [image_id]
    assert wait_for(lambda: _image(ec2, image_id)["State"] == "available")
    snaps = ec2.describe_snapshots(SnapshotIds=snap_ids)["Snapshots"]
    assert {s["State"] for s in snaps} == {"completed"}


def test_ami_fail_fault(sim):
    iid = sim.ids(faults=["ami-fail"])[0]
    ec2 = sim.client("ec2")
    image_id = _create(ec2, iid, "x")
    image = wait_for(lambda: (img := _image(ec2, image_id))["State"] != "pending" and img)
    assert image["State"] == "failed" and image["StateReason"]["Code"]


def test_snapshot_error_fault(sim):
    iid = sim.ids(faults=["snapshot-error"], extra_volumes=1)[0]
    ec2 = sim.client("ec2")
    image_id = _create(ec2, iid, "x")
    wait_for(lambda: _image(ec2, image_id)["State"] != "pending")
    snap_ids = [m["Ebs"]["SnapshotId"] for m in _image(ec2, image_id)["BlockDeviceMappings"]]
    states = sorted(s["State"] for s in ec2.describe_snapshots(SnapshotIds=snap_ids)["Snapshots"])
    assert states == ["completed", "error"]


def test_deregister_delete_and_bulk_tags(sim):
    sim.config(deregister_s=0)  # no settling time here: the InvalidSnapshot.InUse window is test_snapshot_deletion.py's
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    image_id = _create(ec2, iid, "x")
    snap_ids = [m["Ebs"]["SnapshotId"] for m in _image(ec2, image_id)["BlockDeviceMappings"]]
    ec2.create_tags(Resources=[image_id] + snap_ids, Tags=[{"Key": "expire", "Value": "yes"}])
    assert ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:expire", "Values": ["yes"]}, {"Name": "image-id", "Values": [image_id]}])["Images"]
    with pytest.raises(ClientError):
        ec2.delete_snapshot(SnapshotId=snap_ids[0])  # still used by the image, like AWS
    ec2.deregister_image(ImageId=image_id)
    for snap in snap_ids:
        ec2.delete_snapshot(SnapshotId=snap)
    assert not ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [image_id]}])["Images"]
    assert not ec2.describe_snapshots(Filters=[{"Name": "tag:expire", "Values": ["yes"]}, {"Name": "snapshot-id", "Values": snap_ids}])["Snapshots"]


def _task_states(ec2, task_id, seconds):
    seen = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        state = ec2.describe_replace_root_volume_tasks(ReplaceRootVolumeTaskIds=[task_id])["ReplaceRootVolumeTasks"][0]["TaskState"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("succeeded", "failed"):
            break
        time.sleep(0.03)
    return seen


@pytest.mark.parametrize("fault,final", [(None, "succeeded"), ("rollback-fail", "failed")])
def test_replace_root_volume_task_states(sim, fault, final):
    sim.config(replace_root_s=0.6, image_pending_s=0)
    iid = sim.ids(faults=[fault] if fault else [])[0]
    ec2 = sim.client("ec2")
    image_id = _create(ec2, iid, "x")
    task = ec2.create_replace_root_volume_task(InstanceId=iid, ImageId=image_id, DeleteReplacedRootVolume=True)["ReplaceRootVolumeTask"]
    assert task["TaskState"] == "pending"
    assert _task_states(ec2, task["ReplaceRootVolumeTaskId"], 5) == ["pending", "in-progress", final]
    listed = ec2.describe_replace_root_volume_tasks(Filters=[{"Name": "instance-id", "Values": [iid]}])["ReplaceRootVolumeTasks"]
    assert [t["ReplaceRootVolumeTaskId"] for t in listed] == [task["ReplaceRootVolumeTaskId"]]
