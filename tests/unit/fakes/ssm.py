"""A time-driven fake SSM (a fake clock), so deadlines and cancels are tested without waiting.

Shared by the runner, patch-run, command-run and module-result tests; the integration tests use the real simulator.
"""

import uuid
from datetime import datetime, timedelta, timezone

from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils.models import RunConfig
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import CommandRequest, SsmRunner

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
