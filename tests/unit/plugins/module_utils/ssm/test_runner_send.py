"""SendCommand without duplicates (a lost answer is looked up by its Comment token), and failure output excerpts."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from ansible_collections.cms.patching.plugins.module_utils.models import COMMENT_MAX, RunConfig
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import (
    SEND_ATTEMPTS, CommandRequest, SentCommand, SsmRunner, may_have_been_accepted, output_location,
)
from ansible_collections.cms.patching.plugins.module_utils.ssm.status import plugin_excerpt, stream_excerpt

NOW = datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)


def iid(n):
    return f"i-{n:017x}"


def aws_error(code, status, op="SendCommand"):
    return ClientError({"Error": {"Code": code, "Message": f"simulated {code}"}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class FakeSendSsm:
    """SendCommand follows a script of outcomes, one per call; ListCommands lists what was accepted.

    "ok": accepted and answered; "drop": accepted, answer lost (connection closed); "lost": never reached AWS;
    "throttle": refused with ThrottlingException; "refuse": refused for good; "500": failed on AWS's side, not accepted.
    """

    def __init__(self, script, list_fails=False, others=()):
        self.script = list(script)
        self.list_fails = list_fails
        self.accepted = list(others)
        self.calls = []

    def count(self, op):
        return sum(1 for name, _kwargs in self.calls if name == op)

    def send_command(self, **kw):
        assert "aws_retry" not in kw  # the send client does not retry on its own: the runner decides
        self.calls.append(("send_command", kw))
        step = self.script.pop(0) if self.script else "ok"
        if step in ("ok", "drop"):
            command = {"CommandId": str(uuid.uuid4()), "Comment": kw["Comment"], "DocumentName": kw["DocumentName"],
                       "InstanceIds": list(kw["InstanceIds"]), "RequestedDateTime": NOW}
            self.accepted.append(command)
            if step == "ok":
                return {"Command": command}
            raise ConnectionClosedError(endpoint_url="https://ssm.us-east-1.amazonaws.com/")
        if step == "lost":
            raise EndpointConnectionError(endpoint_url="https://ssm.us-east-1.amazonaws.com/")
        raise {"throttle": aws_error("ThrottlingException", 400), "refuse": aws_error("InvalidInstanceId", 400),
               "500": aws_error("InternalServerError", 500)}[step]

    def get_paginator(self, op):
        assert op == "list_commands"
        return self

    def paginate(self, **kw):
        self.calls.append(("list_commands", kw))
        if self.list_fails:
            raise aws_error("AccessDeniedException", 400, "ListCommands")
        filters = {f["key"]: f["value"] for f in kw["Filters"]}
        since = datetime.strptime(filters["InvokedAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        yield {"Commands": [c for c in self.accepted if kw["InstanceId"] in c["InstanceIds"] and c["RequestedDateTime"] >= since]}


class Sleeps(list):
    def __call__(self, seconds):
        assert seconds >= 0
        self.append(seconds)


def send(ssm, ids=(1, 2)):
    sleeps = Sleeps()
    runner = SsmRunner(ssm, RunConfig("run-1", wait=False), sleep=sleeps, wallclock=lambda: NOW)
    req = CommandRequest(document="AWS-RunPatchBaseline", instance_ids=[iid(n) for n in ids], step="patch")
    results = runner.run([req])
    return runner, results, sleeps


def test_an_accepted_send_whose_answer_was_lost_is_adopted_not_sent_again():
    ssm = FakeSendSsm(["drop"])
    runner, results, sleeps = send(ssm)
    assert ssm.count("send_command") == 1 and ssm.count("list_commands") == 1 and len(sleeps) == 1
    assert runner.sent[0].command_id == ssm.accepted[0]["CommandId"]
    assert {r.outcome for r in results.values()} == {"sent"}
    listed = ssm.calls[1][1]
    assert listed["InstanceId"] == iid(1)
    assert listed["Filters"] == [{"key": "InvokedAfter", "value": (NOW - timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")}]


def test_a_send_that_never_reached_aws_is_sent_again_once():
    ssm = FakeSendSsm(["lost", "ok"])
    runner, results, _unused2 = send(ssm)
    assert ssm.count("send_command") == 2 and ssm.count("list_commands") == 1 and len(ssm.accepted) == 1
    assert runner.sent[0].command_id == ssm.accepted[0]["CommandId"]
    assert all(r.command_id == ssm.accepted[0]["CommandId"] for r in results.values())


def test_only_this_sends_token_is_adopted():
    """Another command of the same run, step and instances (an earlier try of the play, say) is not ours."""
    other = {"CommandId": "other", "Comment": "cms-patching run-1 patch 0badcafe", "DocumentName": "AWS-RunPatchBaseline",
             "InstanceIds": [iid(1), iid(2)], "RequestedDateTime": NOW}
    ssm = FakeSendSsm(["lost", "ok"], others=[other])
    runner, _unused1, _unused2 = send(ssm)
    assert runner.sent[0].command_id not in (None, "other") and ssm.count("send_command") == 2


def test_a_drop_after_a_throttle_is_still_looked_up_before_any_resend():
    ssm = FakeSendSsm(["drop", "throttle"])
    runner, _unused1, _unused2 = send(ssm)
    # drop (accepted) -> lookup finds it at once: the throttle step is never reached
    assert ssm.count("send_command") == 1 and runner.sent[0].command_id == ssm.accepted[0]["CommandId"]
    ssm = FakeSendSsm(["lost", "throttle", "ok"])
    runner, _unused1, _unused2 = send(ssm)
    assert ssm.count("send_command") == 3 and ssm.count("list_commands") == 2 and len(ssm.accepted) == 1


def test_throttling_is_retried_with_backoff_and_no_lookup():
    ssm = FakeSendSsm(["throttle", "throttle", "ok"])
    runner, _unused1, sleeps = send(ssm)
    assert ssm.count("send_command") == 3 and ssm.count("list_commands") == 0 and runner.sent[0].command_id
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_a_refusal_is_final():
    ssm = FakeSendSsm(["refuse"])
    runner, results, sleeps = send(ssm)
    assert ssm.count("send_command") == 1 and not sleeps and runner.sent[0].command_id is None
    assert {r.outcome for r in results.values()} == {"undeliverable"}
    assert "InvalidInstanceId" in results[iid(1)].error


def test_a_lost_answer_that_cannot_be_looked_up_is_not_resent_and_is_state_unknown():
    ssm = FakeSendSsm(["drop"], list_fails=True)
    _unused0, results, _unused2 = send(ssm)
    assert ssm.count("send_command") == 1
    assert {r.outcome for r in results.values()} == {"state_unknown"}
    assert "ConnectionClosedError" in results[iid(1)].error or "Connection was closed" in results[iid(1)].error
    assert "not sent again" in results[iid(1)].error


def test_sends_are_bounded_when_aws_never_gets_them():
    ssm = FakeSendSsm(["lost"] * 50)
    _unused0, results, sleeps = send(ssm)
    assert ssm.count("send_command") == SEND_ATTEMPTS and ssm.count("list_commands") == SEND_ATTEMPTS  # last one after the last try
    assert len(sleeps) == SEND_ATTEMPTS and max(sleeps) <= 20
    assert {r.outcome for r in results.values()} == {"undeliverable"}


def test_which_errors_may_hide_an_accepted_command():
    assert may_have_been_accepted(ConnectionClosedError(endpoint_url="x"))
    assert may_have_been_accepted(aws_error("InternalServerError", 500))
    assert not may_have_been_accepted(aws_error("ThrottlingException", 400))
    assert not may_have_been_accepted(aws_error("InvalidInstanceId", 400))


@pytest.mark.parametrize("run_id,step", [("r", "patch"), ("x" * 64, "patch"), ("x" * 64, "a" * 20), ("y" * 64, "precheck")])
def test_the_token_always_survives_the_100_character_comment(run_id, step):
    comment = RunConfig(run_id).comment(step, "abcd1234")
    assert len(comment) <= COMMENT_MAX and comment.endswith(" abcd1234")
    assert comment.startswith(f"cms-patching {run_id} ")
    words = comment.split()
    assert len(words) == 4 and step.startswith(words[2])
    if len(f"cms-patching {run_id} {step} abcd1234") <= COMMENT_MAX:
        assert words[2] == step
    assert RunConfig(run_id).comment(step) == f"cms-patching {run_id} {step}"[:COMMENT_MAX]


# -- output excerpts ------------------------------------------------------------------------------------------------

def test_stream_excerpt_puts_the_end_of_stderr_last_and_marks_what_was_cut():
    text, cut = stream_excerpt("Installing...\n" * 3, "E: package foo failed\n")
    assert text.endswith("E: package foo failed") and "Installing..." in text and not cut
    text, cut = stream_excerpt("x" * 24000, "E: late error\n")  # SSM returned only the first 24,000 of stdout
    assert text.endswith("E: late error") and cut and len(text) <= 500
    text, cut = stream_excerpt("", "e" * 7990 + "\nE: the end\n")  # complete stderr, longer than the excerpt
    assert text.endswith("E: the end") and text.startswith("...") and cut and len(text) == 500
    text, cut = stream_excerpt("ok\n", "e" * 8000)  # only the first 8,000 of stderr: its end is out of reach
    assert cut


def test_plugin_excerpt_marks_an_output_the_agent_cut():
    cut_by_agent = {"CommandPlugins": [{"Output": "a" * 100 + "\n---Output truncated---\n----------ERROR-------\nE: x"}]}
    assert plugin_excerpt(cut_by_agent)[1] is True
    assert plugin_excerpt({"CommandPlugins": [{"Output": "E: short\n"}]}) == ("E: short", False)
    assert plugin_excerpt({"CommandPlugins": [{"Output": "z" * 600}]})[1] is True


def test_output_location_names_s3_prefix_and_log_group():
    req = CommandRequest(document="AWS-RunShellScript", instance_ids=[iid(1)], step="health", output_s3_bucket_name="logs",
                         output_s3_key_prefix="night/", cloudwatch_enabled=True)
    assert output_location(req, "c-1", iid(1)) == (
        f"s3://logs/night/c-1/{iid(1)}/; CloudWatch Logs group aws/ssm/AWS-RunShellScript, streams c-1/{iid(1)}/")
    assert output_location(CommandRequest(document="d", instance_ids=[], step="s"), "c-1", iid(1)) is None


class FakeOutputSsm:
    """Just enough for SsmRunner._result: GetCommandInvocation with whole streams."""

    def __init__(self, stdout, stderr):
        self.stdout, self.stderr = stdout, stderr
        self.fetched = []

    def get_command_invocation(self, **kw):
        kw.pop("aws_retry", None)
        self.fetched.append(kw["InstanceId"])
        return {"StandardOutputContent": self.stdout, "StandardErrorContent": self.stderr}


def result_for(ssm, status, details, output):
    runner = SsmRunner(ssm, RunConfig("run-1"))
    cmd = SentCommand(CommandRequest(document="AWS-RunShellScript", instance_ids=[iid(1)], step="health"), [iid(1)], command_id="c-1")
    cmd.states[iid(1)] = (status, details)
    return runner._result(cmd, iid(1), {"CommandPlugins": [{"Output": output, "ResponseCode": 1}]})  # pylint: disable=protected-access


def test_a_failure_gets_the_end_of_its_stderr_a_success_costs_no_call():
    listing = "Loaded plugins\n" * 160 + "\n---Output truncated---\n----------ERROR-------\nwarning: x\n---Error truncated----"
    ssm = FakeOutputSsm("Loaded plugins\n" * 3000, "warning: x\n" * 700 + "E: the real reason\n")
    res = result_for(ssm, "Failed", "Failed", listing)
    assert res.outcome == "failed" and ssm.fetched == [iid(1)]
    assert res.output_excerpt.endswith("E: the real reason") and res.output_truncated is True
    ok = FakeOutputSsm("", "")
    res = result_for(ok, "Success", "Success", "done\n")
    assert ok.fetched == [] and res.output_excerpt == "done" and res.output_truncated is False
    undelivered = FakeOutputSsm("", "")
    res = result_for(undelivered, "TimedOut", "Delivery Timed Out", "")
    assert undelivered.fetched == [] and res.outcome == "delivery_timed_out"


def test_the_report_marks_a_cut_excerpt_and_says_where_the_whole_output_is():
    from ansible_collections.cms.patching.plugins.module_utils.waves import wave_entries  # pylint: disable=import-outside-toplevel
    gate = [{"instance_id": iid(1), "image_id": "ami-1"}, {"instance_id": iid(2), "image_id": "ami-2"}]
    patch = [{"instance_id": iid(1), "outcome": "failed", "output_excerpt": "...E: x", "output_truncated": True,
              "output_location": "s3://logs/c-1/i-1/"},
             {"instance_id": iid(2), "outcome": "success", "output_excerpt": "done"}]
    entries = {e["instance_id"]: e for e in wave_entries([iid(1), iid(2)], gate, [], patch, [], [], [])}
    assert entries[iid(1)]["patch"]["output_truncated"] is True
    assert entries[iid(1)]["patch"]["output_location"] == "s3://logs/c-1/i-1/"
    assert entries[iid(2)]["patch"]["output_truncated"] is False and entries[iid(2)]["patch"]["output_location"] is None
