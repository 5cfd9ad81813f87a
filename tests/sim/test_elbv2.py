"""ELBv2 target health in the simulator, with plain boto3.

AWS facts followed (Elastic Load Balancing API reference, TargetHealth; ALB guide, "Check the health of your targets"):
a registered target is `initial` (Elb.RegistrationInProgress) until its health checks pass; a deregistered one is
`draining` (Target.DeregistrationInProgress) for the deregistration delay (the target group's
deregistration_delay.timeout_seconds, 300 s by default) and then no longer listed (Target.NotRegistered when asked for);
a failing target is `unhealthy`; a stopped instance is `unused` (Target.InvalidState); a target group no load balancer
uses, or a target in a zone its load balancer has not enabled, is `unused` (Target.NotInUse). Durations are the
simulator's (health_s, drain_s, reboot_s), set per access key; tests poll, they never time the simulator.
"""
from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from awssim import fleet

from .conftest import wait_for


def _name(prefix: str = "tg") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _arn(elb, name: str) -> str:
    return elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]


def _health(elb, arn: str, ids: list[str] | None = None) -> dict[str, tuple[str, str | None]]:
    kwargs = {"Targets": [{"Id": i} for i in ids]} if ids else {}
    return {d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in elb.describe_target_health(TargetGroupArn=arn, **kwargs)["TargetHealthDescriptions"]}


def _seed(sim, *groups) -> list[dict]:
    return fleet.seed({"region": "us-east-1", "groups": [dict({"count": 1}, **g) for g in groups]}, sim.url, sim.key)


def _patch(sim, ids: list[str]) -> str:
    return sim.client("ssm").send_command(
        InstanceIds=ids, DocumentName="AWS-RunPatchBaseline", Comment="cms-patching run1 patch",
        Parameters={"Operation": ["Install"], "RebootOption": ["RebootIfNeeded"], "SnapshotId": [str(uuid.uuid4())]},
    )["Command"]["CommandId"]


def test_zones_round_robin_and_names(sim):
    seeded = _seed(sim, {"count": 7, "name_prefix": "rr", "zones": ["a", "b", "c"]})
    assert [(s["name"], s["zone"]) for s in seeded] == [
        ("rr-001", "us-east-1a"), ("rr-002", "us-east-1b"), ("rr-003", "us-east-1c"), ("rr-004", "us-east-1a"),
        ("rr-005", "us-east-1b"), ("rr-006", "us-east-1c"), ("rr-007", "us-east-1a")]
    ec2 = sim.client("ec2")
    insts = {i["InstanceId"]: i for r in ec2.describe_instances(InstanceIds=[s["instance_id"] for s in seeded])["Reservations"]
             for i in r["Instances"]}
    for item in seeded:
        inst = insts[item["instance_id"]]
        assert inst["Placement"]["AvailabilityZone"] == item["zone"]
        assert {t["Key"]: t["Value"] for t in inst["Tags"]}["Name"] == item["name"]
    assert sim.stats()["calls"]["ec2:RunInstances"] == 3  # one call per zone


def test_registered_target_is_initial_then_healthy(sim):
    sim.config(health_s=3.0)
    name = _name()
    iid = _seed(sim, {"target_groups": [{"name": name, "port": 8080}]})[0]["instance_id"]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    assert elb.describe_target_groups(Names=[name])["TargetGroups"][0]["Port"] == 8080
    assert _health(elb, arn) == {iid: ("initial", "Elb.RegistrationInProgress")}
    assert wait_for(lambda: _health(elb, arn) == {iid: ("healthy", None)}, timeout=15)
    port = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"][0]["Target"]["Port"]
    assert port == 8080


def test_deregistered_target_drains_for_drain_s_then_is_gone(sim):
    sim.config(health_s=0.1, drain_s=2.0)
    name = _name()
    iid, other = [s["instance_id"] for s in _seed(sim, {"count": 2, "target_groups": [name]})]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    assert wait_for(lambda: set(_health(elb, arn).values()) == {("healthy", None)}, timeout=10)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elb, arn) == {iid: ("draining", "Target.DeregistrationInProgress"), other: ("healthy", None)}
    assert wait_for(lambda: iid not in _health(elb, arn), timeout=15)
    assert _health(elb, arn) == {other: ("healthy", None)}
    assert _health(elb, arn, [iid]) == {iid: ("unused", "Target.NotRegistered")}


