"""The gates (module_utils/gates.py) against in-memory CloudWatch and Parameter Store fakes with AWS's limits."""

from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils import gates
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError


def _error(code):
    return ClientError({"Error": {"Code": code, "Message": code}}, "op")


class FakeCloudWatch:
    """DescribeAlarms as the API reference documents it: AlarmTypes default metric only, <= 100 names, MaxRecords 50 pages."""

    def __init__(self, alarms):
        self.alarms = alarms  # name -> (type, state)
        self.calls = []

    def describe_alarms(self, AlarmTypes=None, AlarmNames=None, AlarmNamePrefix=None, NextToken=None):
        self.calls.append({"AlarmTypes": AlarmTypes, "AlarmNames": AlarmNames, "AlarmNamePrefix": AlarmNamePrefix, "NextToken": NextToken})
        if AlarmNames and len(AlarmNames) > 100:
            raise _error("ValidationError")
        types = AlarmTypes or ["MetricAlarm"]
        names = sorted(n for n in self.alarms if (n in AlarmNames if AlarmNames else n.startswith(AlarmNamePrefix or ""))
                       and self.alarms[n][0] in types)
        start = int(NextToken or 0)
        page = names[start:start + 50]
        out = {"MetricAlarms": [], "CompositeAlarms": []}
        for name in page:
            kind, state = self.alarms[name]
            out["MetricAlarms" if kind == "MetricAlarm" else "CompositeAlarms"].append(
                {"AlarmName": name, "StateValue": state, "StateReason": "r", "StateUpdatedTimestamp": datetime(2026, 1, 1, tzinfo=timezone.utc)})
        if start + 50 < len(names):
            out["NextToken"] = str(start + 50)
        return out


class FakeSsm:
    def __init__(self, params=None, error=None):
        self.params = params or {}
        self.error = error

    def get_parameter(self, Name):
        if self.error:
            raise _error(self.error)
        if Name not in self.params:
            raise _error("ParameterNotFound")
        return {"Parameter": {"Name": Name, "Value": self.params[Name]}}


def reader(cw, ssm, alarms=(), prefix="", on_missing_data=False, stop="/cms-patching/stop"):
    clients = {"cloudwatch": cw, "ssm": ssm}
    seen = []

    def client_for(service, region, role_arn, external_id):
        seen.append((service, region, role_arn, external_id))
        return clients[service]
    r = gates.GateReader(client_for, gates.normalise_alarms(list(alarms)), prefix, "us-east-1", stop, on_missing_data)
    r.seen = seen
    return r


def test_composite_alarms_are_read_and_names_go_100_per_call():
    names = [f"a{n:03d}" for n in range(230)]
    cw = FakeCloudWatch({**{n: ("MetricAlarm", "OK") for n in names}, "comp": ("CompositeAlarm", "ALARM")})
    state = reader(cw, FakeSsm(), alarms=names + ["comp"]).read()
    assert state["verdict"] == "alarm" and state["alarm_name"] == "comp"
    assert all(c["AlarmTypes"] == ["MetricAlarm", "CompositeAlarm"] for c in cw.calls)
    assert [len(c["AlarmNames"]) for c in cw.calls if not c["NextToken"]] == [100, 100, 31]
    assert len(state["alarms"]) == 231


def test_a_missing_alarm_makes_the_gate_unreadable_with_one_line():
    cw = FakeCloudWatch({"web-5xx": ("MetricAlarm", "OK")})
    state = reader(cw, FakeSsm(), alarms=["web-5xx", "web-5xxx"]).read()
    assert state["verdict"] == "unreadable"
    assert state["error"] == "cms_patching_alarms: no CloudWatch alarm (metric or composite) named web-5xxx in us-east-1"
    empty = reader(cw, FakeSsm(), prefix="db-").read()
    assert empty["verdict"] == "unreadable" and "starts with 'db-'" in empty["error"]


def test_insufficient_data_is_an_alarm_only_when_asked():
    cw = FakeCloudWatch({"new": ("MetricAlarm", "INSUFFICIENT_DATA")})
    assert reader(cw, FakeSsm(), alarms=["new"]).read()["verdict"] == "go"
    assert reader(cw, FakeSsm(), alarms=["new"], on_missing_data=True).read()["alarm_name"] == "new"


def test_stop_switch_missing_means_go_and_stop_stops():
    cw = FakeCloudWatch({})
    assert reader(cw, FakeSsm()).read()["verdict"] == "go"
    assert reader(cw, FakeSsm({"/cms-patching/stop": "go"})).read()["verdict"] == "go"
    state = reader(cw, FakeSsm({"/cms-patching/stop": "stop"})).read()
    assert (state["verdict"], state["stop_value"]) == ("stop", "stop")
    denied = reader(cw, FakeSsm(error="AccessDeniedException")).read()
    assert denied["verdict"] == "unreadable" and "AccessDeniedException" in denied["error"] and "\n" not in denied["error"]


