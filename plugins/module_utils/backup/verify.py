# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification of AMIs in flight: what makes a backup good, and one batched poll loop for all of them.

Each poll is one DescribeImages and at most one DescribeSnapshots per 200 resources, whatever the number
of images; there is no per-image waiter.
"""

from __future__ import annotations

import time

from ansible_collections.cms.patching.plugins.module_utils.aws import call_deadline
from ansible_collections.cms.patching.plugins.module_utils.backup.images import describe_images_by_id, describe_snapshot_states

PENDING, VERIFIED, FAILED = "pending", "verified", "failed"
FAILED_IMAGE_STATES = ("failed", "invalid", "error", "deregistered")


def classify(record, snapshots, expected_volumes):
    """(PENDING|VERIFIED|FAILED, reason) for one image.

    record: image_record() or None when DescribeImages does not show it yet;
    snapshots: {snapshot_id: describe_snapshot_states() entry}; expected_volumes: [(device, volume_id)] at backup start.
    """
    if record is None:
        return PENDING, "image not visible yet"
    image_id, state = record["image_id"], record["state"]
    if state in FAILED_IMAGE_STATES:
        why = f": {record['state_reason']}" if record.get("state_reason") else ""
        return FAILED, f"image {image_id} is {state}{why}"
    for snapshot_id in record["snapshot_ids"]:
        snap = snapshots.get(snapshot_id)
        if snap and snap["state"] == "error":
            why = f": {snap['message']}" if snap.get("message") else ""
            return FAILED, f"snapshot {snapshot_id} of {image_id} is in state error{why}"
    if state != "available":
        return PENDING, f"image {image_id} is {state}"
    without = [device for device, snapshot_id in record["mappings"] if not snapshot_id]
    if without:
        return FAILED, f"image {image_id} has no snapshot for {', '.join(without)}"
    for snapshot_id in record["snapshot_ids"]:
        snap = snapshots.get(snapshot_id)
        if snap is None:
            return PENDING, f"snapshot {snapshot_id} not visible yet"
        if snap["state"] != "completed":
            return PENDING, f"snapshot {snapshot_id} is {snap['state']}"
    missing = uncovered_volumes(record, snapshots, expected_volumes)
    if missing:
        return FAILED, f"image {image_id} does not cover volume(s) {', '.join(f'{v} ({d})' for d, v in missing)}"
    return VERIFIED, None


def uncovered_volumes(record, snapshots, expected_volumes):
    """Volumes of the instance with no snapshot in the image: matched by the snapshot's source volume,
    or by device name when a snapshot does not say which volume it came from."""
    source_volumes = {snapshots[s]["volume_id"] for s in record["snapshot_ids"] if snapshots.get(s, {}).get("volume_id")}
    anonymous_devices = {d for d, s in record["mappings"] if s and not snapshots.get(s, {}).get("volume_id")}
    return [(d, v) for d, v in expected_volumes if v not in source_volumes and d not in anonymous_devices]


def covers_devices(record, expected_volumes):
    """Cheap check for reusing an older backup: every current EBS device has a snapshot in the image."""
    devices = {d for d, s in record["mappings"] if s}
    return all(d in devices for d, _v in expected_volumes)


class Job:
    """One instance's backup in this run."""

    def __init__(self, instance_id, name=None, description=None, volumes=(), record=None):
        self.instance_id = instance_id
        self.name = name
        self.description = description
        self.volumes = list(volumes)
        self.record = record
        self.image_id = record["image_id"] if record else None
        self.adopted = record is not None
        self.outcome = None  # PENDING while in flight, then VERIFIED or FAILED
        self.error = None
        self.timed_out = False  # a timed-out image may still complete: it is left for a re-run to adopt


def poll(ec2, jobs):
    """Update the jobs from one batched DescribeImages and one batched DescribeSnapshots."""
    records = describe_images_by_id(ec2, [j.image_id for j in jobs])
    snapshot_ids = sorted({s for r in records.values() for s in r["snapshot_ids"]})
    snapshots = describe_snapshot_states(ec2, snapshot_ids) if snapshot_ids else {}
    for job in jobs:
        job.record = records.get(job.image_id, job.record)
        job.outcome, job.error = classify(records.get(job.image_id), snapshots, job.volumes)


def run_jobs(ec2, jobs, start, max_concurrent, wait, wait_timeout, poll_interval, sleep=time.sleep, clock=time.monotonic):
    """Start jobs (start(job) sets job.image_id, or job.outcome=FAILED) with at most max_concurrent images in flight,
    polling all in-flight images together until each is verified or failed, or wait_timeout passes.

    With wait=False the loop still polls while jobs wait for a free slot, and returns once every job is started.
    """
    queue = [j for j in jobs if not j.image_id]
    active = [j for j in jobs if j.image_id]
    deadline = clock() + wait_timeout
    while True:
        while queue and len(active) < max_concurrent:
            job = queue.pop(0)
            start(job)
            if job.image_id and job.outcome != FAILED:
                job.outcome = PENDING
                active.append(job)
        if not active or (not wait and not queue):
            return
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(poll_interval, remaining))
        with call_deadline(deadline, clock):  # no retry past the wait's deadline
            poll(ec2, active)
        active = [j for j in active if j.outcome == PENDING]
    for job in active:
        state = job.record["state"] if job.record else "not visible"
        job.error = f"timed out after {wait_timeout:g}s waiting for {job.image_id} ({state}); a re-run with the same run_id adopts it"
        job.outcome = FAILED
        job.timed_out = True
    for job in queue:
        job.outcome, job.error = FAILED, f"not started: wait_timeout ({wait_timeout:g}s) passed before a slot under max_concurrent was free"
