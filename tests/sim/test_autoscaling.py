"""Auto Scaling groups from the fleet spec and standby as AWS documents it, with plain boto3.

AWS facts followed (Amazon EC2 Auto Scaling User Guide, "Temporarily remove instances from your Auto Scaling group";
API reference EnterStandby / ExitStandby): at most 20 instances per call; InService -> EnteringStandby -> Standby and
Standby -> Pending -> InService; ShouldDecrementDesiredCapacity lowers the desired capacity and may not take it below
MinSize; ExitStandby raises it again; an instance in standby is deregistered from the group's target groups (Standby
only once they have drained it) and registered again when it leaves standby. Durations are the simulator's (asg_transition_s, health_s, drain_s).
"""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from awssim import fleet

from .conftest import wait_for


def _seed(sim, *groups, account=None) -> list[dict]:
    spec = {"region": "us-east-1", "groups": [dict({"count": 1}, **g) for g in groups]}
    if account:
        spec["account_id"] = account
    return fleet.seed(spec, sim.url, sim.key)


def _group(asg, name: str) -> dict:
    return asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]


def _states(asg, name: str) -> dict[str, str]:
    return {i["InstanceId"]: i["LifecycleState"] for i in _group(asg, name)["Instances"]}


def _health(elb, arn: str) -> dict[str, str]:
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"asg-{tag}", f"tg-{tag}"