def test_drain_defaults_to_the_target_groups_deregistration_delay(sim):
    sim.config(health_s=0.1)  # drain_s unset: the target group's attribute decides
    slow, fast = _name("slow"), _name("fast")
    a, b = [s["instance_id"] for s in _seed(sim, {"target_groups": [slow]}, {"target_groups": [fast]})]
    elb = sim.client("elbv2")
    slow_arn, fast_arn = _arn(elb, slow), _arn(elb, fast)
    attrs = {x["Key"]: x["Value"] for x in elb.describe_target_group_attributes(TargetGroupArn=slow_arn)["Attributes"]}
    assert attrs["deregistration_delay.timeout_seconds"] == "300"
    elb.modify_target_group_attributes(TargetGroupArn=fast_arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    elb.deregister_targets(TargetGroupArn=slow_arn, Targets=[{"Id": a}])
    elb.deregister_targets(TargetGroupArn=fast_arn, Targets=[{"Id": b}])
    assert wait_for(lambda: _health(elb, fast_arn) == {}, timeout=10)
    assert _health(elb, slow_arn) == {a: ("draining", "Target.DeregistrationInProgress")}  # 300 s: still draining


def test_registering_a_draining_target_again_starts_over(sim):
    sim.config(health_s=2.0, drain_s=30.0)
    name = _name()
    iid = _seed(sim, {"target_groups": [name]})[0]["instance_id"]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    assert wait_for(lambda: _health(elb, arn) == {iid: ("healthy", None)}, timeout=10)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elb, arn) == {iid: ("draining", "Target.DeregistrationInProgress")}
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elb, arn) == {iid: ("initial", "Elb.RegistrationInProgress")}
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])  # again: changes nothing
    assert wait_for(lambda: _health(elb, arn) == {iid: ("healthy", None)}, timeout=10)


def test_rebooting_instance_is_unhealthy_then_healthy_again(sim):
    sim.config(health_s=0.5, command_s=0.3, reboot_s=3.0, drain_s=30.0)
    name = _name()
    iid, other = [s["instance_id"] for s in _seed(sim, {"count": 2, "target_groups": [name]})]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    assert wait_for(lambda: set(_health(elb, arn).values()) == {("healthy", None)}, timeout=10)
    _patch(sim, [iid])  # missing patches + RebootIfNeeded: the instance reboots inside the command
    assert wait_for(lambda: _health(elb, arn)[iid] == ("unhealthy", "Target.FailedHealthChecks"), timeout=10)
    assert _health(elb, arn)[other] == ("healthy", None)
    # Deregistered while unhealthy: unhealthy.draining (TargetHealthStateEnum).
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elb, arn)[iid] == ("unhealthy.draining", "Target.DeregistrationInProgress")
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    states = []
    assert wait_for(lambda: states.append(_health(elb, arn)[iid]) or states[-1] == ("healthy", None), timeout=15)
    assert ("unhealthy", "Target.FailedHealthChecks") in states or ("initial", "Elb.RegistrationInProgress") in states


def test_stopped_instance_unused_invalid_state_and_not_registrable(sim):
    name = _name()
    iid = _seed(sim, {"target_groups": [name], "state": "stopped"})[0]["instance_id"]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    assert _health(elb, arn) == {iid: ("unused", "Target.InvalidState")}
    other = sim.ids(state="stopped")[0]
    with pytest.raises(ClientError) as err:  # RegisterTargets refuses an instance that is not running
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": other}])
    assert err.value.response["Error"]["Code"] == "InvalidTarget"


def test_unused_target_group_and_zone_not_enabled_are_not_in_use(sim):
    sim.config(health_s=0.1)
    lonely, zoned = _name("lonely"), _name("zoned")
    seeded = _seed(sim, {"target_groups": [{"name": lonely, "unused": True}]},
                   {"count": 3, "zones": ["a", "b", "c"], "target_groups": [{"name": zoned, "lb_zones": ["a", "b"]}]})
    elb = sim.client("elbv2")
    assert elb.describe_target_groups(Names=[lonely])["TargetGroups"][0]["LoadBalancerArns"] == []
    assert _health(elb, _arn(elb, lonely)) == {seeded[0]["instance_id"]: ("unused", "Target.NotInUse")}
    arn = _arn(elb, zoned)
    by_zone = {s["zone"]: s["instance_id"] for s in seeded[1:]}
    assert wait_for(lambda: _health(elb, arn) == {by_zone["us-east-1a"]: ("healthy", None), by_zone["us-east-1b"]: ("healthy", None),
                                                  by_zone["us-east-1c"]: ("unused", "Target.NotInUse")}, timeout=10)


def test_fault_lb_unhealthy_after_the_patch(sim):
    sim.config(health_s=0.3, command_s=0.3, reboot_s=0.5)
    name = _name()
    bad, good = [s["instance_id"] for s in _seed(sim, {"target_groups": [name], "faults": ["lb-unhealthy"]}, {"target_groups": [name]})]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    assert wait_for(lambda: set(_health(elb, arn).values()) == {("healthy", None)}, timeout=10)  # healthy before the patch
    ssm = sim.client("ssm")
    cmd = _patch(sim, [bad, good])
    assert wait_for(lambda: {i["Status"] for i in ssm.list_command_invocations(CommandId=cmd)["CommandInvocations"]} == {"Success"}, timeout=15)
    assert wait_for(lambda: _health(elb, arn)[good] == ("healthy", None), timeout=10)  # the patched control is back
    assert _health(elb, arn)[bad] == ("unhealthy", "Target.ResponseCodeMismatch")
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": bad}])
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": bad}])  # registered again: still never healthy
    assert wait_for(lambda: _health(elb, arn)[bad] == ("unhealthy", "Target.ResponseCodeMismatch"), timeout=10)


