"""ssm_patch_run with the reboot inside the command: hung agents cancelled at agent_online_timeout, a bounded agent watch,
installs with BaselineOverride judged on their own output, and the SnapshotId pattern. Fake clock: no waiting."""

import math
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.patch_run import judge_override_output, validate
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import CommandRequest, SentCommand
from ansible_collections.cms.patching.tests.unit.fakes.patch import BEFORE, SNAP, params, run, state
from ansible_collections.cms.patching.tests.unit.fakes.ssm import FakeClock, FakeSsm, client_error, iid

INTERVAL = 5.0
TIMEOUT = 30


class RebootingSsm(FakeSsm):
    """FakeSsm whose agents report LastPingDateTime, and whose invocations may run longer than DONE_AT.

    silent[instance] = (from, until): the agent does not ping in that window of fake time (a reboot; until=inf: hung).
    ends[instance] = fake seconds after the send at which its invocation (InProgress until then) ends with its plan.
    """

    def __init__(self, clock, silent=None, ends=None, **kw):
        super().__init__(clock, **kw)
        self.silent = silent or {}
        self.ends = ends or {}
        self.watch_calls = []  # (fake time, ids) of each DescribeInstanceInformation after the send

    def describe_instance_information(self, **kw):
        if self.commands:
            self.watch_calls.append((self.clock(), list(kw["Filters"][0]["Values"])))
        out = super().describe_instance_information(**kw)
        now = self.clock()
        for info in out["InstanceInformationList"]:
            start, until = self.silent.get(info["InstanceId"], (math.inf, math.inf))
            last = start if start <= now < until else now
            info["LastPingDateTime"] = self.epoch() - timedelta(seconds=now - last)
            info["PingStatus"] = "ConnectionLost" if last < now else "Online"
        return out

    def _view(self, cid, instance):
        end = self.ends.get(instance)
        cancelled = (cid, instance) in self.cancelled
        if end is not None and not cancelled and 1 <= self.clock() - self.commands[cid]["at"] < end:
            return "InProgress", "InProgress", "", -1
        return super()._view(cid, instance)

    def cancel_times(self):
        return sorted(self.cancelled.values())


def reboot_params(**kw):
    base = dict(execution_timeout=7200, agent_online_timeout=TIMEOUT, agent_check_interval=INTERVAL)
    base.update(kw)
    return base


def test_a_hung_agent_is_cancelled_at_agent_online_timeout_not_execution_timeout():
    clock = FakeClock()
    ok, hung = iid(1), iid(2)
    ssm = RebootingSsm(clock, plan={hung: "hang"}, silent={hung: (1.5, math.inf)},
                       before={ok: BEFORE, hung: BEFORE}, after={ok: state(), hung: BEFORE})
    result = run(ssm, clock, instance_ids=[ok, hung], **reboot_params())
    res = {r["instance_id"]: r for r in result["results"]}
    assert res[ok]["outcome"] == "success"
    assert res[hung]["outcome"] == "reboot_timeout", res[hung]
    assert "agent_online_timeout 30s" in res[hung]["error"] and "CancelCommand sent" in res[hung]["error"]
    # Cancelled at the first agent check after 30 s of silence (silent from 1.5 s), nowhere near the 7,200 s deadline.
    cancels = [kw for op, kw in ssm.calls if op == "cancel_command"]
    assert [c["InstanceIds"] for c in cancels] == [[hung]]
    assert len(ssm.cancel_times()) == 1 and 1.5 + TIMEOUT < ssm.cancel_times()[0] <= 1.5 + TIMEOUT + INTERVAL + 1
    assert clock() < 1.5 + TIMEOUT + INTERVAL + 10
    # At most one agent check per interval while the command was open.
    checks = [t for t, _ids in ssm.watch_calls]
    assert checks and all(b - a >= INTERVAL for a, b in zip(checks, checks[1:]))
    assert len(checks) <= math.ceil(ssm.cancel_times()[0] / INTERVAL)


def test_agent_checks_go_in_batches_of_50_once_per_interval():
    clock = FakeClock()
    ids = [iid(n) for n in range(1, 121)]
    hung = [ids[10], ids[110]]
    ssm = RebootingSsm(clock, plan={i: "hang" for i in hung}, silent={i: (1.5, math.inf) for i in hung},
                       before={i: BEFORE for i in ids}, after={i: state() for i in ids})
    result = run(ssm, clock, instance_ids=ids, **reboot_params())
    assert result["summary"] == {"total": 120, "success": 118, "reboot_timeout": 2}
    assert all(len(ids_) <= 50 for _t, ids_ in ssm.watch_calls)
    times = sorted({t for t, _ids in ssm.watch_calls})
    assert all(b - a >= INTERVAL for a, b in zip(times, times[1:]))
    # Each check covers the instances of the open commands, ceil(n/50) calls for n of them: here at most 3 per check.
    assert len(ssm.watch_calls) <= 3 * len(times) and len(times) <= math.ceil(clock() / INTERVAL)
    assert sorted(i for kw in (kw for op, kw in ssm.calls if op == "cancel_command") for i in kw["InstanceIds"]) == sorted(hung)


