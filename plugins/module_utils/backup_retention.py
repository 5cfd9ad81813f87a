# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention and clean-up of the tool's own AMIs and snapshots.

Only images and snapshots tagged cms-patching:managed=true are ever deregistered or deleted: the selection
works on records found through that tag, and prune_images() checks it again on every image and snapshot.
"""

from __future__ import annotations

from datetime import timedelta

from ansible_collections.cms.patching.plugins.module_utils.backup import describe_snapshot_states, sort_key
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, error_code, is_aws_error

GONE_IMAGE_CODES = ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable")
GONE_SNAPSHOT_CODES = ("InvalidSnapshot.NotFound",)


def select_for_retention(records, keep_ids, retention_count=None, retention_days=None, now=None, newer_backups=0):
    """[(record, reason)] of one instance's images that retention removes.

    records: the instance's managed image records; keep_ids: images this run produced or reused (never removed);
    newer_backups: verified backups of this run that are not in records (they count towards retention_count).
    Rules: pending images are never touched (a run may be creating them); retention_count keeps the N newest verified
    backups; retention_days removes available images older than N days; whatever the options, the newest verified
    backup of the instance is kept when this run produced none.
    """
    candidates = [r for r in records if r["state"] == "available" and r["image_id"] not in keep_ids]
    verified = sorted((r for r in records if r["state"] == "available" and r["verified"]), key=sort_key, reverse=True)
    protected = set(keep_ids)
    if not newer_backups and verified:
        protected.add(verified[0]["image_id"])
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


def prune_images(ec2, selections, check_mode=False):
    """Deregister each selected image, then delete its snapshots that carry the ownership tag.

    selections: [(record, reason)]. Returns one dict per image; a failure is reported on its entry, never raised,
    so one stuck image does not stop the others. In check mode nothing is changed and the entries say what would be.
    """
    owned = [(r, why) for r, why in selections if r["managed"]]
    snapshot_ids = sorted({s for r, _why in owned for s in r["snapshot_ids"]})
    snapshots = describe_snapshot_states(ec2, snapshot_ids) if snapshot_ids else {}
    results = []
    for record, reason in owned:
        mine = [s for s in record["snapshot_ids"] if snapshots.get(s, {}).get("managed")]
        entry = {
            "instance_id": record["instance_id"], "image_id": record["image_id"], "name": record["name"],
            "created_at": record["created_at"], "reason": reason, "snapshot_ids": mine,
            "kept_snapshot_ids": [s for s in record["snapshot_ids"] if s not in mine], "error": None,
        }
        if not check_mode:
            entry["error"] = _deregister_with_snapshots(ec2, record["image_id"], mine)
        results.append(entry)
    return results


def _deregister_with_snapshots(ec2, image_id, snapshot_ids):
    """None on success, else the first one-line error; snapshots are only deleted once the image is gone."""
    try:
        ec2.deregister_image(ImageId=image_id, aws_retry=True)
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        if error_code(e) not in GONE_IMAGE_CODES:
            return aws_error_message(e, "ec2:DeregisterImage", image_id)
    errors = []
    for snapshot_id in snapshot_ids:
        try:
            ec2.delete_snapshot(SnapshotId=snapshot_id, aws_retry=True)
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            if error_code(e) not in GONE_SNAPSHOT_CODES:
                errors.append(aws_error_message(e, "ec2:DeleteSnapshot", snapshot_id))
    return "; ".join(errors) or None
