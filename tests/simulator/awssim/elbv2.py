"""ELBv2 target health, simulated lazily from timestamps on moto's target groups.

Elastic Load Balancing API reference, TargetHealth (botocore elbv2 model TargetHealthStateEnum / TargetHealthReasonEnum)
and the Application Load Balancer guide, "Check the health of your targets" ("Target health status"):
- initial (Elb.RegistrationInProgress) after RegisterTargets, healthy once the health checks pass (`health_s` after the
  registration or after the instance is back from a stop or reboot);
- unhealthy (Target.FailedHealthChecks) while the instance reboots and until it passes its checks again;
- draining (Target.DeregistrationInProgress) for the deregistration delay after DeregisterTargets, then gone
  (Target.NotRegistered when asked for by Targets=);
- unused: Target.NotInUse when no load balancer uses the target group or the target's zone is not enabled for it,
  Target.InvalidState when the instance is stopped.
"""
from __future__ import annotations

from moto.ec2.models.instances import Instance
from moto.elbv2.exceptions import InvalidTargetError
from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

from . import state

_orig_start = Instance.start


def _instance_start(self):
    # A stopped instance that starts again must pass its health checks anew (running-since, not launch time).
    self.__dict__["_sim_started_at"] = state.now()
    return _orig_start(self)


def _running_since(instance) -> float:
    from .ssm import _launch  # pylint: disable=import-outside-toplevel
    return instance.__dict__.get("_sim_started_at") or _launch(instance)


def _status(tg, target: dict, state_name: str, reason: str | None = None, description: str | None = None) -> FakeHealthStatus:
    return FakeHealthStatus(target["Id"], target.get("Port", tg.port), tg.health_check_port, state_name, reason, description)


def _drain_seconds(tg) -> float:
    """Deregistration delay: drain_s when set, else the target group's deregistration_delay.timeout_seconds (300 by
    default; ALB guide, "Deregistration delay")."""
    drain = state.setting("drain_s")
    if drain >= 0:
        return drain
    try:
        return float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
    except (TypeError, ValueError):
        return 300.0


def _faults(instance) -> set[str]:
    from .ec2 import tags_of  # pylint: disable=import-outside-toplevel
    return state.parse_faults(tags_of(instance).get("sim:fault"))


def _patched_at(instance_id: str) -> float | None:
    """When the first patch (AWS-RunPatchBaseline Install) started to run on the instance, if one has."""
    from .ssm import PATCH_DOCS  # pylint: disable=import-outside-toplevel
    starts = []
    for _at, kind, obj in state.events(instance_id):
        if kind != "invocation" or obj.command.document not in PATCH_DOCS or obj.command.param("Operation", "Scan") != "Install":
            continue
        ran = obj.outcome.get("ran") and obj.terminated_at is None and (obj.cancelled_at is None or obj.cancelled_at > obj.start)
        if ran:
            starts.append(obj.start)
    return min(starts, default=None)


def _health(tg, target: dict, record: dict, instance, now: float) -> FakeHealthStatus:
    """State of a registered (not draining) instance target at `now`."""
    if instance is None:
        return _status(tg, target, "unhealthy", "Target.FailedHealthChecks", "Health checks failed")
    if instance.state != "running":
        # TargetHealth reason Target.InvalidState: "The target is in the stopped state" (or terminated).
        return _status(tg, target, "unused", "Target.InvalidState", f"Target is in the {instance.state} state")
    zones = {s.availability_zone for lb in _load_balancers(tg) for s in lb.subnets}
    if zones and instance.placement.zone not in zones:
        return _status(tg, target, "unused", "Target.NotInUse",
                       "Target is in an Availability Zone that is not enabled for the load balancer")
    from .ssm import timeline  # pylint: disable=import-outside-toplevel
    tl = timeline(instance, now)
    if tl["in_reboot"]:
        return _status(tg, target, "unhealthy", "Target.FailedHealthChecks", "Health checks failed")
    if "lb-unhealthy" in _faults(instance):
        patched = _patched_at(instance.id)
        if patched is not None and patched <= now:
            # Simulator fault: the application answers health checks with a wrong code once patched.
            return _status(tg, target, "unhealthy", "Target.ResponseCodeMismatch",
                           "Health checks failed with these codes: [500]")
    health_s = state.setting("health_s")
    registered = record["_sim_registered_at"]
    came_up = max(registered, _running_since(instance))
    if now < came_up + health_s:
        return _status(tg, target, "initial", "Elb.RegistrationInProgress", "Target registration is in progress")
    back = max((end for start, end in tl["reboots"] if start <= now and end > came_up), default=None)
    if back is not None and now < back + health_s:
        # Back from a reboot: unhealthy until enough consecutive checks pass (HealthyThresholdCount).
        return _status(tg, target, "unhealthy", "Target.FailedHealthChecks", "Health checks failed")
    return _status(tg, target, "healthy")


def _load_balancers(tg) -> list:
    backend = tg.__dict__.get("_sim_backend")
    if backend is None:
        return []
    return [backend.load_balancers[arn] for arn in tg.load_balancer_arns if arn in backend.load_balancers]


