"""SendCommand answered by a dropped connection (no idempotency token: a retry duplicates), and command output limits."""
from __future__ import annotations

import uuid

import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from .conftest import wait_for

TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")
SHELL = {"commands": ["true"]}


def _client(sim, attempts):
    """botocore's standard retry mode with `attempts` in all (total_max_attempts counts the first try)."""
    cfg = Config(retries={"mode": "standard", "total_max_attempts": attempts})
    return sim.session.client("ssm", region_name="us-east-1", endpoint_url=sim.url, config=cfg)


def _mine(ssm, comment):
    return [c for c in ssm.list_commands()["Commands"] if c["Comment"] == comment]


def _done(ssm, cmd_id, iid):
    return wait_for(lambda: (inv := ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid))["Status"] in TERMINAL and inv)


def test_dropped_send_was_accepted_and_a_plain_retry_sends_it_again(sim):
    iid = sim.ids()[0]
    sim.config(send_drop_rate=1)
    comment = f"cms-patching drop-{uuid.uuid4().hex[:6]} precheck"
    once = _client(sim, 1)  # no retry inside botocore
    with pytest.raises(ConnectionClosedError):
        once.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters=SHELL, Comment=comment)
    accepted = _mine(once, comment)
    assert len(accepted) == 1 and accepted[0]["InstanceIds"] == [iid]  # AWS has it although the caller saw an error
    assert sim.stats()["calls"]["ssm:SendCommand"] == 1

    retrying = _client(sim, 3)  # botocore's standard mode retries the connection error: 3 sends
    with pytest.raises(ConnectionClosedError):
        retrying.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters=SHELL, Comment=comment)
    assert len(_mine(once, comment)) == 4
    assert sim.stats()["calls"]["ssm:SendCommand"] == 4

    sim.config(send_drop_rate=0)
    cmd = once.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters=SHELL, Comment=comment)["Command"]
    assert cmd["InstanceIds"] == [iid] and len(_mine(once, comment)) == 5


def test_long_output_is_cut_as_aws_cuts_it(sim):
    iid = sim.ids(faults=["patch-fail"], tags={"sim:output-chars": 30000, "sim:error-chars": 10000})[0]
    ssm = sim.client("ssm")
    cmd_id = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunPatchBaseline", Comment="cms-patching long patch",
                              Parameters={"Operation": ["Install"], "RebootOption": ["NoReboot"]})["Command"]["CommandId"]
    inv = _done(ssm, cmd_id, iid)
    assert inv["Status"] == "Failed"
    # GetCommandInvocation: the first 24,000 characters of stdout and the first 8,000 of stderr.
    assert len(inv["StandardOutputContent"]) == 24000 and inv["StandardOutputContent"].startswith("sim stdout line 000000\n")
    assert len(inv["StandardErrorContent"]) == 8000 and inv["StandardErrorContent"].startswith("sim stderr line 000000\n")
    assert "simulated patch-fail" not in inv["StandardErrorContent"]  # the last line is beyond the first 8,000
    listed = ssm.list_command_invocations(CommandId=cmd_id, Details=True)["CommandInvocations"][0]["CommandPlugins"][0]
    # CommandPlugins[].Output: at most 2,500 characters; the agent keeps the start of each stream, with markers.
    assert len(listed["Output"]) <= 2500
    assert listed["Output"].startswith("sim stdout line 000000\n")
    assert "\n---Output truncated---\n----------ERROR-------\nsim stderr line 000000" in listed["Output"]
    assert listed["Output"].endswith("\n---Error truncated----")


def test_short_output_is_whole_with_an_error_title(sim):
    iid = sim.ids(faults=["patch-fail"], tags={"sim:error-chars": 900})[0]
    ssm = sim.client("ssm")
    cmd_id = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunPatchBaseline", Comment="cms-patching short patch",
                              Parameters={"Operation": ["Install"], "RebootOption": ["NoReboot"]})["Command"]["CommandId"]
    inv = _done(ssm, cmd_id, iid)
    assert len(inv["StandardErrorContent"]) == 900 and inv["StandardErrorContent"].endswith("simulated patch-fail: package install failed\n")
    listed = ssm.list_command_invocations(CommandId=cmd_id, Details=True)["CommandInvocations"][0]["CommandPlugins"][0]
    assert listed["Output"] == inv["StandardOutputContent"] + "\n----------ERROR-------\n" + inv["StandardErrorContent"]


def test_output_is_empty_until_the_command_ends(sim):
    iid = sim.ids(tags={"sim:output-chars": 5000})[0]
    sim.config(command_s=30)
    ssm = sim.client("ssm")
    cmd_id = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", Parameters=SHELL,
                              Comment="cms-patching pending precheck")["Command"]["CommandId"]
    inv = ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid)
    assert inv["Status"] not in TERMINAL and inv["StandardOutputContent"] == "" and inv["StandardErrorContent"] == ""
