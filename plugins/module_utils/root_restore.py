# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback: replace each instance's root volume from its pre-patch AMI, then wait for the task and the SSM agent.

Reads are batched (DescribeInstances/DescribeImages by filter, DescribeReplaceRootVolumeTasks by id list,
DescribeInstanceInformation per 50), and read through paginators since AWS may answer any of them in pages;
CreateReplaceRootVolumeTask has no batch form, so it is one call per instance.
"""

from __future__ import annotations

import time
import uuid

from ansible_collections.cms.patching.plugins.module_utils import readers
from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.aws import call_deadline
from ansible_collections.cms.patching.plugins.module_utils.batching import EC2_ID_BATCH, SSM_BATCH, chunked, paginate
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    IMAGE_ID_RE, AwsCallError, AwsErrorHandler, PatchingError, no_success_message, require_positive, validate_instance_ids,
)
from ansible_collections.cms.patching.plugins.module_utils.models import summarize
from ansible_collections.cms.patching.plugins.module_utils.ssm.agents import ONLINE, wait_online

TASK_DONE = ("succeeded", "failed", "failed-detached")
GONE_INSTANCE_STATES = ("shutting-down", "terminated")
# ec2_root_restore's results: what counts as success for fail_on_no_success (check mode's would_restore included).
SUCCEEDED = ("succeeded", "started", "would_restore")


def validate(params):
    """[(instance id, image id)] or one line naming what is wrong; no AWS call."""
    pairs = [(i.get("instance_id"), i.get("image_id")) for i in params.get("instances") or []]
    if not pairs:
        raise PatchingError("instances is empty")
    validate_instance_ids([p[0] for p in pairs])
    bad = [f"{iid}: {img!r}" for iid, img in pairs if not isinstance(img, str) or not IMAGE_ID_RE.match(img)]
    if bad:
        raise PatchingError(f"malformed image id(s): {', '.join(bad)} (expected ami- followed by 8 or 17 hex digits)")
    require_positive(params, ("wait_timeout", "agent_online_timeout", "poll_interval"))
    return pairs


def read_instances(ec2, instance_ids):
    """{instance id: state name}; by filter (the shared reader), so a missing id is reported per instance instead of failing the call."""
    return {r["instance_id"]: r["state"] for r in readers.read_instances(ec2, instance_ids)}


def unknown_instances(ec2, instance_ids):
    """{instance id: error} for the ids EC2 does not know in this account and region, or knows as terminated.

    Read with the instance-id filter (read_instances): with InstanceIds, one unknown id fails the whole call
    (InvalidInstanceID.NotFound) without saying which; with the filter, unknown ids are simply absent.
    """
    states = read_instances(ec2, instance_ids) if instance_ids else {}
    region = getattr(getattr(ec2, "meta", None), "region_name", None)
    where = f" in {region}" if region else ""
    unknown = {}
    for iid in instance_ids:
        if iid not in states:
            unknown[iid] = f"instance {iid} not found: EC2{where} does not know it (wrong region or account, or a typo)"
        elif states[iid] in GONE_INSTANCE_STATES:
            unknown[iid] = f"instance {iid} not found: it is {states[iid]}"
    return unknown


def no_success(result):
    """The one line that fails an ec2_root_restore call in which no instance was restored, or None."""
    return no_success_message(result["results"], "status", SUCCEEDED)


def read_images(ec2, image_ids):
    """{image id: {state, tags}}."""
    found = {}
    for ids in chunked(sorted(set(image_ids)), EC2_ID_BATCH):
        for image in paginate(ec2, "describe_images", "Images", Filters=[{"Name": "image-id", "Values": ids}]):
            found[image["ImageId"]] = dict(state=image.get("State"), tags=T.tag_dict(image.get("Tags")))
    return found


def preflight_error(iid, image_id, instances, images):
    """Why this instance cannot be restored from this image, or None."""
    if iid not in instances:
        return f"instance {iid} not found"
    if instances[iid] != "running":
        return f"instance {iid} is {instances[iid]}; CreateReplaceRootVolumeTask needs a running instance"
    image = images.get(image_id)
    if image is None:
        return f"image {image_id} not found"
    if image["state"] != "available":
        return f"image {image_id} is {image['state']}, not available"
    source = image["tags"].get(T.SOURCE_INSTANCE)
    if source and source != iid:
        return f"image {image_id} is the backup of {source}, not of {iid}: refusing to restore it onto another instance"
    return None


@AwsErrorHandler.common_error_handler("ec2:CreateReplaceRootVolumeTask")
def create_task(ec2, iid, image_id, delete_replaced, run_id):
    """The task id; AwsCallError when AWS refuses it."""
    task_tags = [{"Key": T.MANAGED, "Value": "true"}] + ([{"Key": T.RUN_ID, "Value": run_id}] if run_id else [])
    return ec2.create_replace_root_volume_task(
        aws_retry=True, InstanceId=iid, ImageId=image_id, DeleteReplacedRootVolume=delete_replaced,
        ClientToken=str(uuid.uuid4()),  # one per call: a retried request cannot start a second task
        TagSpecifications=[{"ResourceType": "replace-root-volume-task", "Tags": task_tags}],
    )["ReplaceRootVolumeTask"]["ReplaceRootVolumeTaskId"]


def start_task(ec2, iid, image_id, delete_replaced, run_id):
    """(task id, None) or (None, error)."""
    try:
        return create_task(ec2, iid, image_id, delete_replaced, run_id), None
    except AwsCallError as e:
        return None, e.line(iid)


@AwsErrorHandler.common_error_handler("ec2:DescribeReplaceRootVolumeTasks")
def describe_tasks(ec2, task_ids):
    """{task id: TaskState}: one call per 50 ids."""
    states = {}
    for ids in chunked(task_ids, SSM_BATCH):
        for task in paginate(ec2, "describe_replace_root_volume_tasks", "ReplaceRootVolumeTasks", ReplaceRootVolumeTaskIds=ids):
            states[task["ReplaceRootVolumeTaskId"]] = task.get("TaskState")
    return states


def wait_tasks(ec2, task_ids, timeout, poll_interval, clock=time.monotonic, sleep=time.sleep):
    """({task id: last TaskState}, last error): one DescribeReplaceRootVolumeTasks per 50 open tasks per poll."""
    states = {t: None for t in task_ids}
    error = None
    deadline = clock() + timeout
    while True:
        open_ids = [t for t, s in states.items() if s not in TASK_DONE]
        if not open_ids:
            break
        try:
            with call_deadline(deadline, clock):  # no retry past the wait's deadline
                states.update(describe_tasks(ec2, open_ids))
        except AwsCallError as e:
            error = str(e)
        if all(s in TASK_DONE for s in states.values()) or clock() >= deadline:
            break
        sleep(min(poll_interval, max(deadline - clock(), 0)))
    return states, error


@AwsErrorHandler.common_error_handler("reading instances and images before the restore")
def read_before_restore(ec2, pairs):
    """({instance id: state}, {image id: {state, tags}}); AwsCallError, which fails the module, before any change."""
    return read_instances(ec2, [p[0] for p in pairs]), read_images(ec2, [p[1] for p in pairs])


def run_restore(ec2, ssm, params, check_mode, clock=time.monotonic, sleep=time.sleep):
    pairs = validate(params)
    instances, images = read_before_restore(ec2, pairs)
    results = []
    for iid, image_id in pairs:
        res = dict(instance_id=iid, image_id=image_id, task_id=None, task_state=None, agent_online=None, status=None,
                   error=preflight_error(iid, image_id, instances, images), error_code=None)
        if res["error"]:
            res["status"] = "failed"
        elif check_mode:
            res["status"] = "would_restore"
        else:
            try:
                res["task_id"] = create_task(ec2, iid, image_id, params["delete_replaced_root_volume"], params.get("run_id"))
            except AwsCallError as e:
                res["error"], res["error_code"] = e.line(iid), e.code
            res["status"] = "started" if res["task_id"] else "failed"
        results.append(res)
    started = [r for r in results if r["task_id"]]
    if started and params["wait"]:
        wait_for_restores(ssm, ec2, started, params, clock, sleep)
    return dict(changed=bool(started) or (check_mode and any(r["status"] == "would_restore" for r in results)),
                results=results, summary=summarize(results, "status"))


def wait_for_restores(ssm, ec2, started, params, clock, sleep):
    states, error = wait_tasks(ec2, [r["task_id"] for r in started], params["wait_timeout"], params["poll_interval"], clock, sleep)
    for res in started:
        res["task_state"] = states[res["task_id"]]
        if res["task_state"] != "succeeded":
            res["status"] = "failed"
            res["error"] = (f"replace-root-volume task {res['task_id']} ended {res['task_state']}" if res["task_state"] in TASK_DONE else
                            f"replace-root-volume task {res['task_id']} still {res['task_state'] or 'unknown'} after "
                            f"wait_timeout {params['wait_timeout']}s" + (f" ({error})" if error else ""))
    restored = [r for r in started if r["task_state"] == "succeeded"]
    if not restored:
        return
    pings, error = wait_online(ssm, [r["instance_id"] for r in restored], params["agent_online_timeout"], params["poll_interval"], clock, sleep)
    for res in restored:
        res["agent_online"] = pings[res["instance_id"]] == ONLINE
        res["status"] = "succeeded" if res["agent_online"] else "failed"
        if not res["agent_online"]:
            res["error"] = (f"root volume replaced, but the SSM agent is not Online within agent_online_timeout "
                            f"{params['agent_online_timeout']}s (last PingStatus: {pings[res['instance_id']] or error or 'unknown'})")
