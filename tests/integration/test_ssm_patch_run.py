"""ssm_patch_run against the simulator: each patch-phase fault on some instances, the rest patched and compliant."""

import uuid

import pytest

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.5)  # short agent pings: see helpers.FAST
# name prefix -> (faults, expected outcome)
GROUPS = {
    "ok": ([], "success"),
    "pfail": (["patch-fail"], "failed"),
    "ptime": (["patch-timeout"], "timed_out"),
    "undel": (["undeliverable"], "undeliverable"),
    "dto": (["delivery-timeout"], "delivery_timed_out"),
    "hang": (["reboot-hang"], "reboot_timeout"),
}


def seed(sim, groups, platform="linux"):
    tag = f"patch-{uuid.uuid4().hex[:8]}"
    spec = {"region": "us-east-1", "tags": {"cms-test": tag},
            "groups": [dict(count=count, name_prefix=prefix, faults=faults, platform=platform) for prefix, (count, faults) in groups.items()]}
    return sim.seed(spec)


def args(ids, **kw):
    base = dict(instance_ids=ids, run_id="run-int", poll_interval=0.2, agent_online_timeout=3, execution_timeout=60,
                agent_check_interval=0.5)
    base.update(kw)
    return base


def prefix(inst):
    return inst["name"].rsplit("-", 1)[0]