def test_an_alarm_wins_over_the_stop_switch():
    cw = FakeCloudWatch({"web": ("MetricAlarm", "ALARM")})
    assert reader(cw, FakeSsm({"/cms-patching/stop": "stop"}), alarms=["web"]).read()["verdict"] == "alarm"


def test_alarms_of_other_regions_and_accounts_are_read_with_their_own_clients():
    cw = FakeCloudWatch({"a": ("MetricAlarm", "OK"), "b": ("MetricAlarm", "OK")})
    r = reader(cw, FakeSsm(), alarms=["a", {"name": "b", "region": "eu-west-1", "role_arn": "arn:aws:iam::222222222222:role/cms-patching"}])
    assert r.read()["verdict"] == "go"
    assert ("cloudwatch", "us-east-1", None, None) in r.seen
    assert ("cloudwatch", "eu-west-1", "arn:aws:iam::222222222222:role/cms-patching", None) in r.seen
    assert ("ssm", "us-east-1", None, None) in r.seen  # the stop switch: the controller's default account and region


@pytest.mark.parametrize("params, message", [
    ({"alarms": ["a"], "alarm_prefix": "b"}, "not both"),
    ({"alarms": [{"region": "x"}]}, "each entry must be an alarm name"),
    ({"alarms": [{"name": "a", "regoin": "x"}]}, "unknown key regoin"),
    ({"bake_time": -1}, "cms_patching_bake_time must be 0 or more"),
])
def test_bad_settings_are_one_line(params, message):
    with pytest.raises(PatchingError) as err:
        gates.validate(dict({"poll_interval": 1, "bake_time": 0}, **params))
    assert message in str(err.value) and "\n" not in str(err.value)


class Clock:
    """Simulated time: sleep() moves it; reads take no time."""

    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_the_bake_reads_until_its_end_and_stops_at_the_first_alarm():
    clock = Clock()
    verdicts = iter(["go", "go", "go", "alarm"])
    result = gates.watch(lambda: {"verdict": next(verdicts)}, bake_time=100, poll_interval=30, clock=clock.clock, sleep=clock.sleep)
    assert (result["verdict"], result["polls"], clock.now) == ("alarm", 4, 90)

    clock = Clock()
    result = gates.watch(lambda: {"verdict": "go"}, bake_time=100, poll_interval=30, clock=clock.clock, sleep=clock.sleep)
    # Reads at 0, 30, 60, 90 and 100: the last one at the end of the bake, not a poll later.
    assert (result["verdict"], result["polls"], clock.now) == ("go", 5, 100)

    clock = Clock()
    assert gates.watch(lambda: {"verdict": "go"}, 0, 30, clock.clock, clock.sleep)["polls"] == 1 and clock.now == 0


@pytest.mark.parametrize("waves, selected", [
    ([], [1, 2, 3, 4, 5, 6]), ([1], [1]), (["2-"], [2, 3, 4, 5, 6]), ([1, "4-"], [1, 4, 5, 6]), ("2", [2]), ([2, 3], [2, 3]),
])
def test_the_job_runs_the_waves_it_is_given(waves, selected):
    assert [n for n in range(1, 7) if gates.wave_selected(n, waves)] == selected


@pytest.mark.parametrize("bad", [[0], ["x"], ["-2"], [1.5], "a-"])
def test_bad_wave_selections_are_one_line(bad):
    with pytest.raises(PatchingError) as err:
        gates.wave_selected(1, bad)
    assert "cms_patching_waves must list wave numbers" in str(err.value)


def test_held_entries_name_the_gate_and_the_wave():
    expected = {"instance_id": "i-1", "final_status": "not_patched", "reason": "alarm", "alarm_name": "web-5xx", "stop_wave": 2}
    assert gates.held_entry("i-1", "alarm", "web-5xx", 2) == expected
    assert gates.held_entry("i-1", "stop", None, 3)["reason"] == "stopped_by_operator"
    assert "alarm_name" not in gates.held_entry("i-1", "approval_timeout")


def test_bake_rollback_entries():
    restored = [{"instance_id": "i-1", "final_status": "rolled_back", "rollback": {"status": "succeeded"}},
                {"instance_id": "i-2", "final_status": "failed", "reason": "rollback_failed", "rollback": {"status": "failed"}}]
    entries = gates.bake_rollback_entries(restored, "web-5xx")
    expected = [("rolled_back", "alarm", "web-5xx"), ("failed", "rollback_failed", "web-5xx")]
    assert [(e["final_status"], e["reason"], e["alarm_name"]) for e in entries] == expected


