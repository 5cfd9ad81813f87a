# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention and clean-up of the tool's own AMIs and snapshots.

Only images and snapshots tagged cms-patching:managed=true are ever deregistered or deleted: the selection
works on records found through that tag, and prune_images() checks it again on every image and snapshot.

DeleteSnapshot right after DeregisterImage can fail with InvalidSnapshot.InUse until the deregistration settles. So an
image whose snapshots are all the tool's is deregistered with DeleteAssociatedSnapshots=True (EC2 deletes them itself);
otherwise its own snapshots are deleted one by one, retried for a few polls while still in use. Whatever is left, and
any tagged snapshot an earlier run left behind, is found by sweep_orphaned_snapshots(): the tool's snapshots that no
image uses any more.
"""

from __future__ import annotations

import time
from datetime import timedelta

try:
    from botocore.exceptions import ParamValidationError
except ImportError:  # handled by AnsibleAWSModule's own boto3 check
    ParamValidationError = None

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.backup.images import aws_call, describe_snapshot_states, sort_key
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, error_code, is_aws_error

GONE_IMAGE_CODES = ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable")
GONE_SNAPSHOT_CODES = ("InvalidSnapshot.NotFound",)
IN_USE_CODES = ("InvalidSnapshot.InUse",)
# An endpoint that does not know DeregisterImage's DeleteAssociatedSnapshots (EC2 API common client errors).
UNKNOWN_PARAMETER_CODES = ("UnknownParameter", "InvalidParameter")
# Polls spent retrying a snapshot still in use by its just-deregistered image before leaving it to the sweep.
SETTLE_POLLS = 3
# A pending snapshot belongs to an image still being created: only finished ones can be orphans.
ORPHAN_STATES = ("completed", "error")


def select_for_retention(records, keep_ids, retention_count=None, retention_days=None, now=None, newer_backups=0, min_age_seconds=0):
    """[(record, reason)] of one instance's images that retention removes.

    records: the instance's managed image records; keep_ids: images this run produced or reused (never removed);
    newer_backups: verified backups of this run that are not in records (they count towards retention_count).
    Rules: pending images are never touched (a run may be creating them); retention_count keeps the N newest verified
    backups; retention_days removes available images older than N days; whatever the options, the newest verified
    backup of the instance is kept when this run produced none; an image younger than min_age_seconds (the patching
    role's bake time) is never removed, since a rollback during a bake restores from it.
    """
    candidates = [r for r in records if r["state"] == "available" and r["image_id"] not in keep_ids]
    verified = sorted((r for r in records if r["state"] == "available" and r["verified"]), key=sort_key, reverse=True)
    protected = set(keep_ids)
    if not newer_backups and verified:
        protected.add(verified[0]["image_id"])
    if min_age_seconds and now is not None:
        young = now - timedelta(seconds=min_age_seconds)
        protected |= {r["image_id"] for r in records if r["created"] and r["created"] > young}
    selected = {}
    if retention_count is not None:
        kept = max(0, retention_count - newer_backups)
        for record in verified[kept:]:
            selected.setdefault(record["image_id"], (record, "retention_count"))
    if retention_days is not None and now is not None:
        cutoff = now - timedelta(days=retention_days)
        for record in candidates:
            if record["created"] and record["created"] < cutoff:
                selected.setdefault(record["image_id"], (record, "retention_days"))
    chosen = [v for k, v in selected.items() if k not in protected]
    return sorted(chosen, key=lambda pair: sort_key(pair[0]))


def prune_images(ec2, selections, check_mode=False, poll_interval=15, settle_polls=SETTLE_POLLS, sleep=time.sleep):
    """Deregister each selected image, then delete its snapshots that carry the ownership tag.

    selections: [(record, reason)]. Returns one dict per image; a failure is reported on its entry, never raised,
    so one stuck image does not stop the others. In check mode nothing is changed and the entries say what would be.
    A snapshot still in use by its deregistered image is retried every poll_interval, settle_polls times at most.
    """
    owned = [(r, why) for r, why in selections if r["managed"]]
    snapshot_ids = sorted({s for r, _why in owned for s in r["snapshot_ids"]})
    snapshots = describe_snapshot_states(ec2, snapshot_ids) if snapshot_ids else {}
    results, in_use = [], []
    for record, reason in owned:
        mine = [s for s in record["snapshot_ids"] if snapshots.get(s, {}).get("managed")]
        entry = {
            "instance_id": record["instance_id"], "image_id": record["image_id"], "name": record["name"],
            "created_at": record["created_at"], "reason": reason, "snapshot_ids": mine,
            "kept_snapshot_ids": [s for s in record["snapshot_ids"] if s not in mine], "error": None, "note": None,
        }
        if not check_mode:
            # DeleteAssociatedSnapshots deletes every snapshot of the image: only when all of them are the tool's.
            entry["error"], busy, shared = _deregister_with_snapshots(ec2, record["image_id"], mine,
                                                                      delete_associated=mine == record["snapshot_ids"])
            in_use.extend((entry, s) for s in busy)
            _keep_shared(entry, shared)
        results.append(entry)
    _settle(ec2, in_use, poll_interval, settle_polls, sleep)
    return results


def _deregister_with_snapshots(ec2, image_id, snapshot_ids, delete_associated=False):
    """(None or the first one-line error, [snapshots still in use], [snapshots another image uses]); snapshots are only
    deleted once the image is gone."""
    try:
        deleted, shared = _deregister(ec2, image_id, delete_associated)
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        if error_code(e) not in GONE_IMAGE_CODES:
            return aws_error_message(e, "ec2:DeregisterImage", image_id), [], []
        deleted, shared = set(), set()
    errors, in_use = [], []
    for snapshot_id in snapshot_ids:
        if snapshot_id in deleted or snapshot_id in shared:
            continue
        code, message = _delete_snapshot(ec2, snapshot_id)
        if code in IN_USE_CODES:
            in_use.append(snapshot_id)
        elif message:
            errors.append(message)
    return "; ".join(errors) or None, in_use, sorted(s for s in snapshot_ids if s in shared)


def _keep_shared(entry, shared):
    """Snapshots EC2 skipped because another image uses them: kept, not an error (the sweep leaves them alone too)."""
    if not shared:
        return
    entry["snapshot_ids"] = [s for s in entry["snapshot_ids"] if s not in shared]
    entry["kept_snapshot_ids"] = entry["kept_snapshot_ids"] + list(shared)
    entry["note"] = f"kept {', '.join(shared)}: another image still uses it (DeregisterImage skipped it)"


def _deregister(ec2, image_id, delete_associated):
    """DeregisterImage; (ids of the snapshots EC2 deleted with it, ids it skipped because another image uses them).

    EC2 API Reference, DeregisterImage, DeleteSnapshotResults: ReturnCode success, skipped (the snapshot is shared with
    another image) or missing-permissions (left to the DeleteSnapshot that follows, which reports the error)."""
    if delete_associated:
        try:
            answer = ec2.deregister_image(ImageId=image_id, DeleteAssociatedSnapshots=True, aws_retry=True)
        except Exception as e:  # pylint: disable=broad-except
            too_old = ParamValidationError is not None and isinstance(e, ParamValidationError)  # botocore without the parameter
            if not too_old and not (is_aws_error(e) and error_code(e) in UNKNOWN_PARAMETER_CODES):
                raise
        else:
            results = answer.get("DeleteSnapshotResults") or []
            return ({r.get("SnapshotId") for r in results if r.get("ReturnCode") == "success"},
                    {r.get("SnapshotId") for r in results if r.get("ReturnCode") == "skipped"})
    ec2.deregister_image(ImageId=image_id, aws_retry=True)
    return set(), set()


def _delete_snapshot(ec2, snapshot_id):
    """(error code or None, one-line error or None); a snapshot already gone is no error."""
    try:
        ec2.delete_snapshot(SnapshotId=snapshot_id, aws_retry=True)
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        code = error_code(e)
        return code, None if code in GONE_SNAPSHOT_CODES else aws_error_message(e, "ec2:DeleteSnapshot", snapshot_id)
    return None, None


def _settle(ec2, in_use, poll_interval, polls, sleep):
    """Retry [(entry, snapshot id)] refused InvalidSnapshot.InUse after a plain DeregisterImage (the deregistration has
    not settled yet, or another image uses the snapshot); what stays in use is an entry error."""
    for _poll in range(polls):
        if not in_use:
            return
        sleep(poll_interval)
        left = []
        for entry, snapshot_id in in_use:
            code, message = _delete_snapshot(ec2, snapshot_id)
            if code in IN_USE_CODES:
                left.append((entry, snapshot_id))
            elif message:
                entry["error"] = "; ".join(filter(None, [entry["error"], message]))
        in_use = left
    for entry, snapshot_id in in_use:
        note = (f"ec2:DeleteSnapshot failed for {snapshot_id}: still in use after deregistering {entry['image_id']} "
                "(not settled yet, or another image uses it); a later orphan sweep deletes it once no image uses it")
        entry["error"] = "; ".join(filter(None, [entry["error"], note]))


def sweep_orphaned_snapshots(ec2, instance_ids, check_mode=False):
    """Delete the tool's snapshots of these instances that no image uses any more; one entry per instance.

    Orphans come from an earlier run that was killed between DeregisterImage and DeleteSnapshot, or whose snapshot
    stayed in use too long. Only snapshots tagged cms-patching:managed=true are candidates (checked again on each),
    only finished ones (completed or error), and only when DescribeImages finds no image of this account using them.
    """
    candidates = {}
    for chunk in chunked(sorted(set(instance_ids)), EC2_ID_BATCH):
        found = aws_call("ec2:DescribeSnapshots", None, paginate, ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"],
                         Filters=[{"Name": "tag:" + T.MANAGED, "Values": ["true"]}, {"Name": "tag:" + T.SOURCE_INSTANCE, "Values": chunk}])
        for snap in found:
            tags = T.tag_dict(snap.get("Tags"))
            if T.is_owned(tags) and tags.get(T.SOURCE_INSTANCE) in chunk and snap.get("State") in ORPHAN_STATES:
                candidates[snap["SnapshotId"]] = tags[T.SOURCE_INSTANCE]
    used = set()
    for chunk in chunked(sorted(candidates), EC2_ID_BATCH):
        images = aws_call("ec2:DescribeImages", None, paginate, ec2, "describe_images", "Images", Owners=["self"],
                          Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": chunk}])
        used.update(m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", []) if (m.get("Ebs") or {}).get("SnapshotId"))
    entries = {}
    for snapshot_id in sorted(s for s in candidates if s not in used):
        entry = entries.setdefault(candidates[snapshot_id], {
            "instance_id": candidates[snapshot_id], "image_id": None, "name": None, "created_at": None, "reason": "orphaned",
            "snapshot_ids": [], "kept_snapshot_ids": [], "error": None, "note": None})
        code, message = (None, None) if check_mode else _delete_snapshot(ec2, snapshot_id)
        if code in IN_USE_CODES:  # its image's deregistration has not settled: a later sweep deletes it
            continue
        if message:
            entry["error"] = "; ".join(filter(None, [entry["error"], message]))
        else:
            entry["snapshot_ids"].append(snapshot_id)
    return [e for e in entries.values() if e["snapshot_ids"] or e["error"]]
