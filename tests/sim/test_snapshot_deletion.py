"""DeleteSnapshot right after DeregisterImage can fail with InvalidSnapshot.InUse for a while (EC2 API error codes);
DeregisterImage with DeleteAssociatedSnapshots=True deletes the image's snapshots itself, except one another AMI uses."""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

DEREGISTER_S = 0.6


def _image(sim, ec2):
    iid = sim.ids(extra_volumes=1)[0]
    image_id = ec2.create_image(InstanceId=iid, Name=f"del-{uuid.uuid4().hex}", NoReboot=True)["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return image_id, [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]


def _existing(ec2, snapshot_ids):
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": snapshot_ids}])["Snapshots"]
    return sorted(s["SnapshotId"] for s in found)


def test_delete_snapshot_right_after_deregister_is_in_use_until_it_settles(sim):
    sim.config(image_pending_s=0, deregister_s=DEREGISTER_S)
    ec2 = sim.client("ec2", retries=1)
    image_id, snaps = _image(sim, ec2)
    ec2.deregister_image(ImageId=image_id)
    with pytest.raises(ClientError) as err:
        ec2.delete_snapshot(SnapshotId=snaps[0])
    assert err.value.response["Error"]["Code"] == "InvalidSnapshot.InUse" and image_id in err.value.response["Error"]["Message"]
    assert _existing(ec2, snaps) == sorted(snaps)
    time.sleep(DEREGISTER_S)  # the simulated settling time has passed: the same call now succeeds
    for snap in snaps:
        ec2.delete_snapshot(SnapshotId=snap)
    assert _existing(ec2, snaps) == []


def test_deregister_with_delete_associated_snapshots_deletes_them(sim):
    sim.config(image_pending_s=0, deregister_s=30)
    ec2 = sim.client("ec2", retries=1)
    image_id, snaps = _image(sim, ec2)
    result = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    assert sorted((r["SnapshotId"], r["ReturnCode"]) for r in result["DeleteSnapshotResults"]) == [(s, "success") for s in sorted(snaps)]
    assert _existing(ec2, snaps) == []
    assert not ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [image_id]}])["Images"]


def test_delete_associated_snapshots_skips_a_snapshot_another_ami_uses(sim):
    sim.config(image_pending_s=0, deregister_s=0)
    ec2 = sim.client("ec2", retries=1)
    image_id, snaps = _image(sim, ec2)
    other = ec2.register_image(Name=f"reg-{uuid.uuid4().hex}", RootDeviceName="/dev/sda1", BlockDeviceMappings=[
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snaps[0]}}])["ImageId"]
    assert sorted(i["ImageId"] for i in ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [snaps[0], "snap-00000000"]}])["Images"]) \
        == sorted([image_id, other])
    result = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True)
    assert {r["SnapshotId"]: r["ReturnCode"] for r in result["DeleteSnapshotResults"]} == {snaps[0]: "skipped", snaps[1]: "success"}
    assert _existing(ec2, snaps) == [snaps[0]]


def test_deregister_without_the_flag_answers_no_snapshot_results(sim):
    sim.config(image_pending_s=0)
    ec2 = sim.client("ec2", retries=1)
    image_id, snaps = _image(sim, ec2)
    assert "DeleteSnapshotResults" not in ec2.deregister_image(ImageId=image_id)
    assert _existing(ec2, snaps) == sorted(snaps)
