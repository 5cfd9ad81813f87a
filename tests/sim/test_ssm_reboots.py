"""Reboots inside AWS-RunPatchBaseline, BaselineOverride compliance and the SnapshotId pattern, with plain boto3.

AWS facts followed (see the simulator's comments): exit 194/3010 makes the agent reboot the node and run the document
again, so the invocation stays InProgress through the reboot (SSM user guide, "Handling reboots when running commands");
a run with BaselineOverride does not overwrite patch compliance (Patch Manager guide, "Using the BaselineOverride
parameter"); SnapshotId must match the document's GUID allowedPattern.
"""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from .conftest import wait_for

TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def _install(reboot="RebootIfNeeded", **extra):
    return dict({"Operation": ["Install"], "RebootOption": [reboot], "SnapshotId": [str(uuid.uuid4())]}, **extra)


def _send(ssm, ids, params):
    return ssm.send_command(InstanceIds=ids, DocumentName="AWS-RunPatchBaseline", Parameters=params,
                            Comment="cms-patching run1 patch")["Command"]


def _agent(ssm, iid):
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])["InstanceInformationList"][0]
    return info["PingStatus"], info["LastPingDateTime"]


def _invocation(ssm, cmd_id, iid):
    return ssm.list_command_invocations(CommandId=cmd_id, InstanceId=iid, Details=True)["CommandInvocations"][0]


def _patch(ssm, iid):
    return ssm.describe_instance_patch_states(InstanceIds=[iid])["InstancePatchStates"][0]


def _watch(ssm, cmd_id, iid, timeout=15.0):
    """(invocation Status, PingStatus, LastPingDateTime, MissingCount) at every poll until the invocation ends.

    The status is read last, so an entry still InProgress shows an agent and a patch state from before the end.
    """
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        missing = _patch(ssm, iid)["MissingCount"]
        ping, last = _agent(ssm, iid)
        status = _invocation(ssm, cmd_id, iid)["Status"]
        seen.append((status, ping, last, missing))
        if status in TERMINAL:
            break
        time.sleep(0.05)
    return seen


def test_install_needing_a_reboot_stays_in_progress_through_it(sim):
    sim.config(command_s=0.3, reboot_s=1.5, ping_interval_s=0.1)
    iid = sim.ids(missing=4)[0]
    ssm = sim.client("ssm")
    installed = _patch(ssm, iid)["InstalledCount"]
    cmd = _send(ssm, [iid], _install())
    seen = _watch(ssm, cmd["CommandId"], iid)
    assert seen[-1][0] == "Success"
    rebooting = [s for s in seen if s[1] == "ConnectionLost"]
    assert rebooting, seen
    # The agent is away while the command is still InProgress; LastPingDateTime stays at its last periodic ping before
    # the reboot (one falls inside command_s: ping_interval_s is shorter) and compliance is not reported before the
    # post-reboot run ends.
    assert "InProgress" in {s[0] for s in rebooting} and "Success" not in {s[0] for s in rebooting[:-1]}
    assert len({s[2] for s in rebooting}) == 1 and rebooting[0][2] >= cmd["RequestedDateTime"]
    assert {s[3] for s in seen[:-1]} == {4}
    # It ends only once the agent is back, with the post-reboot compliance already reported.
    assert _agent(ssm, iid)[0] == "Online" and _patch(ssm, iid)["MissingCount"] == 0
    plugin = _invocation(ssm, cmd["CommandId"], iid)["CommandPlugins"][0]
    took = (plugin["ResponseFinishDateTime"] - plugin["ResponseStartDateTime"]).total_seconds()
    assert took >= 0.3 + 1.5 - 0.01  # simulated command_s + reboot_s, as AWS reports them
    assert "exit 194" in plugin["Output"]
    state = _patch(ssm, iid)
    assert (state["MissingCount"], state["InstalledPendingRebootCount"], state["InstalledCount"]) == (0, 0, installed + 4)
    assert state["OperationEndTime"] == plugin["ResponseFinishDateTime"]


