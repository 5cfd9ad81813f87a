"""ssm_patch_run's domain: input validation, document parameters and the verification rules after an Install."""

import uuid

import pytest

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.patch_run import document_parameters, is_fresh, run_patch, validate
from ansible_collections.cms.patching.tests.unit.fakes.patch import BEFORE, SNAP, params, run, state
from ansible_collections.cms.patching.tests.unit.fakes.ssm import DONE_AT, FakeClock, FakeSsm, client_error, iid


class NoCalls:
    def __getattr__(self, name):
        raise AssertionError(f"AWS call {name} made for bad input")


@pytest.mark.parametrize("bad, message", [
    (dict(instance_ids=["i-123"]), "malformed instance id"),
    (dict(instance_ids=[]), "instance_ids is empty"),
    (dict(instance_ids=[iid(1), iid(1)]), "duplicate instance id"),
    (dict(document="AWS-Nope"), "unknown document"),
    (dict(execution_timeout=0), "execution_timeout must be greater than 0"),
    (dict(agent_online_timeout=-5), "agent_online_timeout must be greater than 0"),
    (dict(poll_interval=0), "poll_interval must be greater than 0"),
    (dict(delivery_timeout=10), "delivery_timeout must be between 30 and 2592000"),
    (dict(install_override_list="s3://b/list.yaml", baseline_override="s3://b/base.json"), "mutually exclusive"),
    (dict(install_override_list="s3://b/l.yaml", document="AWS-RunPatchBaselineWithHooks"), "needs document AWS-RunPatchBaseline"),
    (dict(install_override_list="ftp://x"), "must be an https:// or s3:// URL"),
    (dict(pre_install_hook_doc_name="MyHook"), "needs document AWS-RunPatchBaselineWithHooks"),
    (dict(snapshot_id="not-a-guid"), "snapshot_id must be a GUID"),
    (dict(max_concurrency="0"), "invalid max_concurrency"),
    (dict(max_errors="101%"), "invalid max_errors"),
    (dict(run_id="has space"), "invalid run_id"),
    (dict(output_s3_key_prefix="p/"), "output_s3_key_prefix needs output_s3_bucket_name"),
])
def test_bad_input_is_one_line_and_calls_nothing(bad, message):
    with pytest.raises(PatchingError) as err:
        run_patch(NoCalls(), params(**bad), check_mode=False)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_input_passes():
    validate(params(document="AWS-RunPatchBaselineWithHooks", pre_install_hook_doc_name="Pre-Hook", baseline_override="s3://b/x.json",
                    snapshot_id=SNAP, max_concurrency="10", max_errors="0"))


def test_document_parameters():
    assert document_parameters(params(install_override_list="https://h/l.yaml"), SNAP) == {
        "Operation": ["Install"], "SnapshotId": [SNAP], "RebootOption": ["RebootIfNeeded"], "InstallOverrideList": ["https://h/l.yaml"]}
    scan = document_parameters(params(operation="Scan", reboot_option="RebootIfNeeded"), SNAP)
    assert scan["RebootOption"] == ["NoReboot"]  # a Scan never reboots
    hooks = document_parameters(params(document="AWS-RunPatchBaselineWithHooks", pre_install_hook_doc_name="A",
                                       post_install_hook_doc_name="B", on_exit_hook_doc_name="C", baseline_override="s3://b/o.json"), SNAP)
    assert hooks["PreInstallHookDocName"] == ["A"] and hooks["PostInstallHookDocName"] == ["B"] and hooks["OnExitHookDocName"] == ["C"]
    assert hooks["BaselineOverride"] == ["s3://b/o.json"]


@pytest.mark.parametrize("before, after, fresh", [
    (None, None, False),
    ({"operation_end_time": "a"}, {"operation_end_time": "a", "snapshot_id": SNAP}, False),  # not reported since the command
    ({"operation_end_time": "a"}, {"operation_end_time": "b", "snapshot_id": "other"}, False),  # another run's state
    ({"operation_end_time": "a"}, {"operation_end_time": "b", "snapshot_id": SNAP}, True),
    (None, {"operation_end_time": "b", "snapshot_id": ""}, True),
])
def test_is_fresh(before, after, fresh):
    assert is_fresh(before, after, SNAP) is fresh


def by_id(result):
    return {r["instance_id"]: r for r in result["results"]}


