"""EC2 patches: indexes against moto's quadratic paths, a fast DescribeInstances/RunInstances, platform tags."""
from __future__ import annotations

import base64
import copy
import re
from xml.sax.saxutils import escape

from moto.ec2.exceptions import EC2ClientError, InvalidInstanceIdError
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.models.tags import TagBackend
from moto.ec2.responses import EC2Response
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, filter_dict_attribute_mapping, get_prefix, is_tag_filter, passes_filter_dict

from . import state

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def tags_of(resource) -> dict[str, str]:
    """Tag dict of an EC2 resource without moto's scan over every tag in the region."""
    return dict(resource.ec2_backend.tags.get(resource.id, {}))


def _get_tags(self) -> list[dict[str, str]]:
    rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "") if self.id else ""
    return [{"resource_id": self.id, "key": k, "value": v, "resource_type": rtype} for k, v in tags_of(self).items()]


_orig_describe_tags = TagBackend.describe_tags


def _describe_tags(self, filters=None):
    ids = (filters or {}).get("resource-id")
    if filters and set(filters) == {"resource-id"} and not any(c in i for i in ids for c in "*?"):
        out = []
        for rid in ids:
            rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
            out += [{"resource_id": rid, "key": k, "value": v, "resource_type": rtype} for k, v in dict(self.tags.get(rid, {})).items()]
        return out
    return _orig_describe_tags(self, filters)


def _lookup(backend, instance_id):
    """Instance by id through a per-backend index (moto scans every reservation for each lookup)."""
    idx = backend.__dict__.setdefault("_sim_instance_index", {})
    inst = idx.get(instance_id)
    if inst is None and backend.reservations:
        # RunInstances looks each new instance up while its reservation is still filling: check the newest one.
        newest = list(backend.reservations.values())[-1]
        inst = next((i for i in reversed(list(newest.instances)) if i.id == instance_id), None)
        if inst is None:  # created by a path we do not wrap, or unknown: one full pass
            for res in list(backend.reservations.values()):
                for candidate in list(res.instances):
                    idx.setdefault(candidate.id, candidate)
            inst = idx.get(instance_id)
        else:
            idx[instance_id] = inst
    return inst


def _get_instance(self, instance_id):
    inst = _lookup(self, instance_id)
    if inst is None:
        raise InvalidInstanceIdError(instance_id)
    return inst


def _get_instance_by_id(self, instance_id):
    return _lookup(self, instance_id)


def _get_multi_instances_by_id(self, instance_ids, filters=None):
    found = {i: _lookup(self, i) for i in instance_ids}
    missing = [i for i, inst in found.items() if inst is None]
    if missing:
        raise InvalidInstanceIdError(missing)
    return [found[i] for i in instance_ids if not filters or passes_filter_dict(found[i], filters)]


_orig_run_instances = InstanceBackend.run_instances


SEQ_RE = re.compile(r"\{seq:(\d+):(\d+)(?::(\d+))?\}")  # START:WIDTH[:STEP]


def _run_instances(self, *args, **kwargs):
    reservation = _orig_run_instances(self, *args, **kwargs)
    idx = self.__dict__.setdefault("_sim_instance_index", {})
    for inst in reservation.instances:
        idx[inst.id] = inst
        # Simulator extension used by fleet.py: "{seq:START:WIDTH}" in a tag value numbers the instances of one
        # RunInstances call (web-001, web-002, ...), so seeding needs no CreateTags call per instance; STEP numbers
        # every STEP-th name (one call per zone of a group spread round-robin over zones).
        tags = self.tags.get(inst.id, {})
        for key, value in tags.items():
            if "{seq:" in value:
                tags[key] = SEQ_RE.sub(lambda m, i=inst: str(int(m.group(1)) + i.ami_launch_index * int(m.group(3) or 1)).zfill(int(m.group(2))),
                                       value)
    return reservation


_orig_describe_volumes = EBSBackend.describe_volumes


def _describe_volumes(self, volume_ids=None, filters=None):
    if volume_ids and not filters and all(v in self.volumes for v in volume_ids):
        return [self.volumes[v] for v in volume_ids]
    return _orig_describe_volumes(self, volume_ids=volume_ids, filters=filters)


