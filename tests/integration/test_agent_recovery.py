"""Agent recovery (agent_recovery / patching_agent_recovery) against the simulator's agent-stuck and agent-dead faults.

An agent that stays away after the reboot inside AWS-RunPatchBaseline gets EC2 actions before its command is cancelled:
RebootInstances (default), then, opted in, StopInstances + StartInstances. The agent resumes the document once back
(SSM user guide, "Handling reboots when running commands"), so the command ends and is judged as usual. No wall-clock
assertions: what is checked is the outcome, the calls made (sim stats) and the attempts recorded.
"""

import uuid

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.3)
POLL = 0.2
EXECUTION_TIMEOUT = 3600  # far beyond the test: an outcome reached here never waited for it


def seed(sim, groups):
    tag = f"recovery-{uuid.uuid4().hex[:8]}"
    spec = {"region": "us-east-1", "tags": {"cms-test": tag},
            "groups": [dict(count=1, name_prefix=prefix, faults=faults, **extra) for prefix, (faults, extra) in groups.items()]}
    return [i["instance_id"] for i in sim.seed(spec)]


def patch(sim, ids, run_id, **extra):
    args = dict(instance_ids=ids, run_id=run_id, poll_interval=POLL, agent_online_timeout=2, agent_check_interval=0.3,
                execution_timeout=EXECUTION_TIMEOUT, fail_on_no_success=False)
    return run_module("ssm_patch_run", dict(args, **extra), sim.env)


def by_id(result):
    assert result["rc"] == 0, result.get("msg")
    return {r["instance_id"]: r for r in result["results"]}


def test_agent_stuck_is_recovered_by_a_reboot_and_ends_patched(sim):
    sim.configure(**FAST)
    stuck, healthy = seed(sim, {"stuck": (["agent-stuck"], {}), "ok": ([], {})})
    sim.reset_stats()
    res = by_id(patch(sim, [stuck, healthy], "run-rec-1"))
    assert res[healthy]["outcome"] == "success" and res[healthy]["recovery"] == []
    assert res[stuck]["outcome"] == "success", res[stuck]
    assert res[stuck]["compliance_after"]["missing"] == 0  # judged as usual: a fresh, clean patch state
    [attempt] = res[stuck]["recovery"]
    assert (attempt["action"], attempt["result"]) == ("reboot", "agent_back"), attempt
    assert attempt["started_at"] <= attempt["ended_at"]
    mutating = sim.stats()["mutating"]
    assert mutating.get("ec2:RebootInstances") == 1 and "ssm:CancelCommand" not in mutating, mutating


def test_agent_dead_is_recovered_by_stop_start_when_opted_in(sim):
    sim.configure(**FAST)
    dead, = seed(sim, {"dead": (["agent-dead"], {})})
    sim.reset_stats()
    res = by_id(patch(sim, [dead], "run-rec-2", agent_recovery=["reboot", "stop_start"]))[dead]
    assert res["outcome"] == "success", res
    assert [(a["action"], a["result"]) for a in res["recovery"]] == [("reboot", "agent_not_back"), ("stop_start", "agent_back")]
    mutating = sim.stats()["mutating"]
    assert {k: mutating.get(k) for k in ("ec2:RebootInstances", "ec2:StopInstances", "ec2:StartInstances")} == {
        "ec2:RebootInstances": 1, "ec2:StopInstances": 1, "ec2:StartInstances": 1}, mutating
    assert "ssm:CancelCommand" not in mutating


def test_agent_dead_with_the_default_is_cancelled_after_the_reboot(sim):
    sim.configure(**FAST)
    dead, = seed(sim, {"dead": (["agent-dead"], {})})
    sim.reset_stats()
    res = by_id(patch(sim, [dead], "run-rec-3"))[dead]
    assert res["outcome"] == "reboot_timeout", res
    assert [(a["action"], a["result"]) for a in res["recovery"]] == [("reboot", "agent_not_back")]
    assert "recovery: reboot agent_not_back" in res["error"] and "CancelCommand sent" in res["error"]
    assert res["status"] == "Cancelled" and res["compliance_after"]["missing"] == 3  # nothing installed
    mutating = sim.stats()["mutating"]
    assert mutating.get("ec2:RebootInstances") == 1 and "ec2:StopInstances" not in mutating
    assert mutating.get("ssm:CancelCommand") == 1