def _register(self, targets: list[dict]) -> None:
    now = state.now()
    for target in targets:
        if instance := self.ec2_backend.get_instance_by_id(target["Id"]):
            if instance.state != "running":
                from moto.elbv2.exceptions import TargetNotRunning  # pylint: disable=import-outside-toplevel
                raise TargetNotRunning(instance_id=target["Id"])
    for target in targets:
        current = self.targets.get(target["Id"])
        if current is not None:  # already registered: RegisterTargets is idempotent, health checks go on
            continue
        self.targets[target["Id"]] = {"Id": target["Id"], "Port": target.get("Port", self.port), "_sim_registered_at": now}
        self.deregistered_targets.pop(target["Id"], None)  # registered again while draining: initial again


def _deregister(self, targets: list[dict]) -> None:
    now = state.now()
    # ELB API reference, DeregisterTargets: "If the specified target does not exist, the action returns successfully"
    # (a target not registered is a no-op); InvalidTarget is for an id that names no instance at all.
    unknown = [t for t in targets if t["Id"].startswith("i-") and not self.ec2_backend.get_instance_by_id(t["Id"])]
    if unknown:
        raise InvalidTargetError()
    for target in targets:
        record = self.targets.pop(target["Id"], None)
        if record is None:  # already draining: DeregisterTargets again changes nothing
            continue
        instance = self.ec2_backend.get_instance_by_id(target["Id"])
        before = _health(self, record, record, instance, now).status if "_sim_registered_at" in record else "healthy"
        self.deregistered_targets[target["Id"]] = dict(record, _sim_deregistered_at=now, _sim_drain_s=_drain_seconds(self),
                                                       _sim_was_unhealthy=before == "unhealthy")


def _health_for(self, target: dict, ec2_backend) -> FakeHealthStatus:
    now = state.now()
    record = self.targets.get(target["Id"])
    instance = ec2_backend.get_instance_by_id(target["Id"]) if target["Id"].startswith("i-") else None
    if record is None:
        gone = self.deregistered_targets.get(target["Id"])
        if gone is not None and "_sim_deregistered_at" in gone:
            stuck = instance is not None and "drain-stuck" in _faults(instance)
            if stuck or now < gone["_sim_deregistered_at"] + gone["_sim_drain_s"]:
                shown = dict(target, Port=gone["Port"])
                name = "unhealthy.draining" if gone["_sim_was_unhealthy"] else "draining"
                return _status(self, shown, name, "Target.DeregistrationInProgress", "Target deregistration is in progress")
        if target["Id"] in self.terminated_targets:  # a terminated instance is deregistered automatically (moto: draining)
            return _status(self, target, "draining", "Target.DeregistrationInProgress", "Target deregistration is in progress")
        return _status(self, target, "unused", "Target.NotRegistered", "Target is not registered to the target group")
    shown = dict(target, Port=record["Port"])
    if not _load_balancers(self):
        return _status(self, shown, "unused", "Target.NotInUse", "Target group is not configured to receive traffic from the load balancer")
    if "_sim_registered_at" not in record:  # registered by a path that does not go through _register
        record["_sim_registered_at"] = now
    return _health(self, shown, record, instance, now)


def draining(tg, target_id: str, now: float) -> bool:
    """Whether the target is still draining at `now` (deregistered less than its deregistration delay ago, or drain-stuck)."""
    gone = tg.deregistered_targets.get(target_id)
    if gone is None or "_sim_deregistered_at" not in gone or target_id in tg.targets:
        return False
    instance = tg.ec2_backend.get_instance_by_id(target_id) if target_id.startswith("i-") else None
    return (instance is not None and "drain-stuck" in _faults(instance)) or now < gone["_sim_deregistered_at"] + gone["_sim_drain_s"]


def _draining_ids(tg, now: float) -> list[str]:
    return [tid for tid in list(tg.deregistered_targets) if draining(tg, tid, now)]


_orig_create_target_group = ELBv2Backend.create_target_group


def _create_target_group(self, name: str, **kwargs):
    tg = _orig_create_target_group(self, name, **kwargs)
    tg.__dict__["_sim_backend"] = self  # to find its load balancers (and their zones) when answering health
    return tg


def _describe_target_health(self, target_group_arn: str, targets: list[dict]) -> list[FakeHealthStatus]:
    tg = self.target_groups.get(target_group_arn)
    if tg is None:
        from moto.elbv2.exceptions import TargetGroupNotFoundError  # pylint: disable=import-outside-toplevel
        raise TargetGroupNotFoundError()
    tg.__dict__.setdefault("_sim_backend", self)
    if not targets:
        # Without Targets: registered targets and those still draining (a target whose delay has ended is gone).
        targets = [{"Id": t["Id"], "Port": t["Port"]} for t in tg.targets.values()]
        targets += [{"Id": tid, "Port": tg.deregistered_targets[tid]["Port"]} for tid in _draining_ids(tg, state.now())]
    return [tg.health_for(target, self.ec2_backend) for target in targets]


def apply() -> None:
    Instance.start = _instance_start
    FakeTargetGroup.register = _register
    FakeTargetGroup.deregister = _deregister
    FakeTargetGroup.health_for = _health_for
    ELBv2Backend.create_target_group = _create_target_group
    ELBv2Backend.describe_target_health = _describe_target_health
