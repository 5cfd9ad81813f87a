"""Agent recovery's stop_start against an instance that stays `stopping` for a while: EC2 takes a stopped instance
through `stopping` before `stopped` (EC2 user guide, "Amazon EC2 instance state changes") and refuses StartInstances
until then (IncorrectInstanceState, EC2 API reference "Error codes"). The recovery must read `stopped` before it starts
the instance: one StartInstances, accepted, and the agent back (simulator: stop_s, per access key)."""

import uuid

from helpers import run_module


def test_stop_start_waits_for_stopped_before_starting(sim):
    # stop_s spans several agent checks (0.3 s) and stays inside agent_online_timeout (the bound on the stop).
    sim.configure(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.3, stop_s=1.2)
    (dead,) = [i["instance_id"] for i in sim.seed({"region": "us-east-1", "tags": {"cms-test": f"stopping-{uuid.uuid4().hex[:8]}"},
                                                   "groups": [dict(count=1, name_prefix="dead", faults=["agent-dead"])]})]
    sim.reset_stats()
    result = run_module("ssm_patch_run", dict(
        instance_ids=[dead], run_id="run-stopping", poll_interval=0.2, agent_online_timeout=3, agent_check_interval=0.3,
        execution_timeout=3600, fail_on_no_success=False, agent_recovery=["stop_start"]), sim.env)
    assert result["rc"] == 0, result.get("msg")
    (res,) = result["results"]
    assert res["outcome"] == "success", res
    assert [(a["action"], a["result"], a["error"]) for a in res["recovery"]] == [("stop_start", "agent_back", None)]
    mutating = sim.stats()["mutating"]
    assert (mutating.get("ec2:StopInstances"), mutating.get("ec2:StartInstances")) == (1, 1), mutating
