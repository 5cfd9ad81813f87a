"""The batched SSM runner: status mapping, batching, one ListCommands per poll and its own execution deadline.

The fake SSM below is time-driven (a fake clock), so deadlines and cancels are tested without waiting.
"""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils.models import RunConfig
from ansible_collections.cms.patching.plugins.module_utils.ssm_agents import wait_online
from ansible_collections.cms.patching.plugins.module_utils.ssm_runner import CommandRequest, SsmRunner, send_command_params

DONE_AT = 2.0  # default: Pending until 1 s, InProgress until 2 s, then the plan's terminal status


def iid(n):
    return f"i-{n:017x}"


def client_error(code, op):
    return ClientError({"Error": {"Code": code, "Message": f"simulated {code}"}}, op)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        assert seconds >= 0
        self.t += seconds


class FakePaginator:
    def __init__(self, method):
        self.method = method

    def paginate(self, **params):
        yield self.method(**params)


class FakeSsm:
    """Invocation statuses as a function of fake time since SendCommand.

    plan[instance] = (status, details, output, response_code), reached at DONE_AT; "hang" stays InProgress and
    "undelivered" stays Pending until cancelled; "ignore-cancel" hangs even after CancelCommand.
    """

    def __init__(self, clock, plan=None, ping=None, before=None, after=None, fail_send=(), fail_polls=0, fail_lists=0):
        self.clock = clock
        self.plan = plan or {}
        self.ping = ping or {}        # instance -> callable(t) -> PingStatus, or None for not registered
        self.before = before or {}    # instance -> InstancePatchState before its invocation ends
        self.after = after or {}      # instance -> InstancePatchState once its invocation ended
        self.fail_send = set(fail_send)  # indexes of SendCommand calls that fail
        self.fail_polls = fail_polls
        self.fail_lists = fail_lists
        self.calls = []
        self.commands = {}
        self.cancelled = {}

    def get_paginator(self, op):
        return FakePaginator(getattr(self, op))

    def _record(self, op, kwargs):
        kwargs.pop("aws_retry", None)
        self.calls.append((op, kwargs))
        return kwargs

    def count(self, op):
        return sum(1 for call in self.calls if call[0] == op)

    def send_command(self, **kw):
        kw = self._record("send_command", kw)
        if len(kw["InstanceIds"]) > 50:
            raise client_error("ValidationException", "SendCommand")
        if self.count("send_command") - 1 in self.fail_send:
            raise client_error("InvalidInstanceId", "SendCommand")
        cid = str(uuid.uuid4())
        self.commands[cid] = dict(ids=list(kw["InstanceIds"]), at=self.clock())
        return {"Command": {"CommandId": cid, "RequestedDateTime": self.epoch()}}

    def epoch(self):
        """AWS's clock for the fake time: whole seconds, like the InvokedAfter filter."""
        return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.clock())

    def list_commands(self, **kw):
        kw = self._record("list_commands", kw)
        if self.fail_lists:
            self.fail_lists -= 1
            raise client_error("InternalError", "ListCommands")
        filters = {f["key"]: f["value"] for f in kw["Filters"]}
        assert filters["ExecutionStage"] == "Executing"
        since = datetime.strptime(filters["InvokedAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        out = []
        for cid, cmd in self.commands.items():
            views = [self._view(cid, i)[0] for i in cmd["ids"]]
            if self.epoch() - timedelta(seconds=self.clock() - cmd["at"]) >= since and {"Pending", "InProgress"} & set(views):
                out.append({"CommandId": cid, "Status": "InProgress"})
        return {"Commands": out}

    def _view(self, cid, instance):
        elapsed = self.clock() - self.commands[cid]["at"]
        plan = self.plan.get(instance, ("Success", "Success", "ok", 0))
        cancelled = self.cancelled.get((cid, instance))
        if cancelled is not None and plan != "ignore-cancel" and (plan in ("hang", "undelivered") or elapsed < DONE_AT):
            return "Cancelled", "Cancelled", "", -1
        if plan == "undelivered" or elapsed < 1:
            return "Pending", "Pending", "", -1
        if plan in ("hang", "ignore-cancel") or elapsed < DONE_AT:
            return "InProgress", "InProgress", "", -1
        return plan

    def list_command_invocations(self, **kw):
        kw = self._record("list_command_invocations", kw)
        if self.fail_polls:
            self.fail_polls -= 1
            raise client_error("InternalError", "ListCommandInvocations")
        cid = kw["CommandId"]
        out = []
        for instance in self.commands[cid]["ids"]:
            status, details, output, code = self._view(cid, instance)
            inv = {"InstanceId": instance, "Status": status, "StatusDetails": details, "CommandPlugins": []}
            if kw.get("Details"):
                inv["CommandPlugins"] = [{"Name": "aws:runShellScript", "Output": output, "ResponseCode": code}]
            out.append(inv)
        return {"CommandInvocations": out}

    def get_command_invocation(self, **kw):
        kw = self._record("get_command_invocation", kw)
        status, details, output, code = self._view(kw["CommandId"], kw["InstanceId"])
        return {"Status": status, "StatusDetails": details, "ResponseCode": code, "StandardOutputContent": output,
                "StandardErrorContent": ""}

    def cancel_command(self, **kw):
        kw = self._record("cancel_command", kw)
        for instance in kw["InstanceIds"]:
            self.cancelled[(kw["CommandId"], instance)] = self.clock()
        return {}

    def describe_instance_information(self, **kw):
        kw = self._record("describe_instance_information", kw)
        ids = kw["Filters"][0]["Values"]
        assert len(ids) <= 50
        out = []
        for instance in ids:
            ping = self.ping.get(instance, lambda t: "Online")
            status = ping(self.clock()) if ping else None
            if status:
                out.append({"InstanceId": instance, "PingStatus": status, "PlatformType": "Linux"})
        return {"InstanceInformationList": out}

    def describe_instance_patch_states(self, **kw):
        kw = self._record("describe_instance_patch_states", kw)
        assert len(kw["InstanceIds"]) <= 50
        out = []
        for instance in kw["InstanceIds"]:
            ended = any(instance in c["ids"] and self.clock() - c["at"] >= DONE_AT for c in self.commands.values())
            state = self.after.get(instance) if ended else self.before.get(instance)
            if state:
                out.append(dict(state, InstanceId=instance))
        return {"InstancePatchStates": out}


def runner(ssm, clock, poll=1.0, check_mode=False, wait=True, grace=10.0):
    return SsmRunner(ssm, RunConfig("run-1", poll_interval=poll, wait=wait, check_mode=check_mode),
                     clock=clock, sleep=clock.sleep, cancel_grace=grace)


def request(ids, **kw):
    return CommandRequest(document="AWS-RunShellScript", instance_ids=ids, step=kw.pop("step", "health"),
                          parameters={"commands": ["true"]}, **kw)


def test_send_command_params_are_exact():
    req = request([iid(1)], delivery_timeout=120, max_concurrency="10", max_errors="0", output_s3_bucket_name="logs",
                  output_s3_key_prefix="cmd/", cloudwatch_enabled=True, cloudwatch_log_group="/cms")
    assert send_command_params(req, [iid(1)], "cms-patching run-1 health") == dict(
        InstanceIds=[iid(1)], DocumentName="AWS-RunShellScript", Comment="cms-patching run-1 health",
        Parameters={"commands": ["true"]}, TimeoutSeconds=120, MaxConcurrency="10", MaxErrors="0",
        OutputS3BucketName="logs", OutputS3KeyPrefix="cmd/",
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": "/cms"})


def test_no_output_options_are_sent_when_not_asked_for():
    params = send_command_params(request([iid(1)]), [iid(1)], "c")
    assert not {"OutputS3BucketName", "OutputS3KeyPrefix", "CloudWatchOutputConfig"} & set(params)


def test_120_instances_are_three_commands_polled_together():
    clock = FakeClock()
    ssm = FakeSsm(clock)
    ids = [iid(n) for n in range(120)]
    results = runner(ssm, clock).run([request(ids, step="restart")])
    sends = [kw for op, kw in ssm.calls if op == "send_command"]
    assert [len(kw["InstanceIds"]) for kw in sends] == [50, 50, 20]
    assert [i for kw in sends for i in kw["InstanceIds"]] == ids
    tokens = [kw["Comment"].split() for kw in sends]  # each send its own token after `cms-patching <run> <step>`
    assert [t[:3] for t in tokens] == [["cms-patching", "run-1", "restart"]] * 3 and len({t[3] for t in tokens}) == 3
    # one ListCommands per poll for all three (t=0, 1: executing; t=2: done), then one Details listing per command
    assert ssm.count("list_commands") == 3
    listings = [kw for op, kw in ssm.calls if op == "list_command_invocations"]
    assert len(listings) == 3 and all(kw["Details"] and "InstanceId" not in kw for kw in listings)
    assert {r.outcome for r in results.values()} == {"success"} and len(results) == 120
    assert ssm.count("cancel_command") == 0


def test_a_command_listed_early_as_complete_is_read_and_stays_open():
    """ListCommands is a hint: a command it does not list (yet) is read per instance, and waited for if still open."""
    clock = FakeClock()
    ssm = FakeSsm(clock)
    ssm.list_commands = lambda **kw: ssm._record("list_commands", kw) and {"Commands": []}  # pylint: disable=protected-access
    res = runner(ssm, clock).run([request([iid(1)])])
    assert res[iid(1)].outcome == "success" and clock.t == DONE_AT
    assert ssm.count("list_command_invocations") == 3  # t=0 Pending, t=1 InProgress, t=2 Success


@pytest.mark.parametrize("plan, outcome", [
    (("Success", "Success", "done", 0), "success"),
    (("Failed", "Failed", "boom", 1), "failed"),
    (("TimedOut", "Execution Timed Out", "", -1), "timed_out"),
    (("TimedOut", "Delivery Timed Out", "", -1), "delivery_timed_out"),
    (("Failed", "Undeliverable", "", -1), "undeliverable"),
    (("Cancelled", "Cancelled", "", -1), "cancelled"),
    (("Cancelled", "Terminated", "", -1), "terminated"),
])
def test_each_terminal_invocation_becomes_its_outcome(plan, outcome):
    clock = FakeClock()
    ssm = FakeSsm(clock, plan={iid(1): plan})
    res = runner(ssm, clock).run([request([iid(1), iid(2)])])
    assert res[iid(1)].outcome == outcome
    assert (res[iid(1)].status, res[iid(1)].status_details) == plan[:2]
    assert res[iid(1)].output_excerpt == plan[2]
    assert (res[iid(1)].error is None) == (outcome == "success")
    assert res[iid(2)].outcome == "success"


def test_deadline_cancels_only_open_invocations_and_reports_timeouts():
    clock = FakeClock()
    ssm = FakeSsm(clock, plan={iid(1): "hang", iid(2): "undelivered"})
    res = runner(ssm, clock).run([request([iid(1), iid(2), iid(3)], execution_timeout=5)])
    cancels = [kw for op, kw in ssm.calls if op == "cancel_command"]
    assert len(cancels) == 1 and sorted(cancels[0]["InstanceIds"]) == [iid(1), iid(2)]
    assert res[iid(1)].outcome == "timed_out" and res[iid(1)].status == "Cancelled"
    assert res[iid(2)].outcome == "delivery_timed_out"
    assert "CancelCommand sent" in res[iid(1)].error and "execution_timeout 5s" in res[iid(2)].error
    assert res[iid(3)].outcome == "success"
    assert clock.t < 5 + 3  # cancelled at the first poll past the deadline, closed at the next


def test_a_cancel_that_never_lands_ends_after_the_grace_period():
    clock = FakeClock()
    ssm = FakeSsm(clock, plan={iid(1): "ignore-cancel"})
    res = runner(ssm, clock, grace=4).run([request([iid(1)], execution_timeout=3)])
    assert res[iid(1)].outcome == "timed_out" and res[iid(1)].status == "InProgress"
    assert ssm.count("cancel_command") == 1
    assert 7 <= clock.t <= 9


def test_a_refused_batch_is_undeliverable_and_the_others_still_run():
    clock = FakeClock()
    ssm = FakeSsm(clock, fail_send={1})
    ids = [iid(n) for n in range(60)]
    res = runner(ssm, clock).run([request(ids)])
    assert [res[i].outcome for i in ids[:50]] == ["success"] * 50
    assert {res[i].outcome for i in ids[50:]} == {"undeliverable"}
    assert "ssm:SendCommand failed" in res[ids[55]].error and "InvalidInstanceId" in res[ids[55]].error
    assert res[ids[55]].command_id is None


@pytest.mark.parametrize("failures", [dict(fail_polls=2), dict(fail_lists=2), dict(fail_polls=3, fail_lists=3)])
def test_a_failing_poll_is_retried_at_the_next_poll(failures):
    clock = FakeClock()
    ssm = FakeSsm(clock, **failures)
    res = runner(ssm, clock).run([request([iid(1)])])
    assert res[iid(1)].outcome == "success"


def test_strict_exit_code_fails_a_success_with_a_non_zero_plugin_code():
    clock = FakeClock()
    ssm = FakeSsm(clock, plan={iid(1): ("Success", "Success", "warn", 3)})
    assert runner(ssm, clock).run([request([iid(1)], strict_exit_code=True)])[iid(1)].outcome == "failed"
    clock2 = FakeClock()
    ssm2 = FakeSsm(clock2, plan={iid(1): ("Success", "Success", "warn", 3)})
    assert runner(ssm2, clock2).run([request([iid(1)])])[iid(1)].outcome == "success"


def test_check_mode_and_no_wait():
    clock = FakeClock()
    ssm = FakeSsm(clock)
    res = runner(ssm, clock, check_mode=True).run([request([iid(1)])])
    assert res[iid(1)].outcome == "would_run" and ssm.calls == []
    res = runner(ssm, clock, wait=False).run([request([iid(1)])])
    assert res[iid(1)].outcome == "sent" and res[iid(1)].command_id
    assert [call[0] for call in ssm.calls] == ["send_command"]


def test_wait_online_batches_and_asks_again_only_for_the_offline():
    clock = FakeClock()
    ids = [iid(n) for n in range(70)]
    ping = {ids[0]: lambda t: "Online" if t >= 3 else "ConnectionLost", ids[1]: None}  # ids[1] never registered
    ssm = FakeSsm(clock, ping=ping)
    statuses, error = wait_online(ssm, ids, timeout=5, poll_interval=1, clock=clock, sleep=clock.sleep)
    assert error is None
    assert statuses[ids[0]] == "Online" and statuses[ids[1]] == "NotRegistered"
    assert all(statuses[i] == "Online" for i in ids[2:])
    calls = [kw["Filters"][0]["Values"] for op, kw in ssm.calls if op == "describe_instance_information"]
    assert [len(c) for c in calls[:2]] == [50, 20]
    assert all(len(c) <= 2 for c in calls[2:])  # later polls: only the two not Online
    assert clock.t == 5
