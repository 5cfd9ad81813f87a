"""The batched SSM runner: status mapping, batching, one ListCommands per poll and its own execution deadline.

The fake SSM (tests/unit/fakes/ssm.py) is time-driven (a fake clock), so deadlines and cancels are tested without waiting.
"""

import pytest

from ansible_collections.cms.patching.plugins.module_utils.ssm.agents import wait_online
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import send_command_params
from ansible_collections.cms.patching.tests.unit.fakes.ssm import DONE_AT, FakeClock, FakeSsm, iid, request, runner


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
