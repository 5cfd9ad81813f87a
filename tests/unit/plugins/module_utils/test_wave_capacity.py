"""The wave engine's capacity steps (recover, drain, register, reregister) with the real capacity code on the in-memory
ELBv2 / Auto Scaling / EC2 tags, and fake patch and command steps: every new row of the fault table, check mode, and
putting back what a killed run left out."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.wave_engine import AwsSteps, no_success_message, run_wave
from ansible_collections.cms.patching.plugins.module_utils.waves import DRAIN_FAILURES, REGISTER_FAILURES

from ansible_collections.cms.patching.tests.unit.fakes.capacity import Clients, client_error
from ansible_collections.cms.patching.tests.unit.fakes.wave import Clock, iid, wave_params

AMI = "ami-0123456789abcdef0"
WRITES = ("DeregisterTargets", "RegisterTargets", "EnterStandby", "ExitStandby", "CreateTags", "DeleteTags")


def params(instances, **kw):
    return wave_params(instances, **dict(dict(status_tags=False, run_id="run-cap", poll_interval=2.0, drain_timeout=None,
                                              lb_healthy_timeout=120, standby_timeout=120), **kw))


class Steps(AwsSteps):
    """Real capacity steps on the fakes; gate, commands, patch and restore follow each instance's plan. The patch
    records which of its instances still had a serving target at that moment (there must be none)."""

    def __init__(self, aws, plan=None):
        super().__init__(clock=aws.clock, sleep=aws.clock.sleep)
        self.aws, self.plan, self.log, self.serving_at_patch = aws, plan or {}, [], []

    def gate(self, clients, instance_ids, max_age_hours):
        return {i: {"image_id": AMI} for i in instance_ids}

    def command(self, clients, params, check_mode):
        ids = [t["instance_id"] for t in params["targets"]]
        self.log.append((params["step"], ids))
        return [{"instance_id": i, "outcome": "would_run" if check_mode else self.plan.get(i, {}).get(params["step"], "success")} for i in ids]

    def patch(self, clients, params, check_mode):
        self.log.append(("patch", params["instance_ids"]))
        for i in params["instance_ids"]:
            for arn in self.aws.elb.groups:
                if self.aws.elb.state(arn, i)[0] in ("initial", "healthy", "unhealthy", "draining"):
                    self.serving_at_patch.append((i, arn))
            for name in self.aws.asg.groups:
                if i in self.aws.asg.groups[name]["members"] and self.aws.asg.lifecycle(name, i) != "Standby" and self.plan.get(i, {}).get("standby"):
                    self.serving_at_patch.append((i, name))
        return [{"instance_id": i, "command_id": None if check_mode else "cmd-1",
                 "outcome": "would_run" if check_mode else self.plan.get(i, {}).get("patch", "success")} for i in params["instance_ids"]]

    def restore(self, clients, params, check_mode):
        ids = [t["instance_id"] for t in params["instances"]]
        self.log.append(("rollback", ids))
        for i in ids:
            self.aws.elb.unhealthy.discard(i)  # the pre-patch image serves again
        return [{"instance_id": t["instance_id"], "image_id": t["image_id"], "task_id": "replacevol-1", "status": "succeeded",
                 "error": None} for t in params["instances"]]

    def tag(self, clients, resource_ids, tags):
        pass


class Session:
    def __init__(self, aws):
        self.aws = aws

    def client(self, service, max_attempts=None):
        return self.aws.get(service, max_attempts)


def instance(n, groups=(), **kw):
    return dict(dict(instance_id=iid(n), region="us-east-1", account_id="111111111111", platform="linux", precheck_commands=["true"],
                     restart_services=[], health_checks=["curl -f localhost"], target_groups=list(groups), capacity_tags={}), **kw)


def wave(aws, instances, plan=None, check_mode=False, **kw):
    steps = Steps(aws, plan)
    result = run_wave(params(instances, **kw), check_mode, lambda *_key: Session(aws), steps=steps, now=Clock())
    return result, steps, {e["instance_id"]: e for e in result["results"]}


@pytest.fixture
def aws():
    return Clients(health_s=5.0, transition_s=2.0)


@pytest.fixture
def lb(aws):
    """Four instances behind two target groups (web: all, api on 8080: the first two)."""
    ids = [iid(n) for n in range(4)]
    web = aws.elb.add_group("web", drain_s=10, members=ids)
    api = aws.elb.add_group("api", port=8080, drain_s=20, members=ids[:2])
    return [instance(n, [aws.elb.tg(web, iid(n))] + ([aws.elb.tg(api, iid(n))] if n < 2 else [])) for n in range(4)], web, api


def everything_registered(aws, instances):
    return all(tg["arn"] in aws.elb.groups and i["instance_id"] in aws.elb.groups[tg["arn"]]["targets"]
               for i in instances for tg in i["target_groups"])


def test_drain_patch_register_healthy(aws, lb):
    instances, web, api = lb
    result, steps, by_id = wave(aws, instances)
    assert {e["final_status"] for e in by_id.values()} == {"patched"}
    assert steps.serving_at_patch == []  # nothing took traffic while it was patched
    assert aws.elb.count("DeregisterTargets") == 2 and aws.elb.count("RegisterTargets") == 2  # per target group
    assert everything_registered(aws, instances) and all(aws.elb.state(web, i["instance_id"])[0] == "healthy" for i in instances)
    entry = by_id[iid(0)]
    assert list(entry["steps"]) == ["gate", "precheck", "drain", "patch", "health", "register"]
    assert entry["steps"]["drain"]["ended_at"] <= entry["steps"]["patch"]["started_at"] <= entry["steps"]["register"]["started_at"]
    assert entry["capacity"] == dict(mode="drain", target_groups=["web", "api"], asg_name=None, drained=["web", "api"], standby=False,
                                     back_in_service=True, healthy=True)
    assert result["summary"]["steps"]["drain"] == {"passed": 4, "failed": 0}
    assert all(tags == {} for tags in aws.ec2.tags.values())  # the drained tags are gone once back
    assert api


def test_lb_unhealthy_is_rolled_back_and_registered_again(aws, lb):
    instances, web, _api = lb
    aws.elb.unhealthy.add(iid(2))
    result, steps, by_id = wave(aws, instances, lb_healthy_timeout=30)
    entry = by_id[iid(2)]
    assert (entry["final_status"], entry["reason"]) == ("rolled_back", "lb_unhealthy")
    assert entry["validation"] == {"passed": False, "failures": ["lb_unhealthy"]}
    assert ("rollback", [iid(2)]) in steps.log
    assert entry["steps"]["register"]["outcome"] == "unhealthy" and entry["steps"]["reregister"]["outcome"] == "success"
    assert entry["capacity"]["back_in_service"] is True and entry["capacity"]["healthy"] is True
    assert aws.elb.state(web, iid(2))[0] == "healthy" and everything_registered(aws, instances)
    assert result["outcomes"][iid(2)]["reason"] == "lb_unhealthy"


def test_drain_stuck_fails_before_the_patch_and_is_registered_again(aws, lb):
    instances, web, _api = lb
    aws.elb.stuck.add(iid(3))
    _result, steps, by_id = wave(aws, instances, drain_timeout=25)
    entry = by_id[iid(3)]
    assert (entry["final_status"], entry["reason"]) == ("failed", "drain_timeout")
    assert "still draining after 25 s: web" in entry["steps"]["drain"]["error"]
    assert iid(3) not in [i for step, ids in steps.log if step == "patch" for i in ids]
    assert not [s for s, ids in steps.log if s == "rollback"]
    assert entry["steps"]["reregister"]["outcome"] == "success" and iid(3) in aws.elb.groups[web]["targets"]
    assert {by_id[iid(n)]["final_status"] for n in range(3)} == {"patched"}


def test_a_health_check_failure_is_rolled_back_then_registered(aws, lb):
    instances, _web, _api = lb
    _result, steps, by_id = wave(aws, instances, plan={iid(1): {"health": "failed"}})
    entry = by_id[iid(1)]
    assert (entry["final_status"], entry["reason"]) == ("rolled_back", "health_check_failed")
    assert "register" not in entry["steps"] and entry["steps"]["reregister"]["outcome"] == "success"
    assert steps.log.index(("rollback", [iid(1)])) < len(steps.log)
    assert everything_registered(aws, instances)


def test_a_failed_patch_without_rollback_is_registered_again(aws, lb):
    instances, _web, _api = lb
    _result, _steps, by_id = wave(aws, instances, plan={iid(0): {"patch": "undeliverable"}})
    assert (by_id[iid(0)]["final_status"], by_id[iid(0)]["reason"]) == ("failed", "undeliverable")
    assert by_id[iid(0)]["capacity"]["back_in_service"] is True and everything_registered(aws, instances)


def test_check_mode_changes_nothing_and_says_what_it_would_drain(aws, lb):
    instances, _web, _api = lb
    aws.asg.add_group("asg", [iid(9)], min_size=0)
    result, _steps, by_id = wave(aws, instances + [instance(9, asg_name="asg", asg_mode="standby")], check_mode=True)
    assert not [c for c in aws.calls() if c in WRITES], aws.calls()
    assert by_id[iid(0)]["capacity"]["would_drain"] == ["web", "api"]
    assert by_id[iid(9)]["capacity"]["would_enter_standby"] == "asg"
    assert by_id[iid(0)]["steps"]["drain"]["outcome"] == "would_drain" and "final_status" not in by_id[iid(0)]
    assert result["summary"]["steps"]["drain"] == {"passed": 5, "failed": 0}


def test_standby_members_within_min_size_the_rest_asg_min_size(aws):
    members = [iid(n) for n in range(6)]
    web = aws.elb.add_group("web", drain_s=3, members=members)
    aws.asg.add_group("asg", members, min_size=4, target_groups=[web])
    instances = [instance(n, [aws.elb.tg(web, iid(n))], asg_name="asg", asg_mode="standby") for n in range(3)]
    plan = {i: {"standby": True} for i in members}
    _result, steps, by_id = wave(aws, instances, plan=plan)
    assert [by_id[iid(n)]["final_status"] for n in range(3)] == ["patched", "patched", "failed"]
    assert by_id[iid(2)]["reason"] == "asg_min_size" and "MinSize 4" in by_id[iid(2)]["steps"]["drain"]["error"]
    assert steps.serving_at_patch == [] and [i for s, ids in steps.log if s == "patch" for i in ids] == [iid(0), iid(1)]
    assert aws.asg.groups["asg"]["desired"] == 6 and all(aws.asg.lifecycle("asg", i) == "InService" for i in members)
    assert not aws.elb.count("DeregisterTargets") and not aws.elb.count("RegisterTargets")  # Auto Scaling's own job
    assert by_id[iid(0)]["capacity"]["standby"] is True and by_id[iid(0)]["capacity"]["healthy"] is True
    assert all(aws.elb.state(web, i)[0] == "healthy" for i in members)


def test_in_place_members_are_drained_like_any_instance(aws):
    web = aws.elb.add_group("web", drain_s=3, members=[iid(0), iid(1)])
    aws.asg.add_group("asg", [iid(0), iid(1)], min_size=2, target_groups=[web])
    _result, _steps, by_id = wave(aws, [instance(0, [aws.elb.tg(web, iid(0))], asg_name="asg", asg_mode="in_place")])
    assert by_id[iid(0)]["final_status"] == "patched" and by_id[iid(0)]["capacity"]["mode"] == "drain"
    assert not aws.asg.count("EnterStandby") and aws.elb.count("DeregisterTargets") == 1


def test_a_killed_run_s_tags_are_put_back_before_anything_else(aws, lb):
    """A run killed mid-drain left i-1 drained from api and web (tags only record it): the next wave registers it first."""
    instances, web, api = lb
    aws.elb.drop(web, [iid(1)])
    aws.elb.drop(api, [iid(1)])
    aws.ec2.tags[iid(1)] = {T.DRAINED: "web:80,api:8080"}
    # It failed its pre-check this time: it is not drained again, so only the recovery puts it back.
    todo = [dict(i, capacity_tags=None) for i in instances]  # unknown: the wave reads them (DescribeInstances)
    _result, steps, by_id = wave(aws, todo, plan={iid(1): {"precheck": "failed"}})
    calls = aws.calls()
    assert calls.index("RegisterTargets") < calls.index("DeregisterTargets")
    assert steps.log[0][0] == "precheck" and by_id[iid(1)]["steps"]["recover"]["outcome"] == "success"
    assert list(by_id[iid(1)]["steps"])[0] == "recover"
    assert by_id[iid(1)]["capacity"]["recovered"]["registered"] == ["api", "web"]
    assert iid(1) in aws.elb.groups[web]["targets"] and iid(1) in aws.elb.groups[api]["targets"]
    assert aws.ec2.tags[iid(1)] == {} and aws.ec2.count("DescribeInstances") == 1  # one read for the partition


def test_a_killed_run_s_standby_is_exited(aws):
    aws.asg.add_group("asg", [iid(0), iid(1)], min_size=0)
    aws.asg.enter_standby(AutoScalingGroupName="asg", InstanceIds=[iid(0)], ShouldDecrementDesiredCapacity=True)
    aws.clock.sleep(5)
    _result, _steps, by_id = wave(aws, [instance(0, asg_name="asg", asg_mode="standby", capacity_tags={T.STANDBY: "asg"})],
                                  plan={iid(0): {"standby": True}})
    assert by_id[iid(0)]["steps"]["recover"]["outcome"] == "success" and by_id[iid(0)]["final_status"] == "patched"
    assert aws.asg.count("ExitStandby") == 2 and aws.asg.groups["asg"]["desired"] == 2
    assert aws.asg.lifecycle("asg", iid(0)) == "InService"


# Each new row of the fault table: how the instance is set up -> (final_status, reason, patched, rolled back).
def _rows(aws):
    web = aws.elb.add_group("web", drain_s=2, members=[iid(n) for n in range(10)])
    aws.asg.add_group("full", [iid(20)], min_size=1)
    aws.asg.add_group("ok", [iid(21), iid(22)], min_size=0)
    aws.elb.stuck.add(iid(1))
    aws.elb.unhealthy.add(iid(2))
    lb = {n: instance(n, [aws.elb.tg(web, iid(n))]) for n in range(10)}
    solo = aws.elb.add_group("solo", drain_s=2, members=[iid(4)])  # RegisterTargets is one call per group: its own
    lb[4] = instance(4, [aws.elb.tg(solo, iid(4))])
    return web, {
        "drain_timeout": (lb[1], ("failed", "drain_timeout", False, False)),
        "lb_unhealthy": (lb[2], ("rolled_back", "lb_unhealthy", True, True)),
        "asg_min_size": (instance(20, asg_name="full", asg_mode="standby"), ("failed", "asg_min_size", False, False)),
        "standby_failed": (instance(23, asg_name="missing", asg_mode="standby"), ("failed", "standby_failed", False, False)),
        "drain_failed": (instance(3, [dict(aws.elb.tg(web, iid(3)), arn=web + "-gone")]), ("failed", "drain_failed", False, False)),
        "standby_exit_failed": (instance(21, asg_name="ok", asg_mode="standby"), ("failed", "standby_exit_failed", True, False)),
        "register_failed": (lb[4], ("failed", "register_failed", True, False)),
    }


def test_every_new_row_of_the_fault_table(aws):
    web, rows = _rows(aws)
    reasons = set(DRAIN_FAILURES.values()) | {r for r, _rb in REGISTER_FAILURES.values()}
    assert reasons == set(rows), "a new capacity row of the fault table needs its case here"
    original_exit, original_register = aws.asg.exit_standby, aws.elb.register_targets
    first = {"exit": True, "register": True}

    def exit_once_refused(**kw):  # the first ExitStandby (after the health checks) is refused, the put-back works
        if first["exit"]:
            first["exit"] = False
            raise client_error("ValidationError", "ExitStandby", "refused")
        return original_exit(**kw)

    def register_once_refused(**kw):
        if first["register"] and any(t["Id"] == iid(4) for t in kw["Targets"]):
            first["register"] = False
            raise client_error("AccessDenied", "RegisterTargets", "refused")
        return original_register(**kw)

    aws.asg.exit_standby, aws.elb.register_targets = exit_once_refused, register_once_refused
    aws.elb.groups[web + "-gone"] = {"name": "web", "port": 80, "drain_s": 1, "targets": {}, "draining": {}}  # deregister: InvalidTarget
    instances = [inst for inst, _expected in rows.values()]
    _result, steps, by_id = wave(aws, instances, drain_timeout=20, lb_healthy_timeout=30)
    patched = {i for s, ids in steps.log if s == "patch" for i in ids}
    rolled = {i for s, ids in steps.log if s == "rollback" for i in ids}
    for reason, (inst, (status, want_reason, was_patched, rolled_back)) in rows.items():
        entry = by_id[inst["instance_id"]]
        got = (entry["final_status"], entry.get("reason"), inst["instance_id"] in patched, inst["instance_id"] in rolled)
        assert got == (status, want_reason, was_patched, rolled_back), (reason, entry)
    # Whatever each took out is back: registered, or out of standby, and the group at its desired capacity
    assert all(iid(n) in aws.elb.groups[web]["targets"] for n in (1, 2)) and iid(4) in aws.elb.groups[lb_arn(aws, 'solo')]["targets"]
    assert aws.asg.lifecycle("ok", iid(21)) == "InService" and aws.asg.groups["ok"]["desired"] == 2
    assert aws.asg.groups["full"]["desired"] == 1


def lb_arn(aws, name):
    return next(arn for arn, g in aws.elb.groups.items() if g["name"] == name)


def test_bad_capacity_input_is_one_line_before_any_call(aws):
    for bad, message in ((dict(asg_mode="sideways"), "unknown asg_mode 'sideways'"),
                         (dict(target_groups=[{"name": "web"}]), "a target group without arn")):
        with pytest.raises(PatchingError, match=message):
            wave(aws, [instance(0, **bad)])
    with pytest.raises(PatchingError, match="drain_timeout must be greater than 0"):
        wave(aws, [instance(0)], drain_timeout=0)
    assert aws.calls() == []


def test_mode_recover_only_puts_back_and_reports_the_tagged(aws, lb):
    instances, web, _api = lb
    aws.elb.drop(web, [iid(2)])
    aws.ec2.tags[iid(2)] = {T.DRAINED: "web:80"}
    result, steps, by_id = wave(aws, [dict(i, capacity_tags=None) for i in instances], mode="recover")
    assert list(by_id) == [iid(2)] and by_id[iid(2)]["capacity"]["recovered"]["registered"] == ["web"]
    assert steps.log == [] and not aws.elb.count("DeregisterTargets")  # nothing patched, nothing drained
    assert iid(2) in aws.elb.groups[web]["targets"] and result["changed"] is True
    again, _steps, _by_id = wave(aws, [dict(i, capacity_tags=None) for i in instances], mode="recover")
    assert again["results"] == [] and again["changed"] is False  # the tags are gone: nothing left to put back
    assert no_success_message(again, False) is None