class FlakyAgentsSsm(RebootingSsm):
    """The first agent check that would find the hung agent fails (throttled beyond retries, say)."""

    def __init__(self, clock, **kw):
        super().__init__(clock, **kw)
        self.failed_checks = 0

    def describe_instance_information(self, **kw):
        if self.commands and not self.failed_checks and self.clock() > 1.5 + TIMEOUT:
            self.failed_checks += 1
            self._record("describe_instance_information", kw)
            raise client_error("ThrottlingException", "DescribeInstanceInformation")
        return super().describe_instance_information(**kw)


def test_a_failed_agent_check_is_retried_at_the_next_interval():
    clock = FakeClock()
    hung = iid(2)
    ssm = FlakyAgentsSsm(clock, plan={hung: "hang"}, silent={hung: (1.5, math.inf)}, before={hung: BEFORE}, after={hung: BEFORE})
    result = run(ssm, clock, instance_ids=[hung], **reboot_params())
    assert ssm.failed_checks == 1 and result["results"][0]["outcome"] == "reboot_timeout"
    assert 1.5 + TIMEOUT + INTERVAL < ssm.cancel_times()[0] <= 1.5 + TIMEOUT + 2 * INTERVAL + 1


def test_a_normal_reboot_inside_the_command_is_not_cancelled():
    clock = FakeClock()
    ssm = RebootingSsm(clock, silent={iid(1): (3, 3 + TIMEOUT - 5)}, ends={iid(1): 3 + TIMEOUT},
                       before={iid(1): BEFORE}, after={iid(1): state()})
    result = run(ssm, clock, **reboot_params())
    assert result["results"][0]["outcome"] == "success" and ssm.count("cancel_command") == 0
    assert len(ssm.watch_calls) >= 4  # it was watched through the reboot, and found silent each time, but not for long enough


def test_an_undelivered_command_is_not_taken_for_a_hung_reboot():
    """An agent already silent before the send: its invocation stays Pending. Nothing ran, so no reboot_timeout."""
    clock = FakeClock()
    ssm = RebootingSsm(clock, plan={iid(1): "undelivered"}, silent={iid(1): (-100, math.inf)}, before={iid(1): BEFORE})
    result = run(ssm, clock, **reboot_params(execution_timeout=60))
    res = result["results"][0]
    assert res["outcome"] == "delivery_timed_out", res
    assert ssm.cancel_times()[0] >= 60  # only the execution_timeout cancel


def test_no_agent_watch_without_reboots():
    clock = FakeClock()
    ssm = RebootingSsm(clock, plan={iid(1): "hang"}, silent={iid(1): (1.5, math.inf)}, before={iid(1): BEFORE})
    result = run(ssm, clock, reboot_option="NoReboot", **reboot_params(execution_timeout=100))
    assert result["results"][0]["outcome"] == "timed_out" and ssm.watch_calls == []