def test_the_approval_reason_a_failure_path_records():
    ended = "2026-11-30T10:00:00Z"
    at = datetime(2026, 11, 30, 14, 0, 0, tzinfo=timezone.utc)  # 4 h later
    assert gates.approval_reason("approval_not_given", ended, 14400, now=at) == "approval_timeout"
    assert gates.approval_reason("approval_not_given", ended, 14401, now=at) == "approval_denied"
    assert gates.approval_reason("approval_not_given", None, 14400, now=at) == "approval_denied"
    assert gates.approval_reason("approval_not_given", ended, 0, now=at) == "approval_denied"
    assert gates.approval_reason("approval_timeout") == "approval_timeout"


class FakeElb:
    """DescribeTargetHealth with Targets: the states of the targets asked for, in that target group only."""

    def __init__(self, health):
        self.health = health  # {(arn, iid): state}
        self.calls = []

    def describe_target_health(self, TargetGroupArn, Targets=None):
        self.calls.append((TargetGroupArn, sorted(t["Id"] for t in Targets or [])))
        return {"TargetHealthDescriptions": [
            {"Target": dict(t), "TargetHealth": {"State": self.health[(TargetGroupArn, t["Id"])], "Reason": "Target.FailedHealthChecks"}}
            for t in Targets or [] if (TargetGroupArn, t["Id"]) in self.health]}


TG_WEB = "arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/web/abc"
TG_API = "arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/api/def"
TG_IDLE = "arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/idle/fed"


def _instance(iid, groups, region="us-east-1", role_arn=""):
    return {"instance_id": iid, "region": region, "role_arn": role_arn, "external_id": "",
            "target_groups": [{"arn": arn, "name": arn.split("/")[-2], "port": 80, "state": state} for arn, state in groups]}


def target_reader(elbs, targets, alarms=None, stop_params=None):
    """A GateReader over one FakeElb per (region, role_arn); alarms {name: state} and the stop switch fakes as above."""
    cw = FakeCloudWatch({n: ("MetricAlarm", s) for n, s in (alarms or {}).items()})
    ssm = FakeSsm(stop_params or {})
    seen = []

    def client_for(service, region, role_arn, external_id):
        seen.append((service, region, role_arn))
        return elbs[(region, role_arn)] if service == "elbv2" else {"cloudwatch": cw, "ssm": ssm}[service]
    r = gates.GateReader(client_for, gates.normalise_alarms(list(alarms or {})), "", "us-east-1", "/cms-patching/stop", targets=targets)
    r.seen = seen
    return r


def test_an_unhealthy_target_during_the_bake_is_bake_unhealthy_with_its_target_group():
    elb = FakeElb({(TG_WEB, "i-1"): "healthy", (TG_WEB, "i-2"): "healthy", (TG_API, "i-2"): "unhealthy"})
    targets = [_instance("i-1", [(TG_WEB, "healthy")]), _instance("i-2", [(TG_WEB, "healthy"), (TG_API, "healthy")])]
    state = target_reader({("us-east-1", None): elb}, targets).read()
    assert (state["verdict"], state["target_group"], state["unhealthy_instance"]) == ("bake_unhealthy", "api", "i-2")
    # batched: one call per target group with every wave target in it
    assert sorted(elb.calls) == [(TG_API, ["i-2"]), (TG_WEB, ["i-1", "i-2"])]


@pytest.mark.parametrize("state", ["initial", "draining", "healthy", "unused"])
def test_initial_draining_and_healthy_targets_are_not_unhealthy(state):
    elb = FakeElb({(TG_WEB, "i-1"): state})
    assert target_reader({("us-east-1", None): elb}, [_instance("i-1", [(TG_WEB, "healthy")])]).read()["verdict"] == "go"


def test_unused_target_groups_are_not_read_and_other_accounts_use_their_own_clients():
    role = "arn:aws:iam::222222222222:role/patch"
    home, other = FakeElb({(TG_IDLE, "i-1"): "unhealthy"}), FakeElb({(TG_WEB, "i-9"): "unhealthy"})
    targets = [_instance("i-1", [(TG_IDLE, "unused")]), _instance("i-9", [(TG_WEB, "healthy")], "eu-west-1", role)]
    r = target_reader({("us-east-1", None): home, ("eu-west-1", role): other}, targets)
    state = r.read()
    assert (state["verdict"], state["unhealthy_instance"]) == ("bake_unhealthy", "i-9")
    assert home.calls == [] and other.calls == [(TG_WEB, ["i-9"])]
    assert ("elbv2", "eu-west-1", role) in r.seen


def test_an_alarm_wins_over_an_unhealthy_target_which_wins_over_the_stop_switch():
    elb = FakeElb({(TG_WEB, "i-1"): "unhealthy"})
    targets = [_instance("i-1", [(TG_WEB, "healthy")])]
    assert target_reader({("us-east-1", None): elb}, targets, alarms={"web-5xx": "ALARM"}).read()["verdict"] == "alarm"
    assert target_reader({("us-east-1", None): elb}, targets, stop_params={"/cms-patching/stop": "stop"}).read()["verdict"] == "bake_unhealthy"