def test_spec_asg_is_a_real_group_with_sizes_members_and_target_groups(sim):
    sim.config(health_s=0.1)
    name, tg = _names()
    seeded = _seed(sim, {"count": 5, "asg": name, "asg_min_size": 2, "asg_max_size": 8, "zones": ["a", "b", "c"], "target_groups": [tg]},
                   {"count": 1, "asg": name, "faults": ["lb-unhealthy"], "target_groups": [tg]})
    ids = {s["instance_id"] for s in seeded}
    asg, elb = sim.client("autoscaling"), sim.client("elbv2")
    group = _group(asg, name)
    arn = elb.describe_target_groups(Names=[tg])["TargetGroups"][0]["TargetGroupArn"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (2, 8, 6)
    assert _states(asg, name) == {i: "InService" for i in ids}
    assert group["TargetGroupARNs"] == [arn]
    assert {i["AvailabilityZone"] for i in group["Instances"]} == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert wait_for(lambda: _health(elb, arn) == {i: "healthy" for i in ids}, timeout=10)
    tags = {t["Key"]: t["Value"] for r in sim.client("ec2").describe_instances(InstanceIds=sorted(ids))["Reservations"]
            for i in r["Instances"] for t in i["Tags"]}
    assert tags["aws:autoscaling:groupName"] == name


def test_standby_lifecycle_desired_capacity_and_target_groups(sim):
    sim.config(health_s=2.0, drain_s=1.0, asg_transition_s=2.0)
    name, tg = _names()
    ids = [s["instance_id"] for s in _seed(sim, {"count": 4, "asg": name, "asg_min_size": 2, "target_groups": [tg]})]
    asg, elb = sim.client("autoscaling"), sim.client("elbv2")
    arn = elb.describe_target_groups(Names=[tg])["TargetGroups"][0]["TargetGroupArn"]
    assert wait_for(lambda: set(_health(elb, arn).values()) == {"healthy"}, timeout=10)
    out, stay = ids[:2], ids[2:]

    activities = asg.enter_standby(AutoScalingGroupName=name, InstanceIds=out, ShouldDecrementDesiredCapacity=True)["Activities"]
    assert len(activities) == 2
    assert _group(asg, name)["DesiredCapacity"] == 2
    seen = []
    assert wait_for(lambda: seen.append(_states(asg, name)) or all(seen[-1][i] == "Standby" for i in out), timeout=10)
    assert all(s[i] in ("EnteringStandby", "Standby") for s in seen for i in out)
    assert all(s[i] == "InService" for s in seen for i in stay)
    assert any(s[out[0]] == "EnteringStandby" for s in seen)
    # Deregistered from the group's target group: draining, then gone; the others stay healthy.
    assert wait_for(lambda: set(_health(elb, arn)) == set(stay), timeout=10)
    assert set(_health(elb, arn).values()) == {"healthy"}
    assert len(_group(asg, name)["Instances"]) == 4  # no replacement launched

    asg.exit_standby(AutoScalingGroupName=name, InstanceIds=out)
    assert _group(asg, name)["DesiredCapacity"] == 4
    assert {i: _states(asg, name)[i] for i in out} == {i: "Pending" for i in out}
    assert {i: _health(elb, arn)[i] for i in out} == {i: "initial" for i in out}
    assert wait_for(lambda: set(_states(asg, name).values()) == {"InService"}, timeout=10)
    assert wait_for(lambda: _health(elb, arn) == {i: "healthy" for i in ids}, timeout=10)
    assert len(_group(asg, name)["Instances"]) == 4


def test_entering_standby_lasts_until_the_target_groups_have_drained_the_instance(sim):
    """User Guide, "Temporarily remove instances from your Auto Scaling group": the instance is deregistered from the
    group's target groups and, with a deregistration delay, Elastic Load Balancing waits for it before the instance is
    in Standby; so EnteringStandby outlasts asg_transition_s while the target drains."""
    sim.config(health_s=0.1, drain_s=60.0, asg_transition_s=0.1)
    name, tg = _names()
    ids = [s["instance_id"] for s in _seed(sim, {"count": 3, "asg": name, "target_groups": [tg]})]
    asg, elb = sim.client("autoscaling"), sim.client("elbv2")
    arn = elb.describe_target_groups(Names=[tg])["TargetGroups"][0]["TargetGroupArn"]
    assert wait_for(lambda: set(_health(elb, arn).values()) == {"healthy"}, timeout=10)
    asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    time.sleep(0.5)  # 5 x asg_transition_s: the transition alone is over, the 60 s drain is not
    assert (_states(asg, name)[ids[0]], _health(elb, arn)[ids[0]]) == ("EnteringStandby", "draining")
    with pytest.raises(ClientError):  # not in Standby yet: ExitStandby does not apply
        asg.exit_standby(AutoScalingGroupName=name, InstanceIds=ids[:1])

    sim.config(drain_s=1.0)  # the delay is fixed at deregistration: the next member drains for 1 s
    asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[1:2], ShouldDecrementDesiredCapacity=True)
    seen = []
    while not seen or seen[-1][0] != "Standby":
        lifecycle = _states(asg, name)[ids[1]]
        seen.append((lifecycle, _health(elb, arn).get(ids[1], "gone")))  # read after: a drain never starts again
        assert len(seen) < 1000
        time.sleep(0.02)
    assert ("EnteringStandby", "draining") in seen
    assert all(target == "gone" for lifecycle, target in seen if lifecycle == "Standby")
    assert _states(asg, name)[ids[0]] == "EnteringStandby"


def test_standby_refused_below_min_size_changes_nothing(sim):
    name, _tg = _names()
    ids = [s["instance_id"] for s in _seed(sim, {"count": 3, "asg": name, "asg_min_size": 2})]
    asg = sim.client("autoscaling")
    with pytest.raises(ClientError) as err:
        asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[:2], ShouldDecrementDesiredCapacity=True)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "cannot be less than the minimum size" in err.value.response["Error"]["Message"]
    assert _group(asg, name)["DesiredCapacity"] == 3
    assert set(_states(asg, name).values()) == {"InService"}
    asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)  # 3 -> 2: allowed
    assert _group(asg, name)["DesiredCapacity"] == 2