def test_fault_drain_stuck_stays_draining(sim):
    sim.config(health_s=0.1, drain_s=0.5)
    name = _name()
    stuck, normal = [s["instance_id"] for s in _seed(sim, {"target_groups": [name], "faults": ["drain-stuck"]}, {"target_groups": [name]})]
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": stuck}, {"Id": normal}])
    assert wait_for(lambda: normal not in _health(elb, arn), timeout=10)
    assert _health(elb, arn) == {stuck: ("draining", "Target.DeregistrationInProgress")}


def test_target_groups_are_per_account(sim):
    name = _name()
    fleet.seed({"region": "us-east-1", "account_id": "210987654321", "groups": [{"count": 1, "target_groups": [name]}]}, sim.url, sim.key)
    with pytest.raises(ClientError) as err:
        sim.client("elbv2").describe_target_groups(Names=[name])
    assert err.value.response["Error"]["Code"] == "TargetGroupNotFound"


@pytest.mark.parametrize("group, message", [
    ({"zones": ["a", "a"]}, "zones must be a list of distinct zone letters"),
    ({"zones": "abc"}, "zones must be a list of distinct zone letters"),
    ({"target_groups": "web"}, "target_groups must be a list"),
    ({"target_groups": [{"name": "web", "color": "red"}]}, "target_groups items must be names or mappings"),
    ({"target_groups": ["-web"]}, "must be 1-32 letters, digits or inner hyphens"),
    ({"target_groups": [{"name": "web", "port": 0}]}, "port must be an integer 1..65535"),
    ({"target_groups": [{"name": "web", "unused": "yes"}]}, "unused must be true or false"),
    ({"target_groups": [{"name": "web", "lb_zones": ["a"]}]}, "lb_zones needs at least two zones"),
])
def test_spec_validation(group, message):
    with pytest.raises(fleet.SpecError) as err:
        fleet.validate({"groups": [dict({"count": 1}, **group)]})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_spec_contradicting_target_group_and_unknown_zone(sim):
    with pytest.raises(fleet.SpecError, match="port 81 contradicts 80"):
        fleet.validate({"groups": [{"count": 1, "target_groups": [{"name": "web", "port": 80}]},
                                   {"count": 1, "target_groups": [{"name": "web", "port": 81}]}]})
    before = sim.stats()["calls"].get("ec2:RunInstances", 0)
    with pytest.raises(fleet.SpecError, match=r"group 2: zones \['z'\] are not zones of us-east-1"):
        _seed(sim, {"count": 1}, {"target_groups": [{"name": _name(), "lb_zones": ["a", "z"]}]})
    with pytest.raises(fleet.SpecError, match=r"group 2: zones \['y', 'z'\] are not zones of us-east-1"):
        _seed(sim, {"count": 1}, {"zones": ["z", "a", "y"]})
    assert sim.stats()["calls"].get("ec2:RunInstances", 0) == before  # nothing launched


def test_calls_are_counted_by_action_and_unknown_keys_refused(sim):
    name = _name()
    _seed(sim, {"target_groups": [name]})
    elb = sim.client("elbv2")
    elb.describe_target_health(TargetGroupArn=_arn(elb, name))
    calls = sim.stats()["calls"]
    assert calls["elasticloadbalancing:DescribeTargetHealth"] == 1 and calls["elasticloadbalancing:RegisterTargets"] == 1
    assert sim.stats()["mutating"]["elasticloadbalancing:CreateTargetGroup"] == 1
    bad = boto3.client("elbv2", region_name="us-east-1", endpoint_url=sim.url, aws_access_key_id="AKIAINVALID0000000001",
                       aws_secret_access_key="x")
    with pytest.raises(ClientError) as err:
        bad.describe_target_groups()
    assert err.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_refused_elbv2_and_autoscaling_calls_answer_access_denied(sim):
    # ELBv2 and Auto Scaling speak the query protocol: a refused call is an AccessDenied ErrorResponse (HTTP 403).
    sim.config(iam_policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticloadbalancing:DescribeTargetGroups", "Resource": "*"}]})
    try:
        sim.client("elbv2").describe_target_groups()
        tg_arn = f"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{_name()}/0123456789abcdef"
        for call in (lambda: sim.client("elbv2").describe_target_health(TargetGroupArn=tg_arn),
                     lambda: sim.client("autoscaling").describe_auto_scaling_groups()):
            with pytest.raises(ClientError) as err:
                call()
            assert err.value.response["Error"]["Code"] == "AccessDenied"
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    finally:
        sim.config(iam_policy=None)


def test_deregistering_a_target_that_is_not_registered_succeeds_an_unknown_id_does_not(sim):
    # ELB API reference, DeregisterTargets: "If the specified target does not exist, the action returns successfully".
    name = _name()
    iid, spare = [s["instance_id"] for s in _seed(sim, {"count": 2})]
    _seed(sim, {"target_groups": [name]})
    elb = sim.client("elbv2")
    arn = _arn(elb, name)
    before = _health(elb, arn)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}, {"Id": spare}])
    assert _health(elb, arn) == before
    with pytest.raises(ClientError) as err:
        elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0123456789abcdef0"}])
    assert err.value.response["Error"]["Code"] == "InvalidTarget"
