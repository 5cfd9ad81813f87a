"""Module results a direct caller can trust: a call in which no instance succeeded fails with one summing line, an
instance EC2 does not know is not_found (not an SSM registration problem), and AWS errors keep their code."""

from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ansible_collections.cms.patching.plugins.module_utils import command_run, patch_run, root_restore
from ansible_collections.cms.patching.plugins.module_utils.backup import run as backup_run
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    AwsCallError, AwsErrorHandler, PatchingError, aws_error_message, exit_with, no_success_message,
)
from ansible_collections.cms.patching.plugins.module_utils.waves import needs_rollback, wave_entries
from ansible_collections.cms.patching.tests.unit.fakes.patch import BEFORE, params
from ansible_collections.cms.patching.tests.unit.fakes.ssm import FakeClock, FakeSsm, client_error, iid


class FakeEc2:
    """DescribeInstances through its paginator; `states` maps the instances EC2 knows to their state."""

    def __init__(self, states=None, fail=None):
        self.states = states or {}
        self.fail = fail
        self.calls = []
        self.meta = SimpleNamespace(region_name="us-east-1")

    def get_paginator(self, op):
        assert op == "describe_instances"
        return SimpleNamespace(paginate=self._pages)

    def _pages(self, **kw):
        self.calls.append(kw)
        if self.fail:
            raise self.fail
        assert "InstanceIds" not in kw  # one unknown id would fail the whole call (InvalidInstanceID.NotFound)
        ids = [f["Values"] for f in kw["Filters"] if f["Name"] == "instance-id"][0]
        yield {"Reservations": [{"OwnerId": "111111111111", "Instances": [
            {"InstanceId": i, "State": {"Name": self.states[i]}} for i in ids if i in self.states]}]}


class FakeModule:
    def __init__(self, **params):
        self.params = params
        self.exit = None

    def fail_json(self, **kw):
        self.exit = dict(kw, failed=True)
        raise SystemExit(1)

    def exit_json(self, **kw):
        self.exit = kw
        raise SystemExit(0)


def finish(module, fn, judge=None):
    with pytest.raises(SystemExit):
        exit_with(module, "some_module", fn, judge=judge)
    return module.exit


# --- the summing line ---------------------------------------------------------------------------------------------

def test_no_success_sums_up_per_outcome_with_ids_and_the_first_error():
    results = [dict(instance_id="i-1", outcome="not_found", error="instance i-1 not found"),
               dict(instance_id="i-2", outcome="undeliverable", error="not sent"),
               dict(instance_id="i-3", outcome="not_found", error="instance i-3 not found")]
    assert no_success_message(results, "outcome", ("success",)) == (
        "no instance succeeded: 2 not_found (i-1, i-3), 1 undeliverable (i-2); first error: instance i-1 not found")


def test_no_success_names_at_most_five_ids_per_outcome():
    results = [dict(instance_id=f"i-{n}", outcome="failed", error=None) for n in range(8)]
    assert no_success_message(results, "outcome", ("success",)) == "no instance succeeded: 8 failed (i-0, i-1, i-2, i-3, i-4, +3 more)"


@pytest.mark.parametrize("ok", ["success", "would_run"])
def test_one_success_or_dry_run_is_enough(ok):
    results = [dict(instance_id="i-1", outcome="failed"), dict(instance_id="i-2", outcome=ok)]
    assert no_success_message(results, "outcome", patch_run.SUCCEEDED) is None


@pytest.mark.parametrize("module, key, field, good, bad", [
    (patch_run, "results", "outcome", ["success", "pending_reboot", "would_run", "sent"], ["failed", "noncompliant", "not_found", "state_unknown"]),
    (command_run, "results", "outcome", ["success", "would_run", "sent"], ["failed", "undeliverable", "not_found"]),
    (root_restore, "results", "status", ["succeeded", "started", "would_restore"], ["failed"]),
    (backup_run, "backups", "status", ["created", "reused", "would_create", "existing", "missing"], ["failed"]),
])
def test_what_each_module_counts_as_success(module, key, field, good, bad):
    for value in good:
        assert module.no_success({key: [{"instance_id": "i-1", field: value}]}) is None, value
    for value in bad:
        assert module.no_success({key: [{"instance_id": "i-1", field: value}]}).startswith(f"no instance succeeded: 1 {value} (i-1)")


def test_exit_with_fails_a_call_without_success_and_keeps_the_results():
    result = dict(changed=False, results=[dict(instance_id="i-1", outcome="not_found", error="instance i-1 not found")])
    out = finish(FakeModule(fail_on_no_success=True), lambda m: result, patch_run.no_success)
    assert out["failed"] is True and out["msg"] == "no instance succeeded: 1 not_found (i-1); first error: instance i-1 not found"
    assert out["results"] == result["results"] and out["changed"] is False