_orig_describe_images = AmiBackend.describe_images


def _describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
    # Instance.__init__ looks its AMI up by filter: scanning every AMI per instance made RunInstances quadratic.
    if filters and set(filters) == {"image-id"} and not ami_ids and not exec_users and not owners:
        wanted = filters["image-id"]
        wanted = wanted if isinstance(wanted, list) else [wanted]
        if not any(c in w for w in wanted for c in "*?"):
            return [self.amis[w] for w in wanted if w in self.amis]
    return _orig_describe_images(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)


# -- platform and root device driven by sim:* tags ---------------------------------------------------------------

def _platform_get(self):
    sim = tags_of(self).get("sim:platform")
    if sim == "windows":
        return "windows"
    return None if sim else self.__dict__.get("_sim_platform")


def _platform_set(self, value):
    self.__dict__["_sim_platform"] = value


def _platform_details(self):
    return "Windows" if self.platform == "windows" else "Linux/UNIX"


def _root_type_get(self):
    if tags_of(self).get("sim:root-device") == "instance-store":
        return "instance-store"
    return self.__dict__.get("_sim_root_type", "ebs")


def _root_type_set(self, value):
    self.__dict__["_sim_root_type"] = value


# -- reboot, stop and start as the SSM model sees them ------------------------------------------------------------

def _power_event(inst, action: str) -> None:
    """Record a reboot/stop/start for ssm.py: the agent is away for reboot_s after a reboot or a start."""
    state.add_event(inst.id, "power", state.now(), {"action": action, "reboot_s": state.setting("reboot_s")})


def _reboot_instances(self, instance_ids):
    # EC2 API reference, RebootInstances: "Requests to reboot terminated instances are ignored"; moto made any
    # instance, even a stopped one, running. Only running instances reboot here.
    rebooted = []
    for inst in self.get_multi_instances_by_id(instance_ids):
        if inst.state != "running":
            continue
        inst.reboot()
        _power_event(inst, "reboot")
        rebooted.append(inst)
    return rebooted


_orig_stop_instances = InstanceBackend.stop_instances
_orig_start_instances = InstanceBackend.start_instances
STOPPING = ("stopping", 64)  # EC2 API reference, InstanceState: code 64 stopping, 80 stopped


def _state_get(self):
    """The instance's InstanceState, `stopping` turning `stopped` once stop_s has passed (evaluated lazily).

    EC2 user guide, "Amazon EC2 instance state changes": StopInstances takes a running instance to `stopping`, then
    `stopped`. moto stopped it at once, so a caller that did not wait for `stopped` passed unnoticed."""
    current = self.__dict__["_sim_state"]
    until = self.__dict__.get("_sim_stopped_at")
    if until is not None and current.name == STOPPING[0] and state.now() >= until:
        current.name, current.code = "stopped", 80
        self.__dict__.pop("_sim_stopped_at", None)
    return current


def _state_set(self, value):
    self.__dict__["_sim_state"] = value
    self.__dict__.pop("_sim_stopped_at", None)


def _stop_instances(self, instance_ids):
    # EC2 API reference, "Error codes": UnsupportedOperation, e.g. stopping an instance store-backed instance (EC2 user
    # guide, "Stop and start Amazon EC2 instances": only EBS-backed instances can be stopped). moto stopped them.
    instances = self.get_multi_instances_by_id(instance_ids)
    for inst in instances:
        if inst.root_device_type != "ebs":
            raise EC2ClientError("UnsupportedOperation",
                                 f"The instance '{inst.id}' does not have an 'ebs' root device type and cannot be stopped.")
    # StopInstances of an instance already stopping or stopped changes nothing (its CurrentState is answered as is).
    moving = [i.id for i in instances if i.state not in ("stopping", "stopped")]
    stopped = dict((inst.id, (inst, previous)) for inst, previous in (_orig_stop_instances(self, moving) if moving else []))
    out = []
    for inst in instances:
        if inst.id not in stopped:
            out.append((inst, copy.copy(inst.instance_state)))
            continue
        previous = stopped[inst.id][1]
        # EC2 user guide, "Amazon EC2 instance state changes": running -> stopping -> stopped, over stop_s here.
        inst.instance_state.name, inst.instance_state.code = STOPPING
        inst.__dict__["_sim_stopped_at"] = state.now() + state.setting("stop_s")
        _power_event(inst, "stop")
        out.append((inst, previous))
    return out