def test_install_verifies_agent_and_compliance_per_instance():
    ids = [iid(n) for n in range(1, 7)]
    clock = FakeClock()
    # The reboot is inside the command (it ends Success once the agent is back): an agent that goes away after the end
    # is no concern of the patch, and nothing waits for PingStatus afterwards.
    ping = {ids[1]: lambda t: "ConnectionLost" if t >= DONE_AT else "Online",
            ids[5]: None}  # not registered: must not be sent to
    after = {ids[0]: state(), ids[1]: state(), ids[2]: state(missing=2), ids[3]: state(pending=4),
             ids[4]: state(end=BEFORE["OperationEndTime"], snapshot="")}
    ssm = FakeSsm(clock, plan={}, ping=ping, before={i: BEFORE for i in ids}, after=after)
    result = run(ssm, clock, instance_ids=ids)
    res = by_id(result)
    assert res[ids[0]]["outcome"] == "success" and res[ids[0]]["compliance_after"]["missing"] == 0
    assert res[ids[1]]["outcome"] == "success" and ssm.count("describe_instance_information") == 1
    assert res[ids[2]]["outcome"] == "noncompliant" and "MissingCount=2" in res[ids[2]]["error"]
    assert res[ids[3]]["outcome"] == "noncompliant" and "InstalledPendingRebootCount=4" in res[ids[3]]["error"]
    assert res[ids[4]]["outcome"] == "noncompliant" and "not updated since the install" in res[ids[4]]["error"]
    assert res[ids[5]]["outcome"] == "undeliverable" and res[ids[5]]["command_id"] is None
    assert res[ids[0]]["compliance_before"]["missing"] == 3
    sends = [kw for op, kw in ssm.calls if op == "send_command"]
    assert len(sends) == 1 and sends[0]["InstanceIds"] == ids[:5]
    assert sends[0]["Parameters"]["SnapshotId"] == [SNAP] and sends[0]["Comment"].startswith("cms-patching run-1 patch ")
    assert result["changed"] is True and result["summary"]["noncompliant"] == 3 and result["sent"] == 5


def test_no_reboot_pending_patches_are_pending_reboot():
    clock = FakeClock()
    ssm = FakeSsm(clock, before={iid(1): BEFORE}, after={iid(1): state(pending=3)})
    res = run(ssm, clock, reboot_option="NoReboot")
    assert res["results"][0]["outcome"] == "pending_reboot" and res["results"][0]["error"] is None
    assert ssm.count("describe_instance_information") == 1  # only the pre-send registration check: NoReboot waits for no agent


def test_failed_patch_keeps_its_outcome_and_gets_compliance_after():
    clock = FakeClock()
    ssm = FakeSsm(clock, plan={iid(1): ("Failed", "Failed", "ERROR: yum failed", 1)}, before={iid(1): BEFORE},
                  after={iid(1): state(failed=1)})
    res = run(ssm, clock)["results"][0]
    assert res["outcome"] == "failed" and res["output_excerpt"] == "ERROR: yum failed"
    assert res["compliance_after"]["failed"] == 1


class UnreadComplianceSsm(FakeSsm):
    """DescribeInstancePatchStates works before the send and is refused after it."""

    def describe_instance_patch_states(self, **kw):
        if self.count("send_command"):
            self._record("describe_instance_patch_states", kw)
            raise client_error("ExpiredTokenException", "DescribeInstancePatchStates")
        return super().describe_instance_patch_states(**kw)


def test_an_install_whose_compliance_cannot_be_read_is_state_unknown_not_noncompliant():
    clock = FakeClock()
    ssm = UnreadComplianceSsm(clock, before={iid(1): BEFORE}, after={iid(1): state()})
    res = run(ssm, clock)["results"][0]
    # The install succeeded and its result is unknown: no "not clean" (a rollback) on a read error.
    assert res["outcome"] == "state_unknown" and res["status"] == "Success"
    assert res["error"].startswith("patch state not read after the install: ") and "ExpiredTokenException" in res["error"]
    assert ssm.count("describe_instance_patch_states") >= 2


def test_scan_is_not_changed_and_never_judged_on_counts():
    clock = FakeClock()
    ssm = FakeSsm(clock, before={iid(1): BEFORE}, after={iid(1): state(missing=5, operation="Scan")})
    result = run(ssm, clock, operation="Scan")
    assert result["changed"] is False and result["results"][0]["outcome"] == "success"


def test_check_mode_reads_but_sends_nothing():
    clock = FakeClock()
    ssm = FakeSsm(clock, before={iid(1): BEFORE}, ping={iid(2): None})
    result = run(ssm, clock, instance_ids=[iid(1), iid(2)], check_mode=True)
    assert [r["outcome"] for r in result["results"]] == ["would_run", "undeliverable"]
    assert {call[0] for call in ssm.calls} == {"describe_instance_information", "describe_instance_patch_states"}
    assert result["changed"] is True


def test_snapshot_id_is_generated_once_per_run():
    clock = FakeClock()
    ssm = FakeSsm(clock)
    result = run_patch(ssm, params(instance_ids=[iid(n) for n in range(60)], wait=False), False, clock=clock, sleep=clock.sleep)
    uuid.UUID(result["snapshot_id"])
    sent = {kw["Parameters"]["SnapshotId"][0] for op, kw in ssm.calls if op == "send_command"}
    assert sent == {result["snapshot_id"]} and len(result["commands"]) == 2
    assert {r["outcome"] for r in result["results"]} == {"sent"}
