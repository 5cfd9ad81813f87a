# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ami_backup_verify workflow: validate, look up, reuse or adopt or create, verify, tag, clean up, apply retention.

Everything the tool needs to know about earlier runs is read from AWS tags, so a re-run in a fresh AWX
container is safe: it reuses verified backups and adopts images still in flight instead of creating more.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils.backup import naming as N
from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.backup.images import (
    age_hours, aws_call, by_instance, describe_managed_images, ebs_backed, image_record, instance_volumes, name_tag, newest_verified,
    require_instances, sort_key,
)
from ansible_collections.cms.patching.plugins.module_utils.backup.retention import prune_images, select_for_retention, sweep_orphaned_snapshots
from ansible_collections.cms.patching.plugins.module_utils.backup.verify import FAILED, FAILED_IMAGE_STATES, VERIFIED, Job, covers_devices, run_jobs
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    AwsCallError, AwsErrorHandler, PatchingError, no_success_message, validate_instance_ids,
)
from ansible_collections.cms.patching.plugins.module_utils.models import Backup, summarize

RESERVED_TAG_PREFIXES = (T.PREFIX, "aws:")
# Every status but failed is a success for fail_on_no_success: a backup made, reused or (check mode) planned, and with
# create=false the answer existing or missing.
SUCCEEDED = ("created", "reused", "would_create", "existing", "missing")


def validate_params(params):
    """Every input check that needs no AWS call; raises PatchingError with one line."""
    ids = params["instance_ids"]
    if not ids:
        raise PatchingError("instance_ids must name at least one instance")
    validate_instance_ids(ids)
    N.validate_name_template(params["name"])
    N.validate_description_template(params["description"])
    if params.get("run_id") is not None:
        N.validate_run_id(params["run_id"])
    for option in ("wait_timeout", "poll_interval", "max_concurrent", "max_age_hours", "retention_count", "retention_days"):
        value = params.get(option)
        if value is not None and value <= 0:
            raise PatchingError(f"{option} must be greater than 0, got {value:g}")
    reserved = sorted(str(k) for k in params.get("tags") or {} if str(k).startswith(RESERVED_TAG_PREFIXES))
    if reserved:
        raise PatchingError(f"tags: {', '.join(reserved)} use a reserved prefix ({', '.join(RESERVED_TAG_PREFIXES)})")


def plan_instance(records, run_id, volumes, max_age_hours=None, wait_timeout=3600, now=None):
    """("reuse"|"adopt"|"create", record or None) for one instance, from its managed images (newest first).

    reuse: a verified backup of this run_id, or one younger than max_age_hours that covers the current volumes;
    adopt: an unverified image of this run_id, or of any run when started within wait_timeout (a killed run's);
    create: anything else.
    """
    usable = [r for r in sorted(records, key=sort_key, reverse=True) if r["state"] not in FAILED_IMAGE_STATES]
    same_run = [r for r in usable if r["run_id"] == run_id]
    verified_same_run = [r for r in same_run if r["verified"] and r["state"] == "available"]
    if verified_same_run:
        return "reuse", verified_same_run[0]
    recent = newest_verified(usable, max_age_hours, now) if max_age_hours else None
    if recent and covers_devices(recent, volumes):
        return "reuse", recent
    if same_run:
        return "adopt", same_run[0]
    in_flight = [r for r in usable if not r["verified"] and (age_hours(r, now) or 0.0) * 3600 < wait_timeout]
    if in_flight:
        return "adopt", in_flight[0]
    return "create", None


def creation_tags(instance_id, run_id, created_at, extra):
    tags = dict(extra or {})
    tags.update({T.MANAGED: "true", T.SOURCE_INSTANCE: instance_id, T.RUN_ID: run_id, T.CREATED_AT: created_at})
    as_list = [{"Key": k, "Value": str(v)} for k, v in tags.items()]
    return [{"ResourceType": "image", "Tags": as_list}, {"ResourceType": "snapshot", "Tags": as_list}]


def no_success(result):
    """The one line that fails an ami_backup_verify call in which every backup failed, or None."""
    return no_success_message(result["backups"], "status", SUCCEEDED)


