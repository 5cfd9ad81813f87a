"""CreateImage with pending images and per-volume tagged snapshots, plus replace-root-volume tasks.

States are computed from timestamps at read time (lazy), so nothing runs in the background.
"""
from __future__ import annotations

import datetime
import uuid

from moto.ec2.exceptions import EC2ClientError, InvalidSnapshotInUse
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
from moto.ec2.responses import EC2Response
from moto.ec2.utils import random_ami_id

from . import iam, state
from .ec2 import _decode_token, _encode_token, tags_of

_orig_bdm = Ami.block_device_mappings
TASKS: dict[tuple[str, str], dict[str, dict]] = {}


def _ami_state_get(self):
    sim = self.__dict__.get("_sim")
    if sim is None:
        return self.__dict__.get("_state", "available")
    if state.now() < sim["ready_at"]:
        return "pending"
    return "failed" if sim["fail"] else "available"


def _ami_state_set(self, value):
    # An explicit state change (disable, deregister, ...) ends the simulated lifecycle.
    self.__dict__.pop("_sim", None)
    self.__dict__["_state"] = value


def _ami_state_reason(self):
    if self.state == "failed":
        return {"Code": "Client.InternalError", "Message": "Client.InternalError: simulated ami-fail fault"}
    return None


def _ami_bdm(self):
    sim = self.__dict__.get("_sim_bdm")
    return sim if sim is not None else _orig_bdm.fget(self)


def _snap_status_get(self):
    sim = self.__dict__.get("_sim")
    if sim is None:
        return self.__dict__.get("_status", "completed")
    if state.now() < sim["ready_at"]:
        return "pending"
    return "error" if sim["error"] else "completed"


def _snap_status_set(self, value):
    self.__dict__.pop("_sim", None)
    self.__dict__["_status"] = value


def _snap_progress(self):
    return "100%" if _snap_status_get(self) != "pending" else "50%"


def _tag_specs(specs: list, allowed: tuple) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for spec in specs or []:
        rtype = spec.get("ResourceType")
        if rtype not in allowed:
            raise EC2ClientError("InvalidParameterValue", f"'{rtype}' is not a valid taggable resource type for this operation.")
        out.setdefault(rtype, {}).update({t["Key"]: t.get("Value", "") for t in spec.get("Tags", [])})
    return out


def create_image(self):
    instance_id = self._get_param("InstanceId")
    name = self._get_param("Name")
    description = self._get_param("Description", "")
    tags = _tag_specs(self._get_param("TagSpecifications", []), ("image", "snapshot"))
    self.error_on_dryrun()
    backend = self.ec2_backend
    instance = backend.get_instance(instance_id)
    if instance.root_device_type != "ebs":
        raise EC2ClientError("UnsupportedOperation",
                             f"The instance '{instance_id}' is not backed by Amazon EBS; CreateImage supports EBS-backed instances only.")
    for ami in backend.amis.values():
        if ami.name == name and ami.owner_id == backend.account_id:
            raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")
    faults = state.parse_faults(tags_of(instance).get("sim:fault"))
    ready_at = state.now() + state.setting("image_pending_s")
    ami_id = random_ami_id()
    ami = Ami(backend, ami_id, instance=instance, name=name, description=description, root_device_type="ebs",
              root_device_name=instance.root_device_name)
    # moto makes a throwaway 15 GiB snapshot per AMI; we replace it with one snapshot per attached EBS volume.
    backend.snapshots.pop(ami.ebs_snapshot.id, None)
    mappings = []
    devices = list(instance.get_block_device_mapping)
    for pos, (device, blk) in enumerate(devices):
        volume = backend.get_volume(blk.volume_id)
        snap = backend.create_snapshot(volume.id, f"Created by CreateImage({instance_id}) for {ami_id}", from_ami=ami_id)
        snap.__dict__["_sim"] = {"ready_at": ready_at, "error": "snapshot-error" in faults and pos == len(devices) - 1}
        if tags.get("snapshot"):
            backend.create_tags([snap.id], tags["snapshot"])
        mappings.append({"DeviceName": device, "Ebs": {
            "SnapshotId": snap.id, "VolumeSize": volume.size, "DeleteOnTermination": bool(blk.delete_on_termination),
            "VolumeType": getattr(volume, "volume_type", None) or "gp3", "Encrypted": bool(volume.encrypted)}})
        if pos == 0:
            ami.ebs_snapshot = snap
    ami.__dict__["_sim_bdm"] = mappings
    ami.__dict__["_sim"] = {"ready_at": ready_at, "fail": "ami-fail" in faults}
    if tags.get("image"):
        backend.create_tags([ami_id], tags["image"])
    backend.amis[ami_id] = ami
    return _action_result({"ImageId": ami_id})