def test_stop_start_skips_auto_scaling_members_and_instance_store_types(sim):
    sim.configure(**FAST)
    member, nvme = seed(sim, {"asg": (["agent-dead"], {"asg": f"rec-asg-{uuid.uuid4().hex[:8]}"}),
                              "nvme": (["agent-dead"], {"instance_type": "m5d.large"})})
    sim.reset_stats()
    res = by_id(patch(sim, [member, nvme], "run-rec-4", agent_recovery=["stop_start"]))
    for iid, reason in ((member, "auto_scaling_member"), (nvme, "instance_store")):
        assert res[iid]["outcome"] == "reboot_timeout", res[iid]
        assert [(a["action"], a["result"], a["reason"]) for a in res[iid]["recovery"]] == [("stop_start", "skipped", reason)]
        assert f"stop_start skipped ({reason})" in res[iid]["error"]
    assert not {"ec2:StopInstances", "ec2:StartInstances", "ec2:RebootInstances"} & set(sim.stats()["mutating"])


def test_no_recovery_when_the_list_is_empty_and_none_in_check_mode(sim):
    sim.configure(**FAST)
    stuck, = seed(sim, {"stuck": (["agent-stuck"], {})})
    res = by_id(patch(sim, [stuck], "run-rec-5", agent_recovery=[]))[stuck]
    assert res["outcome"] == "reboot_timeout" and res["recovery"] == [], res
    sim.reset_stats()
    dry = run_module("ssm_patch_run", dict(instance_ids=[stuck], run_id="run-rec-6", agent_recovery=["reboot", "stop_start"]),
                     sim.env, check_mode=True)
    assert dry["rc"] == 0 and dry["results"][0]["outcome"] == "would_run", dry
    assert sim.stats()["mutating"] == {}


def test_bad_recovery_values_are_refused_with_one_line(sim):
    ids = seed(sim, {"ok": ([], {})})
    sim.reset_stats()
    for value, text in ((["reboot", "hibernate"], "hibernate"), (["reboot", "reboot"], "names an action twice")):
        result = run_module("ssm_patch_run", dict(instance_ids=ids, agent_recovery=value), sim.env)
        assert result["rc"] != 0 and text in result["msg"], result
        assert "\n" not in result["msg"] and "Traceback" not in result["stderr"]
    assert sim.stats()["mutating"] == {}


def test_wave_records_recovery_and_rolls_back_what_it_could_not_recover(sim):
    """Through ssm_patch_wave (the patching role's call): agent-stuck ends patched after a reboot; agent-dead with the
    default [reboot] is cancelled and rolled back from its pre-patch AMI, as a hung reboot always was."""
    sim.configure(**FAST)
    stuck, dead = seed(sim, {"stuck": (["agent-stuck"], {}), "dead": (["agent-dead"], {})})
    made = run_module("ami_backup_verify", {"instance_ids": [stuck, dead], "run_id": "run-rec-w", "poll_interval": 0.1}, sim.env)
    assert made["rc"] == 0, made.get("msg")
    result = run_module("ssm_patch_wave", dict(
        run_id="run-rec-w", poll_interval=POLL, execution_timeout=EXECUTION_TIMEOUT, agent_online_timeout=2,
        agent_check_interval=0.3, command_timeout=60, rollback_timeout=60, fail_on_no_success=False,
        instances=[dict(instance_id=i, region="us-east-1", platform="linux") for i in (stuck, dead)]), sim.env)
    assert result["rc"] == 0, result.get("msg")
    entries = {e["instance_id"]: e for e in result["results"]}
    assert entries[stuck]["final_status"] == "patched", entries[stuck]
    assert [(a["action"], a["result"]) for a in entries[stuck]["patch"]["recovery"]] == [("reboot", "agent_back")]
    assert (entries[dead]["final_status"], entries[dead]["reason"]) == ("rolled_back", "reboot_timeout"), entries[dead]
    assert [(a["action"], a["result"]) for a in entries[dead]["patch"]["recovery"]] == [("reboot", "agent_not_back")]
    assert entries[dead]["rollback"]["status"] == "succeeded"