def test_at_most_20_instances_per_standby_call(sim):
    sim.config(asg_transition_s=0.1)
    name, _tg = _names()
    ids = [s["instance_id"] for s in _seed(sim, {"count": 21, "asg": name})]
    asg = sim.client("autoscaling")
    with pytest.raises(ClientError) as err:
        asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids, ShouldDecrementDesiredCapacity=True)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert set(_states(asg, name).values()) == {"InService"} and _group(asg, name)["DesiredCapacity"] == 21
    asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[:20], ShouldDecrementDesiredCapacity=True)
    asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[20:], ShouldDecrementDesiredCapacity=True)
    assert wait_for(lambda: set(_states(asg, name).values()) == {"Standby"}, timeout=10)
    with pytest.raises(ClientError) as err:
        asg.exit_standby(AutoScalingGroupName=name, InstanceIds=ids)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert set(_states(asg, name).values()) == {"Standby"} and _group(asg, name)["DesiredCapacity"] == 0


def test_standby_calls_need_the_right_state_and_membership(sim):
    sim.config(asg_transition_s=30.0)
    name, _tg = _names()
    ids = [s["instance_id"] for s in _seed(sim, {"count": 2, "asg": name})]
    stranger = sim.ids()[0]
    asg = sim.client("autoscaling")
    for call, kwargs in ((asg.exit_standby, {}), (asg.enter_standby, {"ShouldDecrementDesiredCapacity": True})):
        with pytest.raises(ClientError) as err:
            call(AutoScalingGroupName=name, InstanceIds=[stranger], **kwargs)
        assert err.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as err:  # InService, not Standby
        asg.exit_standby(AutoScalingGroupName=name, InstanceIds=ids[:1])
    assert "is not in Standby" in err.value.response["Error"]["Message"]
    asg.enter_standby(AutoScalingGroupName=name, InstanceIds=ids[:1], ShouldDecrementDesiredCapacity=True)
    for call, kwargs in ((asg.exit_standby, {}), (asg.enter_standby, {"ShouldDecrementDesiredCapacity": True})):
        with pytest.raises(ClientError) as err:  # still EnteringStandby (30 s): neither call applies
            call(AutoScalingGroupName=name, InstanceIds=ids[:1], **kwargs)
        assert err.value.response["Error"]["Code"] == "ValidationError"
    assert _states(asg, name)[ids[0]] == "EnteringStandby" and _group(asg, name)["DesiredCapacity"] == 1


def test_reseeding_an_existing_group_adds_members(sim):
    name, _tg = _names()
    first = [s["instance_id"] for s in _seed(sim, {"count": 2, "asg": name})]
    second = [s["instance_id"] for s in _seed(sim, {"count": 3, "asg": name})]
    group = _group(sim.client("autoscaling"), name)
    assert group["DesiredCapacity"] == 5 and group["MaxSize"] >= 5
    assert {i["InstanceId"] for i in group["Instances"]} == set(first + second)


def test_groups_are_per_account(sim):
    name, _tg = _names()
    _seed(sim, {"count": 1, "asg": name}, account="210987654321")
    assert sim.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"] == []


@pytest.mark.parametrize("groups, message", [
    ([{"count": 1, "asg_min_size": 1}], "asg_min_size needs asg"),
    ([{"count": 1, "asg": "g", "asg_max_size": -1}], "asg_max_size must be a non-negative integer"),
    ([{"count": 3, "asg": "g", "asg_max_size": 2}], "its 3 instances (the desired capacity) must be within asg_min_size 0 and asg_max_size 2"),
    ([{"count": 1, "asg": "g", "asg_min_size": 2}], "must be within asg_min_size 2"),
    ([{"count": 1, "asg": "g", "asg_min_size": 1}, {"count": 1, "asg": "g", "asg_min_size": 2}], "asg_min_size 2 contradicts 1"),
])
def test_spec_validation(groups, message):
    with pytest.raises(fleet.SpecError) as err:
        fleet.validate({"groups": groups})
    assert message in str(err.value) and "\n" not in str(err.value)