def _action_result(value):
    from moto.core.responses import ActionResult  # pylint: disable=import-outside-toplevel
    return ActionResult(value)


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _task_view(task: dict) -> dict:
    elapsed = state.now() - task["created"]
    duration = task["duration"]
    view = {k: v for k, v in task.items() if k[0].isupper()}
    view["StartTime"] = _iso(task["created"])
    if elapsed >= duration:
        view["TaskState"] = "failed" if task["fail"] else "succeeded"
        view["CompleteTime"] = _iso(task["created"] + duration)
    else:
        view["TaskState"] = "pending" if elapsed < duration / 3 else "in-progress"
    return view


def create_replace_root_volume_task(self):
    instance_id = self._get_param("InstanceId")
    image_id = self._get_param("ImageId")
    snapshot_id = self._get_param("SnapshotId")
    delete_old = bool(self._get_param("DeleteReplacedRootVolume", False))
    tags = _tag_specs(self._get_param("TagSpecifications", []), ("replace-root-volume-task",)).get("replace-root-volume-task", {})
    self.error_on_dryrun()
    backend = self.ec2_backend
    instance = backend.get_instance(instance_id)
    if instance.state != "running":
        raise EC2ClientError("IncorrectInstanceState", f"The instance '{instance_id}' is not in a state from which it can be modified.")
    if image_id:
        image = backend.describe_images(ami_ids=[image_id])[0]
        if image.state != "available":
            raise EC2ClientError("InvalidAMIID.Unavailable", f"The image '{image_id}' is not available.")
    if snapshot_id:
        backend.get_snapshot(snapshot_id)
    created = state.now()
    task = {
        "ReplaceRootVolumeTaskId": "replacevol-" + uuid.uuid4().hex[:17], "InstanceId": instance_id,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()], "DeleteReplacedRootVolume": delete_old,
        "created": created, "duration": state.setting("replace_root_s"), "reboot_s": state.setting("reboot_s"),
        "fail": "rollback-fail" in state.parse_faults(tags_of(instance).get("sim:fault")),
    }
    if image_id:
        task["ImageId"] = image_id
    if snapshot_id:
        task["SnapshotId"] = snapshot_id
    with state._LOCK:  # pylint: disable=protected-access
        TASKS.setdefault((backend.account_id, backend.region_name), {})[task["ReplaceRootVolumeTaskId"]] = task
    if not task["fail"]:
        # A replaced root volume restores the pre-patch disk and reboots the instance.
        state.add_event(instance_id, "restore", created + task["duration"], task)
    return _action_result({"ReplaceRootVolumeTask": _task_view(task)})


def _page(items: list, max_results, token, low: int, high: int, param: str) -> tuple[list, str | None]:
    """One page of items and the next token (EC2 API Reference, "Pagination": MaxResults/NextToken)."""
    start = _decode_token(token) if token else 0
    if not max_results:
        return items[start:], None
    max_results = int(max_results)
    if not low <= max_results <= high:
        raise EC2ClientError("InvalidParameterValue",
                             f"Value ( {max_results} ) for parameter {param} is invalid. Expecting a value between {low} and {high}.")
    nxt = _encode_token(start + max_results) if start + max_results < len(items) else None
    return items[start:start + max_results], nxt