@AwsErrorHandler.common_error_handler("ec2:CreateImage")
def create_image(ec2, job, params, run_id, created_at):
    return ec2.create_image(
        InstanceId=job.instance_id, Name=job.name, Description=job.description, NoReboot=params["no_reboot"],
        TagSpecifications=creation_tags(job.instance_id, run_id, created_at, params.get("tags")), aws_retry=True,
    )["ImageId"]


def start_creation(ec2, job, params, run_id, created_at):
    """CreateImage for one instance; a refusal fails only this instance (its AWS error code kept in job.error_code)."""
    try:
        job.image_id = create_image(ec2, job, params, run_id, created_at)
    except AwsCallError as e:
        mine = _own_image_named(ec2, job) if e.code == "InvalidAMIName.Duplicate" else None
        if mine:  # a retried CreateImage whose first attempt did succeed: that image is this backup
            job.image_id, job.record = mine["image_id"], mine
            return
        job.outcome, job.error, job.error_code = FAILED, e.line(job.instance_id), e.code


def _own_image_named(ec2, job):
    """The tool's image of this instance with the job's name, if the name is taken by one."""
    images = aws_call("ec2:DescribeImages", job.name, paginate, ec2, "describe_images", "Images", Owners=["self"],
                      Filters=[{"Name": "name", "Values": [job.name]}])
    records = [image_record(i) for i in images]
    return next((r for r in records if r["managed"] and r["instance_id"] == job.instance_id and r["state"] not in FAILED_IMAGE_STATES), None)


def tag_verified(ec2, jobs):
    """cms-patching:verified=true on the verified images and their snapshots: one CreateTags per 200 resources."""
    resources = [(j, r) for j in jobs for r in [j.image_id] + j.record["snapshot_ids"]]
    for chunk in chunked(resources, EC2_ID_BATCH):
        try:
            tag_resources(ec2, [r for _j, r in chunk])
        except AwsCallError as e:
            for job, _r in chunk:
                job.outcome, job.error = FAILED, e.line(job.image_id) + " (the image was left for a re-run)"
                job.error_code = e.code
                job.timed_out = True  # verified but untagged: keep it, a re-run adopts and tags it
        else:
            for job, _r in chunk:
                job.record["verified"] = job.outcome == VERIFIED


@AwsErrorHandler.common_error_handler("ec2:CreateTags")
def tag_resources(ec2, resource_ids):
    ec2.create_tags(Resources=resource_ids, Tags=[{"Key": T.VERIFIED, "Value": "true"}], aws_retry=True)


def run_backup(ec2, params, check_mode=False, sleep=None):
    """The whole module: returns dict(changed, run_id, backups, pruned, summary)."""
    validate_params(params)
    ids = list(params["instance_ids"])
    now = N.utc_now()
    run_id = params.get("run_id") or N.generate_run_id(now)
    instances = require_instances(ec2, ids) if params["create"] else {}
    images = by_instance(describe_managed_images(ec2, ids))
    jobs, backups = [], {}
    for iid in ids:
        if params["create"]:
            decision = _decide(iid, instances[iid], images.get(iid, []), params, run_id, now)
            if isinstance(decision, Job):
                jobs.append(decision)
            else:
                backups[iid] = decision
        else:
            newest = newest_verified(images.get(iid, []))
            backups[iid] = _entry(iid, newest, "existing" if newest else "missing")
    stale = [(r, "failed") for iid in ids for r in images.get(iid, []) if r["state"] in FAILED_IMAGE_STATES]
    pruned = prune_images(ec2, stale, check_mode, params["poll_interval"])
    if jobs and not check_mode:
        created_at = N.iso(now)
        run_jobs(ec2, jobs, lambda job: start_creation(ec2, job, params, run_id, created_at), params["max_concurrent"],
                 params["wait"], params["wait_timeout"], params["poll_interval"], **({"sleep": sleep} if sleep else {}))
        tag_verified(ec2, [j for j in jobs if j.outcome == VERIFIED])
        broken = [j for j in jobs if j.outcome == FAILED and j.record and not j.timed_out]
        removed = prune_images(ec2, [(j.record, "failed") for j in broken], poll_interval=params["poll_interval"])
        gone = {p["image_id"] for p in removed if not p["error"]}
        for job in broken:
            job.record["state"] = "deregistered" if job.image_id in gone else job.record["state"]
        pruned += removed
    for job in jobs:
        backups[job.instance_id] = _job_entry(job, run_id, check_mode)
    if params["retention_count"] or params["retention_days"]:
        pruned += _apply_retention(ec2, ids, images, backups, params, now, check_mode)
    if pruned or params["retention_count"] or params["retention_days"]:
        # Snapshots an earlier run left behind (killed mid-prune, or still in use when it gave up) go now.
        pruned += sweep_orphaned_snapshots(ec2, ids, check_mode)
    results = [backups[i] for i in ids]
    summary = summarize(results, "status")
    summary.update(pruned_images=sum(1 for p in pruned if p["image_id"] and not p["error"]),
                   pruned_snapshots=sum(len(p["snapshot_ids"]) for p in pruned if not p["error"]))
    changed = bool(pruned) or any(b["status"] in ("created", "would_create") for b in results)
    return dict(changed=changed, run_id=run_id, backups=results, pruned=pruned, summary=summary)