def test_aws_time_is_requested_date_time_plus_monotonic_time_since_the_send():
    requested = datetime(2030, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    cmd = SentCommand(CommandRequest("AWS-RunPatchBaseline", [iid(1)], "patch", execution_timeout=600), [iid(1)],
                      command_id="c", requested_at=requested, deadline=1000.0 + 600)
    assert cmd.aws_time(1045.5) == requested + timedelta(seconds=45.5)
    assert SentCommand(cmd.request, [iid(1)]).aws_time(5.0) is None


# -- BaselineOverride ------------------------------------------------------------------------------------------------

OVERRIDE = "s3://bucket/override.json"


@pytest.mark.parametrize("output, reboot_option, outcome", [
    ("Install finished: 3 patches installed\n", "RebootIfNeeded", "success"),
    ("Summary: Missing: 0, Failed: 0\n", "RebootIfNeeded", "success"),
    ("Install finished\nopenssl.x86_64 Missing\n", "RebootIfNeeded", "noncompliant"),
    ("kernel Failed\n", "NoReboot", "noncompliant"),
    ("pkg-a InstalledRejected\n", "NoReboot", "noncompliant"),
    ("kernel InstalledPendingReboot\nglibc InstalledPendingReboot\n", "NoReboot", "pending_reboot"),
    ("kernel InstalledPendingReboot\n", "RebootIfNeeded", "noncompliant"),
])
def test_judge_override_output(output, reboot_option, outcome):
    assert judge_override_output(output, reboot_option)[0] == outcome


def test_override_install_is_judged_on_its_output_not_on_unchanged_compliance():
    clock = FakeClock()
    ids = [iid(1), iid(2), iid(3)]
    plan = {ids[0]: ("Success", "Success", "Install finished: 3 patches installed", 0),
            ids[1]: ("Success", "Success", "Install finished: 2 patches installed\nsim-missing-1 Missing", 0),
            ids[2]: ("Failed", "Failed", "ERROR: install failed", 1)}
    # AWS does not write compliance for these runs: the patch state stays the one from before the command.
    ssm = FakeSsm(clock, plan=plan, before={i: BEFORE for i in ids}, after={i: BEFORE for i in ids})
    result = run(ssm, clock, instance_ids=ids, baseline_override=OVERRIDE)
    res = {r["instance_id"]: r for r in result["results"]}
    assert res[ids[0]]["outcome"] == "success" and res[ids[0]]["error"] is None
    assert res[ids[1]]["outcome"] == "noncompliant" and "Missing 1" in res[ids[1]]["error"]
    assert res[ids[2]]["outcome"] == "failed"
    assert res[ids[0]]["compliance_after"]["missing"] == 3  # read and reported, but not judged
    assert ssm.count("describe_instance_patch_states") == 2  # before and once after: no wait for a state that never comes


class NoStdoutSsm(FakeSsm):
    """GetCommandInvocation is refused (the listing still works)."""

    def get_command_invocation(self, **kw):
        self._record("get_command_invocation", kw)
        raise client_error("AccessDeniedException", "GetCommandInvocation")


def test_override_install_whose_stdout_cannot_be_read_is_state_unknown_not_success():
    clock = FakeClock()
    plan = {iid(1): ("Success", "Success", "Install finished: 3 patches installed", 0)}
    ssm = NoStdoutSsm(clock, plan=plan, before={iid(1): BEFORE}, after={iid(1): BEFORE})
    res = run(ssm, clock, baseline_override=OVERRIDE)["results"][0]
    assert res["outcome"] == "state_unknown"
    assert "ssm:GetCommandInvocation failed" in res["error"] and "AccessDeniedException" in res["error"]


@pytest.mark.parametrize("head, outcome, says", [
    ("done\n", "noncompliant", "cannot be ruled out"),
    ("kernel InstalledPendingReboot\n", "noncompliant", "cannot be ruled out"),  # NoReboot: pending_reboot if whole
    ("openssl Missing\n", "noncompliant", "(Missing 1); SSM returned only the first 24,000 characters"),
])
def test_override_stdout_at_the_24000_character_cap_is_never_clean(head, outcome, says):
    clock = FakeClock()
    stdout = ("x" * 79 + "\n") * 300  # 24,000 characters: GetCommandInvocation's cap, so more may have followed
    stdout = head + stdout[len(head):]  # what it lists, first: in reach of any read
    ssm = FakeSsm(clock, plan={iid(1): ("Success", "Success", stdout, 0)}, before={iid(1): BEFORE}, after={iid(1): BEFORE})
    res = run(ssm, clock, baseline_override=OVERRIDE, reboot_option="NoReboot")["results"][0]
    assert (res["outcome"], len(stdout)) == (outcome, 24000)
    assert says in res["error"]
    # One character less is the whole stdout: judged on what it lists.
    ssm = FakeSsm(clock, plan={iid(1): ("Success", "Success", stdout[:-1], 0)}, before={iid(1): BEFORE}, after={iid(1): BEFORE})
    whole = run(ssm, clock, baseline_override=OVERRIDE, reboot_option="NoReboot")["results"][0]
    assert whole["outcome"] == judge_override_output(head, "NoReboot")[0]


@pytest.mark.parametrize("snapshot_id", [
    "{0f8fad5b-d9cb-469f-a165-70867728950e}", "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
    "0f8fad5bd9cb469fa16570867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e\n", "0f8fad5b-d9cb-469f-a165-70867728950",
])
def test_snapshot_id_outside_the_document_pattern_is_refused(snapshot_id):
    with pytest.raises(PatchingError) as err:
        validate(params(snapshot_id=snapshot_id))
    assert "canonical 36-character form" in str(err.value) and "\n" not in str(err.value).replace(repr(snapshot_id), "")


@pytest.mark.parametrize("snapshot_id", [SNAP, "0F8FAD5B-D9CB-469F-A165-70867728950E"])
def test_snapshot_id_in_the_document_pattern_is_accepted(snapshot_id):
    validate(params(snapshot_id=snapshot_id))
