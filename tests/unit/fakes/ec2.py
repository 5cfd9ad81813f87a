"""A small in-memory EC2 for the backup unit tests (the integration tests use the real simulator).

It answers the calls the backup code makes with AWS's shapes and filter semantics, counts them, and lets a
test script how each image progresses. tests/unit/test_fakes.py checks it against the behaviour the code relies on.
"""

from collections import Counter
from datetime import datetime, timedelta, timezone

from botocore.exceptions import ClientError

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def record(image_id="ami-00000001", instance_id="i-0123456789abcdef0", state="available", verified=True, managed=True,
           run_id="run-1", hours_ago=1.0, mappings=(("/dev/xvda", "snap-00000001"),), reason=None):
    created = NOW - timedelta(hours=hours_ago)
    return {
        "image_id": image_id, "name": f"backup-{image_id}", "state": state, "state_reason": reason,
        "instance_id": instance_id, "run_id": run_id, "created": created,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "managed": managed, "verified": verified,
        "mappings": list(mappings), "snapshot_ids": [s for _d, s in mappings if s], "tags": {},
    }


def _matches(tags, attrs, filters):
    for f in filters or []:
        name, values = f["Name"], f["Values"]
        value = tags.get(name[4:]) if name.startswith("tag:") else attrs.get(name)
        if isinstance(value, list):  # a multi-valued attribute (an image's snapshot ids) matches on any value
            if not set(value) & set(values):
                return False
        elif value not in values:
            return False
    return True


class _Paginator:
    def __init__(self, fake, op):
        self.fake, self.op = fake, op

    def paginate(self, **params):
        self.fake.calls[self.op] += 1
        yield getattr(self.fake, "_" + self.op)(**params)