_orig_describe_images_response = EC2Response.describe_images


def describe_images(self):
    """DescribeImages honours MaxResults/NextToken (botocore has a DescribeImages paginator; stock moto returns one page).

    The model gives MaxResults no range; 1..1000 as the EC2 API's describe actions cap a page at 1,000 items.
    """
    result = _orig_describe_images_response(self)
    images, nxt = _page(list(result.result["Images"]), self._get_param("MaxResults"), self._get_param("NextToken"), 1, 1000, "maxResults")
    return _action_result(dict({"Images": images}, **({"NextToken": nxt} if nxt else {})))


# -- deregistration and snapshot deletion ------------------------------------------------------------------------

def _snapshot_ids(ami) -> list[str]:
    mappings = ami.__dict__.get("_sim_bdm")
    if mappings is not None:
        return [m["Ebs"]["SnapshotId"] for m in mappings if m.get("Ebs", {}).get("SnapshotId")]
    snap = getattr(ami, "ebs_snapshot", None)
    return [snap.id] if snap is not None else []


_orig_backend_describe_images = None  # set by apply(): the describe_images in place then (ec2.py's fast path)


def _describe_images_bdm_filter(self, ami_ids=None, filters=None, exec_users=None, owners=None):
    """The documented DescribeImages filter block-device-mapping.snapshot-id (botocore model), which moto lacks:
    an image matches when any of its snapshots is one of the values."""
    filters = dict(filters or {})
    wanted = filters.pop("block-device-mapping.snapshot-id", None)
    images = _orig_backend_describe_images(self, ami_ids=ami_ids, filters=filters or None, exec_users=exec_users, owners=owners)
    if wanted is None:
        return images
    wanted = set(wanted if isinstance(wanted, list) else [wanted])
    return [a for a in images if wanted & set(_snapshot_ids(a))]


def deregister_image(self):
    """DeregisterImage, with DeleteAssociatedSnapshots (botocore model: DeregisterImage input, DeleteSnapshotResults).

    EC2 API Reference, DeregisterImage: the image's snapshots are deleted with it on request, except a snapshot that
    another AMI also uses (ReturnCode "skipped"). Without the flag the snapshots stay, and DeleteSnapshot right after
    can still fail with InvalidSnapshot.InUse (EC2 API "Error codes": the snapshot is in use by the image) until
    the deregistration has settled: `deregister_s` seconds here.
    """
    ami_id = self._get_param("ImageId")
    delete_snapshots = self._get_bool_param("DeleteAssociatedSnapshots", False)
    self.error_on_dryrun()
    backend = self.ec2_backend
    ami = backend.amis.get(ami_id)
    snapshot_ids = _snapshot_ids(ami) if ami is not None else []
    backend.deregister_image(ami_id)  # InvalidAMIID.NotFound / .Unavailable as moto answers them
    results = []
    settled_at = state.now() + state.setting("deregister_s")
    for snapshot_id in snapshot_ids:
        snap = backend.snapshots.get(snapshot_id)
        if snap is None:
            continue
        if delete_snapshots:
            shared = any(snapshot_id in _snapshot_ids(other) for other in backend.amis.values())
            # DeleteSnapshotResults ReturnCode "missing-permissions": the caller may deregister the image but not delete
            # this snapshot (ec2:DeleteSnapshot); the image goes, the snapshot stays (EC2 API Reference, DeregisterImage).
            denied = iam.skipped_for_permissions(snapshot_id)
            if not shared and not denied:
                backend.snapshots.pop(snapshot_id, None)
            results.append({"SnapshotId": snapshot_id,
                            "ReturnCode": "skipped" if shared else "missing-permissions" if denied else "success"})
        else:
            snap.__dict__["_sim_in_use"] = (ami_id, settled_at)
    out = {"Return": True}
    if delete_snapshots:
        out["DeleteSnapshotResults"] = results
    return _action_result(out)


