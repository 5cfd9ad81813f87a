# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups as AWS records them: the tool's AMIs found through their ownership tags, never through names.

`find_verified_backups` is the shared lookup used by the patching backup gate, rollback and
`ami_backup_info`; the creation workflow lives in run.py.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import readers
from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.backup.naming import parse_time, utc_now
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, is_aws_error

GONE_INSTANCE_STATES = ("shutting-down", "terminated")


def aws_call(action, subject, func, *args, **kwargs):
    """Run one AWS call; its failure becomes a one-line PatchingError."""
    try:
        return func(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            raise PatchingError(aws_error_message(e, action, subject)) from None
        raise


def describe_instances(ec2, instance_ids):
    """{instance_id: instance record (readers.py)} for the ids that exist and are not going away.

    The shared reader asks by instance-id filter, not InstanceIds, so one unknown id fails nothing.
    """
    records = aws_call("ec2:DescribeInstances", None, readers.read_instances, ec2, instance_ids)
    return {r["instance_id"]: r for r in records if r["state"] not in GONE_INSTANCE_STATES}


def require_instances(ec2, instance_ids):
    """Every requested instance must exist: otherwise one line naming the missing ones, before anything is created."""
    found = describe_instances(ec2, instance_ids)
    missing = [i for i in instance_ids if i not in found]
    if missing:
        raise PatchingError(f"instance(s) not found (or terminated): {', '.join(missing)}")
    return found


def instance_volumes(instance):
    """[(device_name, volume_id)] of the instance record's EBS volumes: what a backup must cover."""
    return [(v["device_name"], v["volume_id"]) for v in instance["volumes"]]


def name_tag(instance):
    return instance["name"]


def ebs_backed(instance):
    """An instance record whose root device is EBS (or not stated): only those can be imaged with their volumes."""
    return (instance.get("root_device_type") or "ebs") == "ebs"


def image_record(image):
    """The fields of a DescribeImages entry the tool reasons about."""
    tags = T.tag_dict(image.get("Tags"))
    creation_date = parse_time(image.get("CreationDate"))  # AWS's own, in milliseconds: breaks ties of the tag
    created = parse_time(tags.get(T.CREATED_AT)) or creation_date
    mappings = [(m.get("DeviceName"), m["Ebs"].get("SnapshotId")) for m in image.get("BlockDeviceMappings", []) if "Ebs" in m]
    return {
        "image_id": image["ImageId"],
        "name": image.get("Name"),
        "state": image.get("State"),
        "state_reason": (image.get("StateReason") or {}).get("Message"),
        "instance_id": tags.get(T.SOURCE_INSTANCE),
        "run_id": tags.get(T.RUN_ID),
        "created": created,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ") if created else None,
        "creation_date": creation_date,
        "managed": T.is_owned(tags),
        "verified": tags.get(T.VERIFIED) == "true",
        "mappings": mappings,
        "snapshot_ids": [s for _d, s in mappings if s],
        "tags": tags,
    }


def describe_images_by_id(ec2, image_ids):
    """{image_id: record}; an image id filter (not ImageIds) so an image not yet visible is simply absent."""
    records = {}
    for chunk in chunked(image_ids, EC2_ID_BATCH):
        images = aws_call("ec2:DescribeImages", None, paginate, ec2, "describe_images", "Images",
                          Owners=["self"], Filters=[{"Name": "image-id", "Values": chunk}])
        records.update((i["ImageId"], image_record(i)) for i in images)
    return records


def describe_managed_images(ec2, instance_ids, verified_only=False, states=None):
    """Records of the tool's own images of these instances, one batched DescribeImages per 200 instances."""
    filters = [{"Name": "tag:" + T.MANAGED, "Values": ["true"]}]
    if verified_only:
        filters.append({"Name": "tag:" + T.VERIFIED, "Values": ["true"]})
    if states:
        filters.append({"Name": "state", "Values": list(states)})
    records = []
    for chunk in chunked(instance_ids, EC2_ID_BATCH):
        images = aws_call("ec2:DescribeImages", None, paginate, ec2, "describe_images", "Images", Owners=["self"],
                          Filters=filters + [{"Name": "tag:" + T.SOURCE_INSTANCE, "Values": chunk}])
        records.extend(image_record(i) for i in images)
    # Tag filters are the query; ownership is re-checked on the record so nothing foreign ever slips through.
    return [r for r in records if r["managed"] and r["instance_id"] in instance_ids]


def describe_snapshot_states(ec2, snapshot_ids):
    """{snapshot_id: {"state", "volume_id", "managed", "message"}} for the snapshots that exist."""
    found = {}
    for chunk in chunked(snapshot_ids, EC2_ID_BATCH):
        snapshots = aws_call("ec2:DescribeSnapshots", None, paginate, ec2, "describe_snapshots", "Snapshots",
                             OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": chunk}])
        for snap in snapshots:
            found[snap["SnapshotId"]] = {
                "state": snap.get("State"),
                "volume_id": snap.get("VolumeId"),
                "managed": T.is_owned(T.tag_dict(snap.get("Tags"))),
                "message": snap.get("StateMessage"),
            }
    return found


def by_instance(records):
    grouped = {}
    for record in records:
        grouped.setdefault(record["instance_id"], []).append(record)
    for images in grouped.values():
        images.sort(key=sort_key, reverse=True)
    return grouped


def sort_key(record):
    """Newest first when sorted in reverse; images without a time sort as oldest.

    The created-at tag has whole seconds: two images of one instance made in the same second are ordered by AWS's
    CreationDate (milliseconds), and only then by image id.
    """
    def stamp(when):
        return when.timestamp() if when else 0.0
    return (stamp(record["created"]), stamp(record.get("creation_date")), record["image_id"])


def age_hours(record, now=None):
    if not record["created"]:
        return None
    return max(0.0, ((now or utc_now()) - record["created"]).total_seconds() / 3600.0)


def backup_info(record, now=None):
    """What callers (backup gate, rollback, ami_backup_info) get for one verified backup."""
    age = age_hours(record, now)
    return {
        "instance_id": record["instance_id"],
        "image_id": record["image_id"],
        "name": record["name"],
        "created_at": record["created_at"],
        "age_hours": round(age, 3) if age is not None else None,
        "verified": record["verified"],
        "run_id": record["run_id"],
        "snapshot_ids": record["snapshot_ids"],
    }


def newest_verified(records, max_age_hours=None, now=None):
    """The newest available, verified record, or None when there is none or it is older than max_age_hours."""
    candidates = sorted((r for r in records if r["verified"] and r["state"] == "available"), key=sort_key, reverse=True)
    if not candidates:
        return None
    age = age_hours(candidates[0], now)
    if max_age_hours is not None and (age is None or age > max_age_hours):
        return None
    return candidates[0]


def find_verified_backups(ec2, instance_ids, max_age_hours=None):
    """{instance_id: newest verified backup (backup_info dict) or None}, from one batched DescribeImages per 200 instances.

    Only images carrying cms-patching:managed=true and cms-patching:verified=true count: a later, separate run
    (an AWX job in a fresh container) finds its backups in AWS alone.
    """
    now = utc_now()
    records = describe_managed_images(ec2, list(instance_ids), verified_only=True, states=["available"]) if instance_ids else []
    grouped = by_instance(records)
    result = {}
    for instance_id in instance_ids:
        newest = newest_verified(grouped.get(instance_id, []), max_age_hours, now)
        result[instance_id] = backup_info(newest, now) if newest else None
    return result