def _start_instances(self, instance_ids):
    # EC2 API reference, "Error codes": IncorrectInstanceState, "The instance is in an incorrect state for the requested
    # action", e.g. StartInstances of an instance that is still stopping (EC2 user guide, "Stop and start Amazon EC2
    # instances": it can be started only once stopped). The whole call is refused; nothing starts.
    instances = self.get_multi_instances_by_id(instance_ids)
    for inst in instances:
        if inst.state == "stopping":
            raise EC2ClientError("IncorrectInstanceState",
                                 f"The instance '{inst.id}' is not in a state from which it can be started.")
    # moto gives an auto-assigned public IP a new address on start (EC2 user guide, "Amazon EC2 instance IP
    # addressing": a stopped instance releases its public IPv4 address and gets a new one when started).
    started = _orig_start_instances(self, instance_ids)
    for inst, previous in started:
        if previous.name == "stopped":
            _power_event(inst, "start")
    return started


# -- fast XML rendering --------------------------------------------------------------------------------------------

def _ts(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z") if dt else ""


def _el(name: str, value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def instance_xml(inst) -> str:
    # The generic botocore-model serializer costs ~5 ms per instance; this keeps the fields tools read. Client-side
    # parsing then dominates (timestamps most), hence no attachTime and no empty/constant elements.
    tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in tags_of(inst).items())
    bdm = []
    if inst.root_device_type == "ebs":
        for dev, blk in inst.get_block_device_mapping:
            bdm.append(
                f"<item><deviceName>{escape(dev)}</deviceName><ebs>{_el('volumeId', blk.volume_id)}"
                f"<status>{Instance.get_block_device_status(blk.status) or 'attached'}</status>"
                f"{_el('deleteOnTermination', bool(blk.delete_on_termination))}</ebs></item>"
            )
    groups = "".join(f"<item><groupId>{g.id}</groupId><groupName>{escape(g.name)}</groupName></item>" for g in inst.dynamic_group_list)
    groups = f"<groupSet>{groups}</groupSet>" if groups else ""
    reason = inst.state_reason
    state_reason = ""
    if getattr(reason, "code", None):
        state_reason = f"<stateReason>{_el('code', reason.code)}{_el('message', reason.message)}</stateReason>"
    return (
        f"<item><instanceId>{inst.id}</instanceId>{_el('imageId', inst.image_id)}"
        f"<instanceState><code>{inst.state_code}</code><name>{inst.state}</name></instanceState>"
        f"{_el('privateDnsName', inst.private_dns_name)}<dnsName>{escape(inst.public_dns_name or '')}</dnsName>"
        f"{_el('reason', inst.state_transition_reason)}{_el('keyName', inst.key_name)}<amiLaunchIndex>{inst.ami_launch_index}</amiLaunchIndex>"
        f"{_el('instanceType', inst.instance_type)}<launchTime>{_ts(inst.launch_time)}</launchTime>"
        f"<placement>{_el('availabilityZone', inst.placement.zone)}<tenancy>default</tenancy></placement>"
        f"{_el('platform', inst.platform)}<platformDetails>{_platform_details(inst)}</platformDetails>"
        f"{_el('subnetId', inst.subnet_id)}{_el('vpcId', inst.vpc_id)}"
        f"{_el('privateIpAddress', inst.private_ip)}{_el('ipAddress', inst.public_ip)}{groups}{state_reason}"
        f"{_el('architecture', inst.architecture)}<rootDeviceType>{inst.root_device_type}</rootDeviceType>"
        f"{_el('rootDeviceName', inst.root_device_name)}<blockDeviceMapping>{''.join(bdm)}</blockDeviceMapping>"
        f"<tagSet>{tags}</tagSet></item>"
    )


def _reservation_xml(res, instances, account_id: str) -> str:
    groups = "".join(f"<item><groupId>{g.id}</groupId><groupName>{escape(g.name)}</groupName></item>" for g in getattr(res, "_sim_groups", []))
    body = "".join(instance_xml(i) for i in instances)
    return f"<reservationId>{res.id}</reservationId><ownerId>{account_id}</ownerId><groupSet>{groups}</groupSet><instancesSet>{body}</instancesSet>"


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sim:{offset}".encode()).decode()


def _decode_token(token: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise EC2ClientError("InvalidParameterValue", f"Invalid value '{token}' for NextToken") from exc


def describe_instances(self):
    """DescribeInstances paginated by instance count (AWS: MaxResults 5..1000), filters kept."""
    self.error_on_dryrun()
    filters = self._filters_from_querystring()
    for name in filters or {}:
        # AWS answers an unknown filter name with a 400; moto would raise NotImplementedError (a 500 that boto3 retries).
        if name not in filter_dict_attribute_mapping and not is_tag_filter(name):
            raise EC2ClientError("InvalidParameterValue", f"The filter '{name}' is invalid")
    instance_ids = self._get_param("InstanceIds", [])
    max_results = self._get_param("MaxResults")
    token = self._get_param("NextToken")
    if instance_ids and max_results:
        raise EC2ClientError("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
    backend = self.ec2_backend
    wanted: set[str] = set()
    if instance_ids:
        wanted = {i.id for i in backend.get_multi_instances_by_id(instance_ids)}
    pairs = []
    for res in list(backend.reservations.values()):
        for inst in list(res.instances):
            if instance_ids and inst.id not in wanted:
                continue
            if filters and not passes_filter_dict(inst, filters):
                continue
            pairs.append((res, inst))
    start = _decode_token(token) if token else 0
    next_token = None
    if max_results:
        max_results = int(max_results)
        if not 5 <= max_results <= 1000:
            raise EC2ClientError("InvalidParameterValue", f"Value ( {max_results} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.")
        if start + max_results < len(pairs):
            next_token = _encode_token(start + max_results)
        pairs = pairs[start:start + max_results]
    groups: list[tuple] = []
    for res, inst in pairs:
        if groups and groups[-1][0] is res:
            groups[-1][1].append(inst)
        else:
            groups.append((res, [inst]))
    account = backend.account_id
    items = "".join(f"<item>{_reservation_xml(res, insts, account)}</item>" for res, insts in groups)
    token_xml = f"<nextToken>{next_token}</nextToken>" if next_token else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeInstancesResponse xmlns="{XMLNS}">\n'
        f"<requestId>00000000-0000-0000-0000-000000000000</requestId>\n<reservationSet>{items}</reservationSet>{token_xml}</DescribeInstancesResponse>"
    )


_orig_run_instances_response = EC2Response.run_instances


def run_instances(self):
    result = _orig_run_instances_response(self)
    res = result.result
    res._sim_groups = list(res.instances[0].dynamic_group_list) if res.instances else []  # pylint: disable=protected-access
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<RunInstancesResponse xmlns="{XMLNS}">\n'
        f"<requestId>00000000-0000-0000-0000-000000000000</requestId>\n{_reservation_xml(res, res.instances, self.ec2_backend.account_id)}"
        "</RunInstancesResponse>"
    )


def apply() -> None:
    TaggedEC2Resource.get_tags = _get_tags
    TagBackend.describe_tags = _describe_tags
    InstanceBackend.get_instance = _get_instance
    InstanceBackend.get_instance_by_id = _get_instance_by_id
    InstanceBackend.get_multi_instances_by_id = _get_multi_instances_by_id
    InstanceBackend.run_instances = _run_instances
    InstanceBackend.reboot_instances = _reboot_instances
    InstanceBackend.stop_instances = _stop_instances
    InstanceBackend.start_instances = _start_instances
    AmiBackend.describe_images = _describe_images
    EBSBackend.describe_volumes = _describe_volumes
    Instance.platform = property(_platform_get, _platform_set)
    Instance.platform_details = property(_platform_details)
    Instance.root_device_type = property(_root_type_get, _root_type_set)
    Instance._state = property(_state_get, _state_set)  # pylint: disable=protected-access
    EC2Response.describe_instances = describe_instances
    EC2Response.run_instances = run_instances