def test_install_with_nothing_to_install_does_not_reboot(sim):
    sim.config(command_s=0.2, reboot_s=30)
    iid = sim.ids(missing=0)[0]
    ssm = sim.client("ssm")
    cmd = _send(ssm, [iid], _install())
    seen = _watch(ssm, cmd["CommandId"], iid)
    assert seen[-1][0] == "Success" and {s[1] for s in seen} == {"Online"}


def test_reboot_hang_keeps_the_invocation_in_progress_until_cancelled(sim):
    sim.config(command_s=0.2, reboot_s=0.2, ping_interval_s=0.1)
    iid = sim.ids(faults=["reboot-hang"], missing=3)[0]
    ssm = sim.client("ssm")
    cmd = _send(ssm, [iid], _install())
    assert wait_for(lambda: _agent(ssm, iid)[0] == "ConnectionLost", 5)
    first = _agent(ssm, iid)
    time.sleep(1.0)  # more than five times command_s + reboot_s: a returning agent would have finished by now
    assert _invocation(ssm, cmd["CommandId"], iid)["Status"] == "InProgress"
    assert ssm.list_commands(CommandId=cmd["CommandId"])["Commands"][0]["Status"] == "InProgress"
    assert _agent(ssm, iid) == first  # LastPingDateTime frozen at the last ping before the reboot
    assert _patch(ssm, iid)["MissingCount"] == 3
    ssm.cancel_command(CommandId=cmd["CommandId"], InstanceIds=[iid])
    assert wait_for(lambda: _invocation(ssm, cmd["CommandId"], iid)["Status"] == "Cancelled", 5)
    assert _agent(ssm, iid)[0] == "ConnectionLost" and _patch(ssm, iid)["MissingCount"] == 3


def test_cancel_during_a_reboot_does_not_stop_it_and_reports_nothing(sim):
    sim.config(command_s=0.2, reboot_s=3.0)
    iid = sim.ids(missing=2)[0]
    ssm = sim.client("ssm")
    cmd = _send(ssm, [iid], _install())
    assert wait_for(lambda: _agent(ssm, iid)[0] == "ConnectionLost", 5)
    ssm.cancel_command(CommandId=cmd["CommandId"])
    assert _invocation(ssm, cmd["CommandId"], iid)["Status"] == "Cancelled"
    assert wait_for(lambda: _agent(ssm, iid)[0] == "Online", 5)  # the agent comes back from the reboot
    assert _patch(ssm, iid)["MissingCount"] == 2 and _patch(ssm, iid)["Operation"] == "Scan"


def test_baseline_override_leaves_compliance_untouched_and_prints_the_results(sim):
    sim.config(command_s=0.2, reboot_s=0.2)
    iid = sim.ids(missing=3)[0]
    ssm = sim.client("ssm")
    before = _patch(ssm, iid)
    cmd = _send(ssm, [iid], _install("NoReboot", BaselineOverride=["s3://bucket/override.json"]))
    seen = _watch(ssm, cmd["CommandId"], iid)
    assert seen[-1][0] == "Success"
    after = _patch(ssm, iid)
    for key in ("MissingCount", "InstalledPendingRebootCount", "Operation", "OperationEndTime", "SnapshotId", "InstalledCount"):
        assert after[key] == before[key], key
    output = _invocation(ssm, cmd["CommandId"], iid)["CommandPlugins"][0]["Output"]
    assert output.count(" InstalledPendingReboot\n") == 3 and " Missing\n" not in output
    # The packages really were installed: a later ordinary Scan reports them.
    scan = _send(ssm, [iid], {"Operation": ["Scan"], "SnapshotId": [str(uuid.uuid4())]})
    assert _watch(ssm, scan["CommandId"], iid)[-1][0] == "Success"
    state = _patch(ssm, iid)
    assert (state["MissingCount"], state["InstalledPendingRebootCount"], state["Operation"]) == (0, 3, "Scan")


def test_install_without_override_still_reports_compliance(sim):
    sim.config(command_s=0.2, reboot_s=0.2)
    iid = sim.ids(missing=3)[0]
    ssm = sim.client("ssm")
    cmd = _send(ssm, [iid], _install("NoReboot"))
    assert _watch(ssm, cmd["CommandId"], iid)[-1][0] == "Success"
    state = _patch(ssm, iid)
    assert (state["MissingCount"], state["InstalledPendingRebootCount"], state["Operation"]) == (0, 3, "Install")
    assert "InstalledPendingReboot" not in _invocation(ssm, cmd["CommandId"], iid)["CommandPlugins"][0]["Output"]