def test_exit_with_lets_the_roles_opt_out():
    result = dict(changed=False, results=[dict(instance_id="i-1", outcome="not_found", error="x")])
    out = finish(FakeModule(fail_on_no_success=False), lambda m: result, patch_run.no_success)
    assert "failed" not in out and out["results"] == result["results"]


# --- AWS errors through the error-handler pattern -------------------------------------------------------------------

@AwsErrorHandler.common_error_handler("ec2:CreateImage")
def refused(error):
    raise error


def test_the_handler_keeps_the_one_line_message_and_the_code():
    error = ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "You are not\n authorized"}}, "CreateImage")
    with pytest.raises(AwsCallError) as caught:
        refused(error)
    assert caught.value.code == "UnauthorizedOperation"
    assert caught.value.line("i-1") == aws_error_message(error, "ec2:CreateImage", "i-1")
    assert caught.value.line("i-1") == "ec2:CreateImage failed for i-1: UnauthorizedOperation: You are not authorized"
    assert str(caught.value) == "ec2:CreateImage failed: UnauthorizedOperation: You are not authorized"
    assert isinstance(caught.value, PatchingError)  # callers that catch PatchingError still get one line


def test_the_handler_turns_connection_errors_into_one_line_without_a_code():
    with pytest.raises(AwsCallError) as caught:
        refused(EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"))
    assert caught.value.code is None
    assert str(caught.value) == 'ec2:CreateImage failed: Could not connect to the endpoint URL: "http://127.0.0.1:9/"'


def test_exit_with_reports_the_aws_error_code_of_a_failed_call():
    def fn(_module):
        refused(client_error("AccessDeniedException", "DescribeInstanceInformation"))
    out = finish(FakeModule(), fn)
    assert out["msg"] == "ec2:CreateImage failed: AccessDeniedException: simulated AccessDeniedException"
    assert out["error_code"] == "AccessDeniedException"

    def raw(_module):
        raise client_error("ThrottlingException", "ListCommands")
    out = finish(FakeModule(), raw)
    assert out["msg"] == "some_module failed: ThrottlingException: simulated ThrottlingException" and out["error_code"] == "ThrottlingException"


# --- not_found --------------------------------------------------------------------------------------------------------

def run(ssm, ec2, clock, **kw):
    check_mode = kw.pop("check_mode", False)
    return patch_run.run_patch(ssm, params(**kw), check_mode, clock=clock, sleep=clock.sleep, ec2=ec2)


def test_an_id_ec2_does_not_know_is_not_found_and_one_ssm_does_not_know_is_undeliverable():
    ids = [iid(1), iid(2), iid(3), iid(4)]
    clock = FakeClock()
    ssm = FakeSsm(clock, ping={iid(2): None, iid(3): None, iid(4): None}, before={iid(1): BEFORE}, after={})
    ec2 = FakeEc2({iid(1): "running", iid(2): "running", iid(4): "terminated"})
    result = run(ssm, ec2, clock, instance_ids=ids, operation="Scan")
    outcomes = {r["instance_id"]: (r["outcome"], r["error"]) for r in result["results"]}
    assert outcomes[iid(1)][0] == "success"
    assert outcomes[iid(2)] == ("undeliverable", "not sent: SSM agent not registered (SendCommand would refuse it)")
    assert outcomes[iid(3)] == ("not_found", f"instance {iid(3)} not found: EC2 in us-east-1 does not know it (wrong region or account, or a typo)")
    assert outcomes[iid(4)] == ("not_found", f"instance {iid(4)} not found: it is terminated")
    assert len(ec2.calls) == 1 and ec2.calls[0]["Filters"] == [{"Name": "instance-id", "Values": [iid(2), iid(3), iid(4)]}]
    assert [kw["InstanceIds"] for op, kw in ssm.calls if op == "send_command"] == [[iid(1)]]
    assert result["summary"] == {"total": 4, "success": 1, "undeliverable": 1, "not_found": 2}
    assert patch_run.no_success(result) is None


def test_only_unknown_ids_fail_the_call_as_not_found_with_nothing_sent():
    clock = FakeClock()
    ssm = FakeSsm(clock, ping={iid(1): None})
    result = run(ssm, FakeEc2({}), clock, instance_ids=[iid(1)])
    assert result["changed"] is False and result["sent"] == 0 and ssm.count("send_command") == 0
    assert patch_run.no_success(result) == (f"no instance succeeded: 1 not_found ({iid(1)}); first error: instance {iid(1)} not found: "
                                            "EC2 in us-east-1 does not know it (wrong region or account, or a typo)")


def test_ec2_is_not_asked_when_ssm_knows_every_instance():
    clock = FakeClock()
    ec2 = FakeEc2(fail=AssertionError("DescribeInstances called"))
    result = run(FakeSsm(clock, before={iid(1): BEFORE}), ec2, clock, check_mode=True)
    assert [r["outcome"] for r in result["results"]] == ["would_run"] and ec2.calls == []


def test_a_failed_ec2_read_fails_the_module_before_any_send():
    clock = FakeClock()
    ssm = FakeSsm(clock, ping={iid(1): None})
    with pytest.raises(AwsCallError) as caught:
        run(ssm, FakeEc2(fail=client_error("UnauthorizedOperation", "DescribeInstances")), clock)
    assert str(caught.value) == "reading SSM and EC2 state before patching failed: UnauthorizedOperation: simulated UnauthorizedOperation"
    assert caught.value.code == "UnauthorizedOperation" and ssm.count("send_command") == 0


def test_ssm_command_run_reports_unknown_ids_as_not_found():
    clock = FakeClock()
    ssm = FakeSsm(clock, ping={iid(2): None, iid(3): None})
    cmd_params = dict(step="precheck", instance_ids=[iid(2), iid(3)], targets=[], commands=["true"], services=[], run_id="run-1",
                      execution_timeout=60, max_concurrency="100%", max_errors="100%", delivery_timeout=600, output_s3_bucket_name=None,
                      output_s3_key_prefix=None, cloudwatch_output=None, wait=True, poll_interval=1.0)
    result = command_run.run_commands(ssm, cmd_params, False, clock=clock, sleep=clock.sleep, ec2=FakeEc2({iid(2): "stopped"}))
    assert [(r["outcome"], r["document"]) for r in result["results"]] == [("undeliverable", None), ("not_found", None)]
    assert ssm.count("send_command") == 0
    assert command_run.no_success(result).startswith(f"no instance succeeded: 1 not_found ({iid(3)}), 1 undeliverable ({iid(2)}); ")


@pytest.mark.parametrize("step", ["precheck", "patch"])
def test_not_found_ends_failed_with_reason_not_found_and_no_rollback(step):
    gate = [{"instance_id": iid(1), "image_id": "ami-0123456789abcdef0"}]
    found = [{"instance_id": iid(1), "outcome": "not_found"}]
    steps = dict(precheck=found if step == "precheck" else [{"instance_id": iid(1), "outcome": "success"}],
                 patch=found if step == "patch" else [], restart=[], health=[])
    entry = wave_entries([iid(1)], gate, steps["precheck"], steps["patch"], steps["restart"], steps["health"], [])[0]
    assert (entry["final_status"], entry["reason"]) == ("failed", "not_found")
    assert needs_rollback([iid(1)], gate, steps["precheck"], steps["patch"], steps["restart"], steps["health"]) == []


# --- per-instance AWS error codes ---------------------------------------------------------------------------------

class RefusingEc2:
    """DescribeInstances/DescribeImages say the restore may go ahead; CreateReplaceRootVolumeTask is refused."""

    def __init__(self, iid_, image_id):
        self.iid, self.image_id = iid_, image_id

    def get_paginator(self, op):
        pages = {"describe_instances": {"Reservations": [{"Instances": [{"InstanceId": self.iid, "State": {"Name": "running"}}]}]},
                 "describe_images": {"Images": [{"ImageId": self.image_id, "State": "available", "Tags": []}]}}
        return SimpleNamespace(paginate=lambda **kw: iter([pages[op]]))

    def create_replace_root_volume_task(self, **kw):
        raise client_error("UnauthorizedOperation", "CreateReplaceRootVolumeTask")


def test_a_refused_restore_keeps_its_aws_error_code():
    image = "ami-0123456789abcdef0"
    restore_params = dict(instances=[dict(instance_id=iid(1), image_id=image)], delete_replaced_root_volume=False, run_id=None,
                          wait=True, wait_timeout=10, agent_online_timeout=10, poll_interval=1.0)
    result = root_restore.run_restore(RefusingEc2(iid(1), image), None, restore_params, False)
    res = result["results"][0]
    assert (res["status"], res["error_code"]) == ("failed", "UnauthorizedOperation")
    assert res["error"] == f"ec2:CreateReplaceRootVolumeTask failed for {iid(1)}: UnauthorizedOperation: simulated UnauthorizedOperation"
    assert root_restore.no_success(result).startswith(f"no instance succeeded: 1 failed ({iid(1)}); first error: ec2:CreateReplaceRootVolumeTask")