class FakeEc2:
    """images: {id: dict(State, Tags, Name, Blocks, instance)}; script: {instance_id: [states per poll...]}."""

    def __init__(self, instances=None):
        self.calls = Counter()
        self.instances = instances or {}
        self.images, self.snapshots = {}, {}
        self.fail_on = {}  # instance_id -> "ami-fail" | "snapshot-error"
        self.polls_to_finish = 2
        self.lost_responses = set()  # instance ids whose CreateImage succeeds but answers like a retried call
        self.delete_associated = True  # False: the endpoint refuses DeregisterImage's DeleteAssociatedSnapshots
        self.in_use_after_deregister = 0  # DeleteSnapshot calls per snapshot that fail InvalidSnapshot.InUse after a plain deregister
        self.in_use = {}  # snapshot id -> (image id, DeleteSnapshot calls still refused)
        self._seq = 0

    # -- read side
    def get_paginator(self, op):
        return _Paginator(self, op)

    def _describe_instances(self, Filters=None):
        ids = Filters[0]["Values"]
        return {"Reservations": [{"Instances": [self.instances[i]]} for i in ids if i in self.instances]}

    def _describe_images(self, Owners=None, Filters=None):
        self._advance()
        out = []
        for image_id, img in self.images.items():
            tags = {t["Key"]: t["Value"] for t in img["Tags"]}
            snaps = [b["Ebs"]["SnapshotId"] for b in img["Blocks"]]
            if _matches(tags, {"image-id": image_id, "state": img["State"], "name": img["Name"], "block-device-mapping.snapshot-id": snaps}, Filters):
                out.append({"ImageId": image_id, "Name": img["Name"], "State": img["State"], "Tags": img["Tags"],
                            "CreationDate": "2024-05-01T12:00:00.000Z", "BlockDeviceMappings": img["Blocks"]})
        return {"Images": out}

    def _describe_snapshots(self, OwnerIds=None, Filters=None):
        out = []
        for snap_id, snap in self.snapshots.items():
            tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
            if _matches(tags, {"snapshot-id": snap_id}, Filters):
                out.append(dict(snap, SnapshotId=snap_id))
        return {"Snapshots": out}

    def _advance(self):
        for img in self.images.values():
            if img["State"] != "pending":
                continue
            img["polls"] += 1
            if img["polls"] >= self.polls_to_finish:
                fault = self.fail_on.get(img["instance"])
                img["State"] = "failed" if fault == "ami-fail" else "available"
                for b in img["Blocks"]:
                    snap = self.snapshots[b["Ebs"]["SnapshotId"]]
                    snap["State"] = "error" if fault == "snapshot-error" else "completed"

    # -- write side
    def create_image(self, InstanceId, Name, Description, NoReboot, TagSpecifications, aws_retry=False):
        self.calls["create_image"] += 1
        if any(img["Name"] == Name for img in self.images.values()):
            raise ClientError({"Error": {"Code": "InvalidAMIName.Duplicate", "Message": f"AMI name {Name} is already in use"}}, "CreateImage")
        if InstanceId in self.lost_responses:
            self.lost_responses.discard(InstanceId)
            self.create_image(InstanceId, Name, Description, NoReboot, TagSpecifications)
            return self.create_image(InstanceId, Name, Description, NoReboot, TagSpecifications)
        self._seq += 1
        image_id = f"ami-{self._seq:08x}"
        tags = {s["ResourceType"]: s["Tags"] for s in TagSpecifications}
        blocks = []
        for n, mapping in enumerate(self.instances[InstanceId]["BlockDeviceMappings"]):
            snap_id = f"snap-{self._seq:04x}{n:04x}"
            self.snapshots[snap_id] = {"State": "pending", "VolumeId": mapping["Ebs"]["VolumeId"], "Tags": list(tags["snapshot"])}
            blocks.append({"DeviceName": mapping["DeviceName"], "Ebs": {"SnapshotId": snap_id}})
        self.images[image_id] = {"State": "pending", "Tags": list(tags["image"]), "Name": Name, "Blocks": blocks,
                                 "instance": InstanceId, "polls": 0}
        return {"ImageId": image_id}

    def create_tags(self, Resources, Tags, aws_retry=False):
        self.calls["create_tags"] += 1
        for rid in Resources:
            target = self.images.get(rid) or self.snapshots[rid]
            target["Tags"] = [t for t in target["Tags"] if t["Key"] not in {x["Key"] for x in Tags}] + list(Tags)

    def deregister_image(self, ImageId, DeleteAssociatedSnapshots=None, aws_retry=False):
        self.calls["deregister_image"] += 1
        if DeleteAssociatedSnapshots is not None and not self.delete_associated:
            raise ClientError({"Error": {"Code": "UnknownParameter", "Message": "The parameter DeleteAssociatedSnapshots is not recognized"}},
                              "DeregisterImage")
        if ImageId not in self.images:
            raise ClientError({"Error": {"Code": "InvalidAMIID.NotFound", "Message": f"The image id '[{ImageId}]' does not exist"}}, "DeregisterImage")
        snaps = [b["Ebs"]["SnapshotId"] for b in self.images.pop(ImageId)["Blocks"]]
        if not DeleteAssociatedSnapshots:
            self.in_use.update({s: (ImageId, self.in_use_after_deregister) for s in snaps})
            return {"Return": True}
        results = []
        for snap in snaps:  # AWS skips a snapshot another AMI uses
            shared = any(snap == b["Ebs"]["SnapshotId"] for img in self.images.values() for b in img["Blocks"])
            if not shared:
                self.snapshots.pop(snap, None)
            results.append({"SnapshotId": snap, "ReturnCode": "skipped" if shared else "success"})
        return {"Return": True, "DeleteSnapshotResults": results}

    def delete_snapshot(self, SnapshotId, aws_retry=False):
        self.calls["delete_snapshot"] += 1
        image_id, refusals = self.in_use.get(SnapshotId, (None, 0))
        if refusals:
            self.in_use[SnapshotId] = (image_id, refusals - 1)
            raise ClientError({"Error": {"Code": "InvalidSnapshot.InUse", "Message": f"The snapshot {SnapshotId} is currently in use by {image_id}"}},
                              "DeleteSnapshot")
        user = next((i for i, img in self.images.items() if any(b["Ebs"]["SnapshotId"] == SnapshotId for b in img["Blocks"])), None)
        if user:  # EC2 API "Error codes", InvalidSnapshot.InUse: a snapshot an AMI still uses cannot be deleted
            raise ClientError({"Error": {"Code": "InvalidSnapshot.InUse", "Message": f"The snapshot {SnapshotId} is currently in use by {user}"}},
                              "DeleteSnapshot")
        if SnapshotId not in self.snapshots:
            raise ClientError({"Error": {"Code": "InvalidSnapshot.NotFound", "Message": f"The snapshot '{SnapshotId}' does not exist."}}, "DeleteSnapshot")
        del self.snapshots[SnapshotId]


def instance(instance_id, volumes=1, name=None):
    return {
        "InstanceId": instance_id, "State": {"Name": "running"}, "RootDeviceType": "ebs",
        "Tags": [{"Key": "Name", "Value": name}] if name else [],
        "BlockDeviceMappings": [{"DeviceName": f"/dev/sd{chr(97 + n)}", "Ebs": {"VolumeId": f"vol-{instance_id[2:10]}{n:04d}"}}
                                for n in range(volumes)],
    }
