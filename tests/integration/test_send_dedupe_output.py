"""Sends whose answer is lost are not duplicated; failure output shows the end of stderr and says when it was cut.

The simulator's `send_drop_rate` accepts a SendCommand and then drops the connection, as a read timeout or reset
after AWS accepted the command would: a client that retries the call runs the command twice.
"""

import uuid

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.5)  # short agent pings: see helpers.FAST


def seed(sim, count, **group):
    spec = {"region": "us-east-1", "tags": {"cms-test": f"dedupe-{uuid.uuid4().hex[:8]}"},
            "groups": [dict(count=count, name_prefix="d", **group)]}
    return [i["instance_id"] for i in sim.seed(spec)]


def commands_of(sim, ids, run_id):
    """Every command AWS accepted for these instances in this run (ListCommands, as an auditor would look)."""
    ssm = sim.client("ssm")
    found = {}
    for iid in ids:
        for page in ssm.get_paginator("list_commands").paginate(InstanceId=iid):
            for cmd in page["Commands"]:
                if cmd["Comment"].startswith(f"cms-patching {run_id} "):
                    found[cmd["CommandId"]] = cmd
    return list(found.values())


def test_patch_run_sends_each_batch_once_when_every_answer_is_lost(sim):
    sim.configure(**FAST)
    ids = seed(sim, 52)  # two batches: 50 + 2
    run_id = f"drop-{uuid.uuid4().hex[:6]}"
    sim.configure(send_drop_rate=1)
    sim.reset_stats()
    result = run_module("ssm_patch_run", dict(instance_ids=ids, run_id=run_id, poll_interval=0.2, agent_online_timeout=5,
                                              execution_timeout=60), sim.env)
    sim.configure(send_drop_rate=0)
    assert result["rc"] == 0, result.get("msg")
    assert result["summary"] == {"total": 52, "success": 52}
    assert sim.stats()["calls"]["ssm:SendCommand"] == 2
    commands = commands_of(sim, ids, run_id)
    assert sorted(len(c["InstanceIds"]) for c in commands) == [2, 50]
    assert {c["CommandId"] for c in commands} == {c["command_id"] for c in result["commands"]}
    assert {c["Comment"] for c in commands} == {c["comment"] for c in result["commands"]}
    assert all(c["Comment"].split()[:3] == ["cms-patching", run_id, "patch"] for c in commands)


def test_command_run_sends_once_when_the_answer_is_lost(sim):
    sim.configure(**FAST)
    ids = seed(sim, 3)
    run_id = f"drop-{uuid.uuid4().hex[:6]}"
    sim.configure(send_drop_rate=1)
    sim.reset_stats()
    result = run_module("ssm_command_run", dict(step="health", instance_ids=ids, commands=["true"], run_id=run_id,
                                                poll_interval=0.2, execution_timeout=60), sim.env)
    sim.configure(send_drop_rate=0)
    assert result["rc"] == 0, result.get("msg")
    assert result["summary"] == {"total": 3, "success": 3}
    assert sim.stats()["calls"]["ssm:SendCommand"] == 1 and len(commands_of(sim, ids, run_id)) == 1


def test_a_failure_excerpt_ends_with_the_error_and_is_marked_cut(sim):
    sim.configure(**FAST)
    # A long log on stdout: ListCommandInvocations' Output (2,500 characters) keeps its start and only the start of stderr.
    long_ids = seed(sim, 1, faults=["patch-fail"], tags={"sim:output-chars": 30000, "sim:error-chars": 3000})
    short_ids = seed(sim, 1, faults=["patch-fail"])
    ok_ids = seed(sim, 1)
    sim.reset_stats()
    result = run_module("ssm_patch_run", dict(instance_ids=long_ids + short_ids + ok_ids, run_id="out-1", poll_interval=0.2,
                                              agent_online_timeout=5, execution_timeout=60,
                                              output_s3_bucket_name="patch-logs", output_s3_key_prefix="night"), sim.env)
    assert result["rc"] == 0, result.get("msg")
    long_res, short_res, ok_res = result["results"]
    assert long_res["outcome"] == "failed" and short_res["outcome"] == "failed" and ok_res["outcome"] == "success"
    # The telling line is the last of stderr; the listing's Output cut it off, GetCommandInvocation's stderr has it.
    assert long_res["output_excerpt"].endswith("ERROR: simulated patch-fail: package install failed")
    assert long_res["output_truncated"] is True and len(long_res["output_excerpt"]) <= 500
    assert short_res["output_excerpt"].endswith("ERROR: simulated patch-fail: package install failed")
    assert short_res["output_truncated"] is False
    assert ok_res["output_truncated"] is False
    command_id = long_res["command_id"]
    assert long_res["output_location"] == f"s3://patch-logs/night/{command_id}/{long_ids[0]}/"
    # One GetCommandInvocation per failed instance, none for the success.
    assert sim.stats()["calls"]["ssm:GetCommandInvocation"] == 2