def _decide(instance_id, instance, records, params, run_id, now):
    """A finished entry (reused, or failed before creating) or a Job to run."""
    volumes = instance_volumes(instance)
    if not ebs_backed(instance):
        return _entry(instance_id, None, "failed", error=f"{instance_id} has an instance-store root device; only EBS-backed instances can be imaged")
    action, record = plan_instance(records, run_id, volumes, params["max_age_hours"], params["wait_timeout"], now)
    if action == "reuse":
        return _entry(instance_id, record, "reused")
    values = N.placeholder_values(instance_id, name_tag(instance), run_id, now)
    return Job(instance_id, N.render_name(params["name"], values), N.render_description(params["description"], values), volumes,
               record if action == "adopt" else None)


def _entry(instance_id, record, status, error=None):
    backup = Backup(instance_id=instance_id, status=status, error=error)
    if record:
        backup.image_id, backup.name, backup.state = record["image_id"], record["name"], record["state"]
        backup.snapshot_ids, backup.verified, backup.created_at = list(record["snapshot_ids"]), record["verified"], record["created_at"]
    result = backup.to_dict()
    result.update(run_id=record["run_id"] if record else None, adopted=False, error_code=None)
    return result


def _job_entry(job, run_id, check_mode):
    if check_mode:
        entry = _entry(job.instance_id, job.record, "would_create")
        entry["name"] = job.record["name"] if job.record else job.name
        entry.update(adopted=job.adopted, run_id=job.record["run_id"] if job.record else run_id)
        return entry
    entry = _entry(job.instance_id, job.record, "failed" if job.outcome == FAILED else "created", job.error)
    entry.update(error_code=getattr(job, "error_code", None), image_id=job.image_id, name=job.record["name"] if job.record else job.name, adopted=job.adopted,
                 verified=job.outcome == VERIFIED and bool(job.record and job.record["verified"]),
                 run_id=job.record["run_id"] if job.record and job.record["run_id"] else run_id)
    entry["state"] = entry["state"] or ("pending" if job.image_id else None)
    return entry


def _apply_retention(ec2, ids, images, backups, params, now, check_mode):
    """Retention per instance; this run's backup (created, adopted, reused or about to be) is kept and counted."""
    selections = []
    for iid in ids:
        entry = backups[iid]
        fresh = entry["status"] == "would_create" or (entry["status"] == "created" and entry["verified"])
        keep = {entry["image_id"]} if entry["image_id"] else set()
        records = images.get(iid, [])
        if fresh:  # an adopted image is in records, still unverified there: count it as the verified backup it is
            records = [dict(r, verified=True, state="available") if r["image_id"] in keep else r for r in records]
        newer = 1 if fresh and not any(r["image_id"] in keep for r in records) else 0
        selections += select_for_retention(records, keep, params["retention_count"], params["retention_days"], now, newer,
                                           params.get("retention_min_age") or 0)
    return prune_images(ec2, selections, check_mode, params["poll_interval"])
