"""Auto Scaling standby as AWS documents it, on moto's Auto Scaling backend.

Amazon EC2 Auto Scaling User Guide, "Temporarily remove instances from your Auto Scaling group" and the API reference
of EnterStandby / ExitStandby:
- at most 20 instance ids per call;
- InService -> EnteringStandby -> Standby; ExitStandby: Standby -> Pending -> InService (each transition lasts
  `asg_transition_s`, a simulated duration; EnteringStandby also until the group's target groups have drained the
  instance: their deregistration delay, `drain_s` in the simulator);
- ShouldDecrementDesiredCapacity=true lowers the desired capacity, and is refused below MinSize; ExitStandby raises it
  again;
- an instance entering standby is deregistered from the group's target groups (so it drains) and registered again
  when it leaves standby.
moto lets any instance in any state in and out of standby at once, with no limit and no MinSize check.
"""
from __future__ import annotations

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, InstanceState

from . import state

STANDBY_MAX_IDS = 20  # EnterStandby/ExitStandby InstanceIds: "You can specify up to 20 instances."
# Instances the desired capacity counts (User Guide, "Auto Scaling instance lifecycle": Standby instances do not count).
COUNTED = ("InService", "Pending")
REGISTERED = ("InService", "Pending")  # states in which an instance is registered with the group's target groups


def _lifecycle_get(self) -> str:
    current, after, until = self.__dict__.get("_sim_lifecycle", ("InService", None, None))
    if after is not None and state.now() >= until and not _still_draining(self):
        return after
    return current


def _lifecycle_set(self, value: str) -> None:
    self.__dict__["_sim_lifecycle"] = (value, None, None)
    self.__dict__.pop("_sim_drains", None)


def _transition(instance_state, now_state: str, then: str) -> None:
    instance_state.__dict__["_sim_lifecycle"] = (now_state, then, state.now() + state.setting("asg_transition_s"))
    instance_state.__dict__.pop("_sim_drains", None)


def _still_draining(member) -> bool:
    """User Guide, "Temporarily remove instances from your Auto Scaling group" ("How the standby state works"): the
    instance is deregistered from the group's target groups and, with a deregistration delay (connection draining),
    Elastic Load Balancing waits for it before the deregistration completes; only then is the instance in Standby. So
    EnteringStandby lasts until every target group the member was deregistered from has finished draining it."""
    from .elbv2 import draining  # pylint: disable=import-outside-toplevel
    drains = member.__dict__.get("_sim_drains") or ()
    now = state.now()
    return any(draining(tg, member.instance.id, now) for tg in drains)


def _active_instances(self) -> list:
    return [x for x in self.instance_states if x.lifecycle_state in COUNTED]


def _group(backend, name: str):
    group = backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup {name} not found")
    return group


def _members(group, instance_ids: list[str], wanted: str) -> list:
    """The group's instance states for `instance_ids`, each in state `wanted`; ValidationError otherwise (AWS refuses
    the whole call)."""
    if len(instance_ids) > STANDBY_MAX_IDS:
        raise ValidationError(f"The number of instances exceeds the limit of {STANDBY_MAX_IDS} instances per call "
                              f"(got {len(instance_ids)}).")
    by_id = {s.instance.id: s for s in group.instance_states}
    out = []
    for iid in instance_ids:
        member = by_id.get(iid)
        if member is None:
            raise ValidationError(f"The instance {iid} is not part of Auto Scaling group {group.name}.")
        if member.lifecycle_state != wanted:
            raise ValidationError(f"The instance {iid} is not in {wanted}.")
        out.append(member)
    return out


def _target_groups(backend, group) -> list:
    if not group.target_group_arns:
        return []
    return [tg for arn, tg in backend.elbv2_backend.target_groups.items() if arn in group.target_group_arns]


def _enter_standby(self, group_name: str, instance_ids: list[str], should_decrement: bool):
    from moto.autoscaling.models import EnterStandbyActivity  # pylint: disable=import-outside-toplevel
    group = _group(self, group_name)
    members = _members(group, instance_ids, "InService")
    original = group.desired_capacity
    if should_decrement and original - len(members) < group.min_size:
        # EnterStandby with ShouldDecrementDesiredCapacity may not take the desired capacity below MinSize.
        raise ValidationError(
            f"AutoScalingGroup {group.name} has min-size={group.min_size}, max-size={group.max_size}, and "
            f"desired-size={original}. Moving {len(members)} instance(s) to Standby with ShouldDecrementDesiredCapacity "
            f"would make the desired capacity {original - len(members)}, which cannot be less than the minimum size.")
    for member in members:
        _transition(member, "EnteringStandby", "Standby")
        # Instances in standby are deregistered from the group's target groups and drain (User Guide, "Temporarily
        # remove instances": "...deregisters the instance from the load balancer"); Standby waits for the drain.
        drains = []
        for tg in _target_groups(self, group):
            if member.instance.id in tg.targets:
                tg.deregister([{"Id": member.instance.id}])
                drains.append(tg)
        member.__dict__["_sim_drains"] = drains
    if should_decrement:
        group.desired_capacity = original - len(members)
    activities = [EnterStandbyActivity(m.instance, original) for m in members]
    group.set_desired_capacity(group.desired_capacity)  # without the decrement Auto Scaling launches replacements
    return activities


def _exit_standby(self, group_name: str, instance_ids: list[str]):
    from moto.autoscaling.models import ExitStandbyActivity  # pylint: disable=import-outside-toplevel
    group = _group(self, group_name)
    members = _members(group, instance_ids, "Standby")
    original = group.desired_capacity
    for member in members:
        _transition(member, "Pending", "InService")
    group.desired_capacity = original + len(members)  # ExitStandby increments the desired capacity
    activities = [ExitStandbyActivity(m.instance, original) for m in members]
    group.set_desired_capacity(group.desired_capacity)  # registers them again (update_attached_target_groups)
    return activities


def _update_attached_target_groups(self, group_name: str) -> None:
    """Register the group's InService/Pending instances (moto also registered Standby ones)."""
    group = self.autoscaling_groups[group_name]
    wanted = [s.instance.id for s in group.instance_states if s.lifecycle_state in REGISTERED]
    for tg in _target_groups(self, group):
        todo = [{"Id": iid, "Port": tg.port} for iid in wanted if iid not in tg.targets]
        if todo:
            tg.register(todo)


def apply() -> None:
    InstanceState.lifecycle_state = property(_lifecycle_get, _lifecycle_set)
    FakeAutoScalingGroup.active_instances = _active_instances
    AutoScalingBackend.enter_standby_instances = _enter_standby
    AutoScalingBackend.exit_standby_instances = _exit_standby
    AutoScalingBackend.update_attached_target_groups = _update_attached_target_groups
