"""ssm_patch_run against the simulator's reboots inside the command, and installs with BaselineOverride.

No wall-clock assertions: what shows that a hung reboot is not left to execution_timeout is the calls the module made
(its polls, agent checks and one CancelCommand), with an execution_timeout far beyond any of them.
"""

import uuid

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.5)  # short agent pings: see helpers.FAST
POLL = 0.2
EXECUTION_TIMEOUT = 3600  # 18,000 polls of 0.2 s: a run that waited for it would never finish in the test's time


def seed(sim, groups):
    tag = f"reboot-{uuid.uuid4().hex[:8]}"
    spec = {"region": "us-east-1", "tags": {"cms-test": tag},
            "groups": [dict(count=count, name_prefix=prefix, faults=faults) for prefix, (count, faults) in groups.items()]}
    return [i["instance_id"] for i in sim.seed(spec)]


def test_reboot_hang_is_cancelled_at_agent_online_timeout_long_before_execution_timeout(sim):
    sim.configure(**FAST)
    ok1, ok2, hung = seed(sim, {"ok": (2, []), "hang": (1, ["reboot-hang"])})
    sim.reset_stats()
    result = run_module("ssm_patch_run", dict(instance_ids=[ok1, ok2, hung], run_id="run-hang", poll_interval=POLL,
                                              agent_online_timeout=2, agent_check_interval=0.5,
                                              execution_timeout=EXECUTION_TIMEOUT), sim.env)
    assert result["rc"] == 0, result.get("msg")
    res = {r["instance_id"]: r for r in result["results"]}
    assert res[ok1]["outcome"] == res[ok2]["outcome"] == "success"
    assert res[hung]["outcome"] == "reboot_timeout", res[hung]
    assert "agent_online_timeout 2s" in res[hung]["error"] and "CancelCommand sent" in res[hung]["error"]
    assert res[hung]["status"] == "Cancelled" and res[hung]["compliance_after"]["missing"] == 3
    # The default agent_recovery [reboot] tried one RebootInstances first (the agent did not come back from it either).
    assert [(a["action"], a["result"]) for a in res[hung]["recovery"]] == [("reboot", "agent_not_back")]
    stats = sim.stats()
    assert stats["mutating"] == {"ssm:SendCommand": 1, "ec2:RebootInstances": 1, "ssm:CancelCommand": 1}
    calls = stats["calls"]
    # A handful of polls, not the 18,000 that execution_timeout allows; at most one agent check per poll, each one
    # DescribeInstanceInformation for the 3 instances (the first call is the registration check before sending).
    assert calls["ssm:ListCommands"] <= 100, calls
    assert 1 <= calls["ssm:DescribeInstanceInformation"] - 1 <= calls["ssm:ListCommands"], calls
    ssm = sim.client("ssm")
    invocations = {i["InstanceId"]: i["Status"] for i in
                   ssm.list_command_invocations(CommandId=res[hung]["command_id"])["CommandInvocations"]}
    assert invocations == {ok1: "Success", ok2: "Success", hung: "Cancelled"}


def test_normal_reboots_end_inside_the_command_with_fresh_compliance(sim):
    sim.configure(command_s=0.3, reboot_s=1.5, replace_root_s=0.3, ping_interval_s=0.5)
    ids = seed(sim, {"ok": (3, [])})
    sim.reset_stats()
    # The reboot (1.5 s) is inside the command, which ends only once the agents are back and have reported.
    result = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-rb", poll_interval=POLL, agent_online_timeout=5,
                                              agent_check_interval=60, execution_timeout=EXECUTION_TIMEOUT), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert result["summary"] == {"total": 3, "success": 3}
    assert all(r["compliance_after"]["missing"] == 0 and r["compliance_after"]["snapshot_id"] == result["snapshot_id"]
               for r in result["results"])
    calls = sim.stats()["calls"]
    assert calls["ssm:DescribeInstanceInformation"] == 1  # registration only: no "wait until Online" after the command
    assert calls["ssm:DescribeInstancePatchStates"] == 2  # before, and fresh at the first read after


def test_baseline_override_install_is_judged_on_its_output(sim):
    sim.configure(**FAST)
    ids = seed(sim, {"ok": (2, [])})
    override = "s3://cms-patching-test/override.json"
    result = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-bo", poll_interval=POLL, agent_online_timeout=20,
                                              agent_check_interval=0.5, baseline_override=override), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert result["summary"] == {"total": 2, "success": 2}, result["results"]
    # AWS kept the compliance of before the run: it is reported, not judged.
    assert {r["compliance_after"]["missing"] for r in result["results"]} == {3}
    states = sim.client("ssm").describe_instance_patch_states(InstanceIds=ids)["InstancePatchStates"]
    assert {s["MissingCount"] for s in states} == {3} and {s["Operation"] for s in states} == {"Scan"}

    no_reboot = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-bo2", poll_interval=POLL, agent_online_timeout=20,
                                                 reboot_option="NoReboot", baseline_override=override), sim.env)
    assert no_reboot["rc"] == 0, no_reboot.get("msg")
    assert no_reboot["summary"] == {"total": 2, "success": 2}, no_reboot["results"]  # nothing left to install