def test_each_fault_ends_as_its_outcome_and_the_rest_are_compliant(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {p: (2 if p != "ok" else 6, spec[0]) for p, spec in GROUPS.items()})
    ids = [i["instance_id"] for i in fleet]
    sim.reset_stats()
    result = run_module("ssm_patch_run", args(ids), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert result["changed"] is True
    by_id = {r["instance_id"]: r for r in result["results"]}
    assert [r["instance_id"] for r in result["results"]] == ids
    for inst in fleet:
        res = by_id[inst["instance_id"]]
        assert res["outcome"] == GROUPS[prefix(inst)][1], (inst["name"], res)
        assert res["compliance_before"]["missing"] == 3
        if res["outcome"] == "success":
            assert res["error"] is None and res["status"] == "Success"
            assert res["compliance_after"]["missing"] == 0 and res["compliance_after"]["failed"] == 0
            assert res["compliance_after"]["installed_pending_reboot"] == 0
            assert res["compliance_after"]["snapshot_id"] == result["snapshot_id"]
        else:
            assert res["error"]
    assert by_id[fleet[6]["instance_id"]]["status_details"] == "Failed"  # pfail
    assert "simulated patch-fail" in by_id[fleet[6]["instance_id"]]["output_excerpt"]
    assert by_id[fleet[8]["instance_id"]]["status_details"] == "Execution Timed Out"
    assert by_id[fleet[10]["instance_id"]]["status_details"] == "Undeliverable"
    assert by_id[fleet[12]["instance_id"]]["status_details"] == "Delivery Timed Out"
    assert result["summary"] == {"total": 16, "success": 6, "failed": 2, "timed_out": 2, "undeliverable": 2,
                                 "delivery_timed_out": 2, "reboot_timeout": 2}
    calls = sim.stats()["calls"]
    assert calls["ssm:SendCommand"] == 1
    # The hung reboots: one batched RebootInstances (agent recovery, default [reboot]), then their invocations cancelled.
    assert sim.stats()["mutating"] == {"ssm:SendCommand": 1, "ec2:RebootInstances": 1, "ssm:CancelCommand": 1}
    ssm = sim.client("ssm")
    cmd = ssm.list_commands(CommandId=result["commands"][0]["command_id"])["Commands"][0]
    assert cmd["Comment"] == result["commands"][0]["comment"] and cmd["Comment"].startswith("cms-patching run-int patch ")
    assert cmd["Parameters"]["SnapshotId"] == [result["snapshot_id"]] and cmd["Parameters"]["Operation"] == ["Install"]
    assert cmd["MaxConcurrency"] == "100%" and cmd["MaxErrors"] == "100%"


def test_no_reboot_leaves_patches_pending_reboot(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {"nr": (3, [])}, platform="windows")
    result = run_module("ssm_patch_run", args([i["instance_id"] for i in fleet], reboot_option="NoReboot"), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert {r["outcome"] for r in result["results"]} == {"pending_reboot"}
    assert all(r["compliance_after"]["installed_pending_reboot"] == 3 and r["compliance_after"]["missing"] == 0
               for r in result["results"])
    assert "ssm:DescribeInstanceInformation" in sim.stats()["calls"]  # registration check only


def test_more_than_50_instances_use_batched_commands_polled_together(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {"big": (120, [])})
    ids = [i["instance_id"] for i in fleet]
    sim.reset_stats()
    result = run_module("ssm_patch_run", args(ids, agent_check_interval=60), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert result["summary"] == {"total": 120, "success": 120}
    assert [c["instance_count"] for c in result["commands"]] == [50, 50, 20]
    calls = sim.stats()["calls"]
    assert calls["ssm:SendCommand"] == 3
    assert sim.stats()["mutating"] == {"ssm:SendCommand": 3}
    # one ListCommands per poll for the 3 commands, then one invocation listing each once it has finished
    assert calls["ssm:ListCommandInvocations"] == 3, calls
    assert 1 <= calls["ssm:ListCommands"] <= 12, calls
    # compliance before and after: 3 chunks of <= 50 each; agents: 3 chunks for registration only, since the reboot is
    # inside the command and no agent check falls due within one agent_check_interval
    assert calls["ssm:DescribeInstancePatchStates"] == 6
    assert calls["ssm:DescribeInstanceInformation"] == 3
    assert "ssm:GetCommandInvocation" not in calls
    per_instance = sum(calls.values()) / len(ids)
    assert per_instance < 0.5, calls


@pytest.mark.parametrize("timeout, outcome", [(3, "timed_out"), (1, "delivery_timed_out")])
def test_execution_timeout_cancels_the_command(sim, timeout, outcome):
    """The module's own deadline: CancelCommand, then timed_out if it was running, delivery_timed_out if not yet delivered."""
    sim.configure(command_s=6, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.5)  # Pending for 1.8 s, then InProgress
    fleet = seed(sim, {"slow": (2, [])})
    ids = [i["instance_id"] for i in fleet]
    sim.reset_stats()
    result = run_module("ssm_patch_run", args(ids, execution_timeout=timeout), sim.env)
    # No instance succeeded: the call fails with one summing line, the per-instance results stay in it.
    assert result["rc"] != 0 and result["msg"].startswith(f"no instance succeeded: 2 {outcome} ("), result.get("msg")
    for res in result["results"]:
        assert res["outcome"] == outcome, res
        assert res["status"] == "Cancelled" and "CancelCommand sent" in res["error"]
        assert res["compliance_after"]["missing"] == 3  # the cancelled install changed nothing
    assert sim.stats()["mutating"] == {"ssm:SendCommand": 1, "ssm:CancelCommand": 1}


def test_check_mode_sends_nothing(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {"ok": (3, []), "um": (1, ["ssm-unmanaged"])})
    sim.reset_stats()
    result = run_module("ssm_patch_run", args([i["instance_id"] for i in fleet]), sim.env, check_mode=True)
    assert result["rc"] == 0, result.get("msg")
    assert [r["outcome"] for r in result["results"]] == ["would_run"] * 3 + ["undeliverable"]
    assert result["changed"] is True
    assert sim.stats()["mutating"] == {}


def test_unmanaged_instance_is_not_sent_and_does_not_break_its_batch(sim):
    sim.configure(**FAST)
    fleet = seed(sim, {"ok": (3, []), "um": (1, ["ssm-unmanaged"])})
    result = run_module("ssm_patch_run", args([i["instance_id"] for i in fleet], operation="Scan"), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert [r["outcome"] for r in result["results"]] == ["success"] * 3 + ["undeliverable"]
    assert result["changed"] is False
    assert "not registered" in result["results"][3]["error"]


@pytest.mark.parametrize("bad, message", [
    (dict(reboot_option="Always"), "reboot_option"),
    (dict(document="AWS-RunShellScript"), "document"),
    (dict(execution_timeout=0), "execution_timeout must be greater than 0"),
    (dict(agent_online_timeout=-1), "agent_online_timeout must be greater than 0"),
    (dict(instance_ids=["i-nothex"]), "malformed instance id"),
    (dict(install_override_list="s3://b/l.yaml", baseline_override="s3://b/o.json"), "mutually exclusive"),
    (dict(snapshot_id="abc"), "snapshot_id must be a GUID"),
])
def test_bad_input_is_one_line_and_changes_nothing(sim, bad, message):
    sim.reset_stats()
    result = run_module("ssm_patch_run", args(["i-0123456789abcdef0"], **bad), sim.env)
    assert result["rc"] != 0 and result["failed"] is True
    assert message in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in result["stderr"]
    assert sim.stats()["calls"] == {}