def _pings(ssm, iid, distinct=1, reads=5, limit=30.0):
    """(time before the read, time after it, LastPingDateTime) of each read, until `distinct` values and `reads` reads
    were seen; ends by what it saw, not by a duration, so a slow machine only makes it take longer (bounded by limit)."""
    seen, deadline = [], time.time() + limit
    while (len({s[2] for s in seen}) < distinct or len(seen) < reads) and time.time() < deadline:
        before = time.time()
        last = _agent(ssm, iid)[1].timestamp()
        seen.append((before, time.time(), last))
        time.sleep(0.05)
    return seen


def test_last_ping_of_a_healthy_agent_moves_in_steps_of_the_ping_interval(sim):
    sim.config(ping_interval_s=0.5)
    iid = sim.ids()[0]
    ssm = sim.client("ssm")
    seen = _pings(ssm, iid, distinct=3, reads=10)
    pings = sorted({last for _before, _after, last in seen})
    assert len(pings) >= 3, seen
    # It does not advance between pings: the values sit on the agent's 0.5 s grid (LastPingDateTime has ms precision).
    steps = [(b - a) / 0.5 for a, b in zip(pings, pings[1:])]
    assert all(round(k) >= 1 and abs(k - round(k)) < 0.01 for k in steps), pings
    # Never in the future of the read and never more than one interval old.
    assert all(before - 0.5 - 0.002 <= last <= after + 0.002 for before, after, last in seen), seen


def test_last_ping_stays_at_the_agents_start_within_the_default_interval(sim):
    iid = sim.ids()[0]  # default ping_interval_s: 300 s, as the agent's health check on AWS
    ssm = sim.client("ssm")
    seen = _pings(ssm, iid, reads=5)
    assert len({last for _before, _after, last in seen}) == 1 and _agent(ssm, iid)[0] == "Online"


def test_the_agent_pings_when_it_comes_back_from_a_reboot(sim):
    sim.config(command_s=0.2, reboot_s=0.5)  # default ping interval: no periodic ping within the test
    iid = sim.ids(missing=2)[0]
    ssm = sim.client("ssm")
    before = _agent(ssm, iid)[1]
    cmd = _send(ssm, [iid], _install())
    seen = _watch(ssm, cmd["CommandId"], iid)
    assert seen[-1][0] == "Success"
    assert {s[2] for s in seen if s[1] == "ConnectionLost"} == {before}  # no ping since launch before the reboot
    plugin = _invocation(ssm, cmd["CommandId"], iid)["CommandPlugins"][0]
    back = _agent(ssm, iid)[1]  # the start-up ping, at the reboot's end
    assert back > before and back >= cmd["RequestedDateTime"] and back <= plugin["ResponseFinishDateTime"]


GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize("snapshot_id", [
    "{" + GUID + "}", "urn:uuid:" + GUID, GUID.replace("-", ""), GUID + "\n", GUID[:-1] + "g", "snap-guid-1",
])
def test_send_command_refuses_a_snapshot_id_outside_the_guid_pattern(sim, snapshot_id):
    iid = sim.ids()[0]
    ssm = sim.client("ssm")
    with pytest.raises(ClientError) as err:
        _send(ssm, [iid], dict(_install(), SnapshotId=[snapshot_id]))
    assert err.value.response["Error"]["Code"] == "InvalidParameters"
    assert ssm.list_commands(InstanceId=iid)["Commands"] == []


@pytest.mark.parametrize("snapshot_id", [GUID, GUID.upper(), ""])
def test_send_command_accepts_the_guid_pattern_and_empty(sim, snapshot_id):
    iid = sim.ids()[0]
    cmd = _send(sim.client("ssm"), [iid], dict(_install(), SnapshotId=[snapshot_id]))
    assert cmd["Parameters"]["SnapshotId"] == [snapshot_id]