_orig_register_image = EC2Response.register_image


def register_image(self):
    """RegisterImage keeps the snapshots of its BlockDeviceMappings (EC2 API Reference, RegisterImage); stock moto drops
    them, so a snapshot shared by two AMIs could not exist."""
    result = _orig_register_image(self)
    mappings = [m for m in self._get_param("BlockDeviceMappings", []) if (m.get("Ebs") or {}).get("SnapshotId")]
    for mapping in mappings:
        self.ec2_backend.get_snapshot(mapping["Ebs"]["SnapshotId"])  # InvalidSnapshot.NotFound for an unknown one
    if mappings:
        self.ec2_backend.amis[result.result["ImageId"]].__dict__["_sim_bdm"] = [
            {"DeviceName": m.get("DeviceName"), "Ebs": {"SnapshotId": m["Ebs"]["SnapshotId"]}} for m in mappings]
    return result


_orig_delete_snapshot = EBSBackend.delete_snapshot


def _delete_snapshot(self, snapshot_id):
    snap = self.snapshots.get(snapshot_id)
    held = snap.__dict__.get("_sim_in_use") if snap is not None else None
    if held and state.now() < held[1]:
        raise InvalidSnapshotInUse(snapshot_id, held[0])  # the image's deregistration has not settled yet
    return _orig_delete_snapshot(self, snapshot_id)


def describe_replace_root_volume_tasks(self):
    ids = self._get_param("ReplaceRootVolumeTaskIds", [])
    filters = self._filters_from_querystring()
    backend = self.ec2_backend
    tasks = list(TASKS.get((backend.account_id, backend.region_name), {}).values())
    if ids:
        known = {t["ReplaceRootVolumeTaskId"] for t in tasks}
        missing = [i for i in ids if i not in known]
        if missing:
            raise EC2ClientError("InvalidReplaceRootVolumeTaskId.NotFound", f"The replace root volume task ID '{missing[0]}' does not exist")
        tasks = [t for t in tasks if t["ReplaceRootVolumeTaskId"] in ids]
    if "instance-id" in filters:
        tasks = [t for t in tasks if t["InstanceId"] in filters["instance-id"]]
    # Paginated like AWS (botocore model: DescribeReplaceRootVolumeTasksMaxResults is 1..50, with a paginator).
    tasks, nxt = _page(tasks, self._get_param("MaxResults"), self._get_param("NextToken"), 1, 50, "MaxResults")
    return _action_result(dict({"ReplaceRootVolumeTasks": [_task_view(t) for t in tasks]}, **({"NextToken": nxt} if nxt else {})))


def apply() -> None:
    Ami.state = property(_ami_state_get, _ami_state_set)
    Ami.state_reason = property(_ami_state_reason)
    Ami.block_device_mappings = property(_ami_bdm)
    Snapshot.status = property(_snap_status_get, _snap_status_set)
    Snapshot.progress = property(_snap_progress)
    EC2Response.create_image = create_image
    EC2Response.create_replace_root_volume_task = create_replace_root_volume_task
    EC2Response.describe_replace_root_volume_tasks = describe_replace_root_volume_tasks
    EC2Response.describe_images = describe_images
    EC2Response.deregister_image = deregister_image
    EC2Response.register_image = register_image
    global _orig_backend_describe_images  # pylint: disable=global-statement
    if AmiBackend.describe_images is not _describe_images_bdm_filter:
        _orig_backend_describe_images = AmiBackend.describe_images
        AmiBackend.describe_images = _describe_images_bdm_filter
    EBSBackend.delete_snapshot = _delete_snapshot
    # The account's AMI and snapshot quotas (Service Quotas), which images and snapshots count against.
    from . import quotas  # pylint: disable=import-outside-toplevel
    quotas.apply()
