"""module_utils/capacity.py on the in-memory ELBv2 / Auto Scaling / EC2 tags (tests/unit/fakes/capacity.py):
draining batched per target group, the drain and healthy waits and their timeouts, Auto Scaling standby within MinSize
and 20 ids a call, the crash-safety tags and their recovery."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils import capacity as C
from ansible_collections.cms.patching.plugins.module_utils import tags as T

from ansible_collections.cms.patching.tests.unit.fakes.capacity import Clients, client_error


def iid(n):
    return f"i-{n:017x}"


@pytest.fixture
def aws():
    return Clients(health_s=5.0, transition_s=2.0)


def cap(aws, poll=1.0):
    return C.Capacity(aws, aws.clock, aws.clock.sleep, poll)


def inst(n, groups, **kw):
    return dict(dict(instance_id=iid(n), target_groups=groups), **kw)


def test_drained_tags_round_trip_and_fit_256_characters():
    groups = [{"name": f"tg-{n:02d}-" + "x" * 24, "port": 8000 + n} for n in range(12)]
    tags = C.drained_tags(groups)
    assert all(len(v) <= 256 for v in tags.values()) and len(tags) == 2 and set(tags) <= set(T.DRAINED_KEYS)
    assert C.parse_drained(tags) == [(g["name"], g["port"]) for g in groups]
    assert C.drained_tags([{"name": "y" * 32, "port": 65535}] * 40) is None  # 40 x 38 characters: more than 4 values


def test_plan_default_drain_timeout_is_the_largest_delay_plus_60_and_unused_groups_do_not_count():
    groups = [{"arn": "a1", "name": "a", "state": "healthy", "deregistration_delay": 30},
              {"arn": "a2", "name": "b", "state": "draining", "deregistration_delay": 120},
              {"arn": "a3", "name": "c", "state": "unused", "deregistration_delay": 900}]
    plan = C.plan(inst(1, groups))
    assert (plan["mode"], plan["drain_timeout"], [g["arn"] for g in plan["target_groups"]]) == ("drain", 180, ["a1", "a2"])
    assert C.plan(inst(1, groups, drain_timeout=15))["drain_timeout"] == 15
    assert C.plan(inst(1, [groups[2]]))["mode"] is None
    assert C.plan(inst(1, [], asg_name="web", asg_mode="standby"))["mode"] == "standby"
    assert C.plan(inst(1, [], asg_name="web", asg_mode="in_place"))["mode"] is None


def test_take_out_deregisters_once_per_target_group_and_waits_until_drained(aws):
    web = aws.elb.add_group("web", drain_s=10, members=[iid(1), iid(2), iid(3)])
    api = aws.elb.add_group("api", port=8080, drain_s=20, members=[iid(1), iid(2)])
    plans = [C.plan(inst(1, [aws.elb.tg(web, iid(1)), aws.elb.tg(api, iid(1))])), C.plan(inst(2, [aws.elb.tg(web, iid(2)), aws.elb.tg(api, iid(2))])),
             C.plan(inst(3, [aws.elb.tg(web, iid(3))]))]
    start = aws.clock()
    results = C.take_out(cap(aws), plans, 600)
    assert [r["outcome"] for r in results] == ["success"] * 3
    assert aws.elb.count("DeregisterTargets") == 2  # one per target group, all the wave's targets in it
    dereg = {kw["TargetGroupArn"]: kw["Targets"] for a, kw in aws.elb.calls if a == "DeregisterTargets"}
    assert dereg[api] == [{"Id": iid(1), "Port": 8080}, {"Id": iid(2), "Port": 8080}]
    assert aws.clock() >= start + 20  # the wait ended only once the slowest group had drained
    assert all(aws.elb.state(arn, i) == ("unused", "Target.NotRegistered") for arn in (web, api) for i in (iid(1), iid(2)))
    # Tagged before the deregistration, with what is needed to put it back
    calls = aws.calls()
    assert calls.index("CreateTags") < calls.index("DeregisterTargets")
    assert aws.ec2.tags[iid(1)] == {T.DRAINED: "web:80,api:8080"}
    assert {g["name"] for g in results[0]["deregistered"]} == {"web", "api"}


def test_a_stuck_drain_times_out_at_drain_timeout_and_is_recorded_for_put_back(aws):
    web = aws.elb.add_group("web", drain_s=5, members=[iid(1), iid(2)])
    aws.elb.stuck.add(iid(2))
    plans = [C.plan(inst(n, [aws.elb.tg(web, iid(n))], drain_timeout=30)) for n in (1, 2)]
    start = aws.clock()
    ok, stuck = C.take_out(cap(aws), plans, 600)
    assert ok["outcome"] == "success" and stuck["outcome"] == "drain_timed_out"
    assert "still draining after 30 s: web" in stuck["error"] and stuck["deregistered"][0]["arn"] == web
    assert start + 30 <= aws.clock() <= start + 31


def test_put_back_registers_with_the_same_ports_waits_for_healthy_and_clears_the_tag(aws):
    web = aws.elb.add_group("web", port=80, drain_s=1, members=[iid(1)])
    plan = C.plan(inst(1, [aws.elb.tg(web, iid(1), port=8081)]))
    out = C.take_out(cap(aws), [plan], 600)[0]
    start = aws.clock()
    back = C.put_back(cap(aws), [dict(out, plan=plan, back_in=False)], 600, 600)[0]
    assert (back["outcome"], back["back_in"]) == ("success", True)
    assert [kw["Targets"] for a, kw in aws.elb.calls if a == "RegisterTargets"] == [[{"Id": iid(1), "Port": 8081}]]
    assert aws.clock() >= start + 5 and aws.elb.state(web, iid(1))[0] == "healthy"
    assert aws.ec2.tags[iid(1)] == {}


def test_a_target_never_healthy_is_unhealthy_at_lb_healthy_timeout(aws):
    web = aws.elb.add_group("web", drain_s=1, members=[iid(1)])
    aws.elb.unhealthy.add(iid(1))
    plan = C.plan(inst(1, [aws.elb.tg(web, iid(1))]))
    out = C.take_out(cap(aws), [plan], 600)[0]
    back = C.put_back(cap(aws), [dict(out, plan=plan, back_in=False)], 40, 600)[0]
    assert back["outcome"] == "unhealthy" and back["back_in"] is True  # registered: only its health failed
    assert "not healthy after 40 s: web unhealthy/Target.ResponseCodeMismatch" in back["error"]


def test_deregister_refused_fails_the_group_s_instances_only(aws):
    web = aws.elb.add_group("web", drain_s=1, members=[iid(1)])
    api = aws.elb.add_group("api", drain_s=1, members=[iid(1), iid(2)])
    original = aws.elb.deregister_targets

    def refuse_web(TargetGroupArn, Targets):
        if TargetGroupArn == web:
            raise client_error("AccessDenied", "DeregisterTargets", "not allowed")
        return original(TargetGroupArn=TargetGroupArn, Targets=Targets)

    aws.elb.deregister_targets = refuse_web
    one, two = C.take_out(cap(aws), [C.plan(inst(1, [aws.elb.tg(web, iid(1)), aws.elb.tg(api, iid(1))])),
                                     C.plan(inst(2, [aws.elb.tg(api, iid(2))]))], 600)
    assert one["outcome"] == "drain_failed" and "AccessDenied" in one["error"]
    assert [g["arn"] for g in one["deregistered"]] == [api]  # what was deregistered all the same goes back later
    assert two["outcome"] == "success"


def standby_fleet(aws, size=6, min_size=2):
    members = [iid(n) for n in range(size)]
    web = aws.elb.add_group("web", drain_s=3, members=members)
    extra = aws.elb.add_group("extra", drain_s=3, members=members[:1])  # not attached to the group: drained by us
    aws.asg.add_group("asg", members, min_size=min_size, target_groups=[web])
    return members, web, extra


def test_standby_within_min_size_decrements_and_puts_back_desired_capacity(aws):
    members, web, extra = standby_fleet(aws, size=6, min_size=3)
    plans = [C.plan(inst(n, [aws.elb.tg(web, iid(n))] + ([aws.elb.tg(extra, iid(n))] if n == 0 else []), asg_name="asg",
                         asg_mode="standby")) for n in range(5)]
    results = C.take_out(cap(aws), plans, 600)
    outcomes = [r["outcome"] for r in results]
    assert outcomes == ["success"] * 3 + ["min_size"] * 2  # desired 6, MinSize 3: room for three
    assert "MinSize 3" in results[3]["error"] and aws.asg.count("EnterStandby") == 1
    assert aws.asg.groups["asg"]["desired"] == 3 and aws.asg.groups["asg"]["min"] == 3  # MinSize never touched
    assert [aws.asg.lifecycle("asg", i) for i in members[:3]] == ["Standby"] * 3
    # Auto Scaling deregistered the attached group itself; only the other group was deregistered by us
    assert [kw["TargetGroupArn"] for a, kw in aws.elb.calls if a == "DeregisterTargets"] == [extra]
    assert aws.elb.state(web, iid(0))[0] == "unused" and aws.ec2.tags[iid(0)][T.STANDBY] == "asg"
    assert iid(3) not in aws.ec2.tags or T.STANDBY not in aws.ec2.tags[iid(3)]
    outs = [dict(r, plan=p, back_in=False) for r, p in zip(results, plans) if r["outcome"] == "success"]
    back = C.put_back(cap(aws), outs, 600, 600)
    assert [b["outcome"] for b in back] == ["success"] * 3
    assert aws.asg.groups["asg"]["desired"] == 6 and all(aws.asg.lifecycle("asg", i) == "InService" for i in members)
    assert aws.elb.count("RegisterTargets") == 1  # the extra group only: Auto Scaling registered the attached one
    assert all(aws.elb.state(web, i)[0] == "healthy" for i in members) and T.STANDBY not in aws.ec2.tags[iid(0)]


def test_standby_calls_take_at_most_20_instances(aws):
    members = [iid(n) for n in range(45)]
    aws.asg.add_group("big", members, min_size=0)
    plans = [C.plan(inst(n, [], asg_name="big", asg_mode="standby")) for n in range(45)]
    results = C.take_out(cap(aws), plans, 600)
    assert {r["outcome"] for r in results} == {"success"}
    assert [len(kw["InstanceIds"]) for a, kw in aws.asg.calls if a == "EnterStandby"] == [20, 20, 5]
    C.put_back(cap(aws), [dict(r, plan=p, back_in=False) for r, p in zip(results, plans)], 600, 600)
    assert [len(kw["InstanceIds"]) for a, kw in aws.asg.calls if a == "ExitStandby"] == [20, 20, 5]
    assert aws.asg.groups["big"]["desired"] == 45


def test_a_min_size_refusal_from_auto_scaling_is_asg_min_size_and_the_tag_goes(aws):
    members, web, _extra = standby_fleet(aws, size=4, min_size=0)
    aws.asg.fail["EnterStandby"] = client_error("ValidationError", "EnterStandby", "desired capacity 1, which cannot be less than the minimum size.")
    result = C.take_out(cap(aws), [C.plan(inst(1, [aws.elb.tg(web, iid(1))], asg_name="asg", asg_mode="standby"))], 600)[0]
    assert result["outcome"] == "min_size" and aws.ec2.tags[iid(1)] == {}
    assert aws.asg.groups["asg"]["desired"] == 4 and not aws.elb.count("DeregisterTargets")
    assert members


def test_recover_registers_what_the_tags_name_and_exits_standby(aws):
    members, web, extra = standby_fleet(aws, size=3, min_size=0)
    api = aws.elb.add_group("api", port=8080, drain_s=1)
    # A killed run left i-1 drained from api (port 9090) and i-0 in standby (and drained from the unattached group).
    aws.asg.enter_standby(AutoScalingGroupName="asg", InstanceIds=[iid(0)], ShouldDecrementDesiredCapacity=True)
    aws.elb.drop(extra, [iid(0)])
    aws.ec2.tags = {iid(0): {T.STANDBY: "asg", T.DRAINED: "extra:80"}, iid(1): {T.DRAINED: "api:9090,gone:80"}}
    tagged = C.read_capacity_tags(aws.ec2, [iid(0), iid(1), iid(2)])
    assert tagged[iid(2)] == {} and tagged[iid(1)] == {T.DRAINED: "api:9090,gone:80"}
    aws.clock.sleep(5)
    results = C.recover(cap(aws), {k: v for k, v in tagged.items() if v}, 600)
    assert [r["outcome"] for r in results] == ["success", "success"]
    assert results[1]["registered"] == ["api"] and results[0]["exited_standby"] == "asg"
    assert aws.elb.groups[api]["targets"][iid(1)]["port"] == 9090 and iid(0) in aws.elb.groups[extra]["targets"]
    assert aws.asg.lifecycle("asg", iid(0)) == "InService" and aws.asg.groups["asg"]["desired"] == 3
    assert aws.ec2.tags == {iid(0): {}, iid(1): {}}
    assert members