def test_bake_unhealthy_entries_name_the_target_group():
    held = gates.held_entry("i-3", "bake_unhealthy", None, 2, "api")
    assert held == {"instance_id": "i-3", "final_status": "not_patched", "reason": "bake_unhealthy", "target_group": "api", "stop_wave": 2}
    restored = [{"instance_id": "i-1", "final_status": "rolled_back", "rollback": {"status": "succeeded"}}]
    entry = gates.bake_rollback_entries(restored, None, "api")[0]
    assert (entry["final_status"], entry["reason"], entry["target_group"], "alarm_name" in entry) == ("rolled_back", "bake_unhealthy", "api", False)


# ---------------------------------------------------------------- a target-health read that fails is not a healthy one


class FailingElb(FakeElb):
    """FakeElb whose DescribeTargetHealth of some target groups fails with an AWS error (message over two lines)."""

    def __init__(self, health, failing, code="AccessDenied"):
        super().__init__(health)
        self.failing, self.code = failing, code

    def describe_target_health(self, TargetGroupArn, Targets=None):
        if TargetGroupArn in self.failing:
            self.calls.append((TargetGroupArn, sorted(t["Id"] for t in Targets or [])))
            raise ClientError({"Error": {"Code": self.code, "Message": "not allowed\n  on this target group"}}, "DescribeTargetHealth")
        return super().describe_target_health(TargetGroupArn, Targets)


def test_a_failed_target_health_read_during_the_bake_is_unreadable_not_go():
    # web answers healthy, api fails: before, the failed group was skipped and the verdict was go (a blind bake).
    elb = FailingElb({(TG_WEB, "i-1"): "healthy"}, failing={TG_API})
    targets = [_instance("i-1", [(TG_WEB, "healthy")]), _instance("i-2", [(TG_API, "healthy")])]
    state = target_reader({("us-east-1", None): elb}, targets).read()
    assert state["verdict"] == "unreadable", state
    assert state["error"] == "elasticloadbalancing:DescribeTargetHealth failed for api: AccessDenied: not allowed on this target group"
    assert gates.REASONS[state["verdict"]] == "gate_unreadable"


def test_a_wave_target_the_read_does_not_describe_is_unreadable():
    # DescribeTargetHealth answered, but without i-2 (asked for by Targets=): no word on it is no health.
    elb = FakeElb({(TG_WEB, "i-1"): "healthy"})
    targets = [_instance("i-1", [(TG_WEB, "healthy")]), _instance("i-2", [(TG_WEB, "healthy")])]
    state = target_reader({("us-east-1", None): elb}, targets).read()
    assert (state["verdict"], state["error"]) == ("unreadable", "elasticloadbalancing:DescribeTargetHealth gave no health for i-2 in target group web")


def test_an_unhealthy_target_seen_is_enough_even_when_another_read_failed():
    # i-1 unhealthy in web, api unreadable: what was seen already rolls the wave back (unreadable would only stop the run).
    elb = FailingElb({(TG_WEB, "i-1"): "unhealthy"}, failing={TG_API}, code="Throttling")
    targets = [_instance("i-1", [(TG_WEB, "healthy"), (TG_API, "healthy")])]
    state = target_reader({("us-east-1", None): elb}, targets).read()
    assert (state["verdict"], state["target_group"], state["unhealthy_instance"]) == ("bake_unhealthy", "web", "i-1")


def test_a_firing_alarm_wins_over_a_target_health_read_that_failed():
    # The alarm rolls the wave back; an unreadable target group must not turn that into a mere stop (unreadable).
    elb = FailingElb({}, failing={TG_WEB})
    targets = [_instance("i-1", [(TG_WEB, "healthy")])]
    state = target_reader({("us-east-1", None): elb}, targets, alarms={"web-5xx": "ALARM"}).read()
    assert (state["verdict"], state["alarm_name"], state["error"]) == ("alarm", "web-5xx", None)
    assert elb.calls == []  # decided on the alarm: nothing read after it


def test_the_waves_own_target_waits_still_take_a_failed_read_as_a_poll_that_saw_nothing():
    from ansible_collections.cms.patching.plugins.module_utils.capacity import Capacity  # pylint: disable=import-outside-toplevel

    class Clients:
        def get(self, service):
            assert service == "elbv2"
            return elb

    elb = FailingElb({(TG_WEB, "i-1"): "healthy"}, failing={TG_API})
    cap = Capacity(Clients(), lambda: 0.0, lambda s: None, 0)
    assert cap.target_states({TG_WEB: [("i-1", 80)], TG_API: [("i-1", 80)]}) == {(TG_WEB, "i-1"): ("healthy", "Target.FailedHealthChecks")}