def test_baseline_override_without_reboot_reports_pending_reboot_from_the_output(sim):
    sim.configure(**FAST)
    ids = seed(sim, {"ok": (2, [])})
    result = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-bo3", poll_interval=POLL, agent_online_timeout=20,
                                              reboot_option="NoReboot", baseline_override="s3://b/override.json"), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert {r["outcome"] for r in result["results"]} == {"pending_reboot"}, result["results"]
    assert all("InstalledPendingReboot" in r["output_excerpt"] for r in result["results"])


def seed_long_output(sim, count, chars):
    """Instances whose stdout is `chars` long: the simulator pads it with log lines before what the run prints last."""
    spec = {"region": "us-east-1", "tags": {"cms-test": f"bo-long-{uuid.uuid4().hex[:8]}"},
            "groups": [dict(count=count, name_prefix="long", tags={"sim:output-chars": chars})]}
    return [i["instance_id"] for i in sim.seed(spec)]


def test_baseline_override_is_judged_on_the_whole_stdout_not_the_listing_excerpt(sim):
    sim.configure(**FAST)
    ids = seed_long_output(sim, 2, 6000)
    sim.reset_stats()
    # ListCommandInvocations' Output holds only the start of these 6,000 characters: the NON_COMPLIANT lines printed
    # at the end are only in GetCommandInvocation's stdout, which is what the run is judged on.
    result = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-bo-long", poll_interval=POLL, agent_online_timeout=20,
                                              reboot_option="NoReboot", baseline_override="s3://b/override.json"), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert {r["outcome"] for r in result["results"]} == {"pending_reboot"}, result["results"]
    assert all("InstalledPendingReboot" in r["output_excerpt"] for r in result["results"])
    assert sim.stats()["calls"]["ssm:GetCommandInvocation"] == 2

    clean = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-bo-long2", poll_interval=POLL, agent_online_timeout=20,
                                             agent_check_interval=0.5, baseline_override="s3://b/override.json"), sim.env)
    assert clean["rc"] == 0, clean.get("msg")
    assert clean["summary"] == {"total": 2, "success": 2}, clean["results"]  # the reboot cleared them: nothing listed


def test_baseline_override_stdout_cut_by_ssm_is_never_success(sim):
    sim.configure(**FAST)
    ids = seed_long_output(sim, 1, 30000)
    # GetCommandInvocation returns the first 24,000 characters of stdout: what was printed after them is unknown.
    result = run_module("ssm_patch_run", dict(instance_ids=ids, run_id="run-bo-cut", poll_interval=POLL, agent_online_timeout=20,
                                              agent_check_interval=0.5, baseline_override="s3://b/override.json",
                                              fail_on_no_success=False), sim.env)
    assert result["rc"] == 0, result.get("msg")
    res = result["results"][0]
    assert res["outcome"] == "noncompliant", res
    assert "first 24,000 characters" in res["error"] and "cannot be ruled out" in res["error"]


def test_agent_online_timeout_must_stay_above_the_agents_ping_interval(sim):
    """A healthy install longer than agent_online_timeout: kept while the agent pings more often than the timeout,
    taken for a hung reboot when the timeout is below the ping interval (300 s on AWS: why the docs say to keep it
    well above)."""
    args = dict(run_id="run-ping", poll_interval=POLL, agent_online_timeout=2, agent_check_interval=0.5,
                execution_timeout=EXECUTION_TIMEOUT)
    sim.configure(command_s=4, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.5)
    ids = seed(sim, {"ok": (2, [])})
    result = run_module("ssm_patch_run", dict(args, instance_ids=ids), sim.env)
    assert result["rc"] == 0 and result["summary"] == {"total": 2, "success": 2}, result.get("msg")
    sim.configure(ping_interval_s=300)  # AWS's default: no ping within the whole command
    ids = seed(sim, {"ok": (2, [])})
    # Without agent recovery (which would first reboot these healthy instances in the middle of their install).
    result = run_module("ssm_patch_run", dict(args, instance_ids=ids, agent_recovery=[]), sim.env)
    assert {r["outcome"] for r in result["results"]} == {"reboot_timeout"}, result.get("results")
