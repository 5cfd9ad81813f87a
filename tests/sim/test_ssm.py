"""SSM Run Command, managed-instance inventory and patch-state behaviour."""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from .conftest import wait_for

SNAPSHOT = "5d0a6d2e-3c43-4a65-9b1e-6f1c4a1a2b3c"
INSTALL = {"Operation": ["Install"], "RebootOption": ["RebootIfNeeded"], "SnapshotId": [SNAPSHOT]}
TERMINAL = ("Success", "Failed", "TimedOut", "Cancelled")


def _send(ssm, ids, doc="AWS-RunPatchBaseline", params=None, step="patch", **kwargs):
    params = params if params is not None else (INSTALL if "Patch" in doc else {"commands": ["true"]})
    return ssm.send_command(InstanceIds=ids, DocumentName=doc, Parameters=params, Comment=f"cms-patching run1 {step}", **kwargs)["Command"]["CommandId"]


def _invocations(ssm, cmd_id):
    out = []
    for page in ssm.get_paginator("list_command_invocations").paginate(CommandId=cmd_id, Details=True):
        out += page["CommandInvocations"]
    return {i["InstanceId"]: i for i in out}


def _wait_done(ssm, cmd_id, timeout=10):
    return wait_for(lambda: (inv := _invocations(ssm, cmd_id)) and all(i["Status"] in TERMINAL for i in inv.values()) and inv, timeout)


def _ping(ssm, iid):
    info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])["InstanceInformationList"]
    return info[0]["PingStatus"] if info else None


def _patch(ssm, iid):
    return ssm.describe_instance_patch_states(InstanceIds=[iid])["InstancePatchStates"][0]


def test_instance_information_pagination_and_fields(sim):
    ids = sim.ids(count=12, platform="windows")
    ssm = sim.client("ssm")
    seen = []
    pages = 0
    for page in ssm.get_paginator("describe_instance_information").paginate(
            InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": ids}], PaginationConfig={"PageSize": 5}):
        pages += 1
        seen += page["InstanceInformationList"]
    assert pages == 3 and sorted(i["InstanceId"] for i in seen) == sorted(ids)
    one = seen[0]
    assert one["PingStatus"] == "Online" and one["PlatformType"] == "Windows" and one["ResourceType"] == "EC2Instance"
    assert one["PlatformName"].startswith("Microsoft Windows Server") and one["AgentVersion"] and one["LastPingDateTime"]


def test_instance_information_limits_and_ping_states(sim):
    ssm = sim.client("ssm")
    fake = [f"i-{n:017x}" for n in range(51)]
    for kwargs in ({"Filters": [{"Key": "InstanceIds", "Values": fake}]},
                   {"InstanceInformationFilterList": [{"key": "InstanceIds", "valueSet": fake}]}):
        with pytest.raises(ClientError) as err:
            ssm.describe_instance_information(**kwargs)
        assert err.value.response["Error"]["Code"] == "ValidationException"
    offline = sim.ids(faults=["ssm-offline"])[0]
    stopped = sim.ids(state="stopped")[0]
    unmanaged = sim.ids(faults=["ssm-unmanaged"])[0]
    assert _ping(ssm, offline) == "ConnectionLost"
    assert _ping(ssm, stopped) == "ConnectionLost"
    assert _ping(ssm, unmanaged) is None
    lost = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [offline, stopped]},
                                                      {"Key": "PingStatus", "Values": ["Online"]}])
    assert lost["InstanceInformationList"] == []


def test_send_command_validation(sim):
    ssm = sim.client("ssm")
    ids = sim.ids(count=2)
    with pytest.raises(ClientError) as err:
        _send(ssm, [f"i-{n:017x}" for n in range(51)])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as err:
        _send(ssm, ids, doc="AWS-ConfigureAWSPackage", params={})
    assert err.value.response["Error"]["Code"] == "InvalidDocument"
    with pytest.raises(ClientError) as err:
        _send(ssm, ids + ["i-0123456789abcdef0"])
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
    elsewhere = sim.ids(region="eu-west-1")
    with pytest.raises(ClientError) as err:
        _send(ssm, elsewhere)
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"


def test_send_command_targets_only_given_instances(sim):
    ids = sim.ids(count=3)
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, ids[:1], doc="AWS-RunShellScript")
    assert list(_invocations(ssm, cmd_id)) == ids[:1]
    cmd = ssm.list_commands(CommandId=cmd_id)["Commands"][0]
    assert cmd["TargetCount"] == 1 and cmd["Comment"] == "cms-patching run1 patch"


def test_invocation_goes_pending_inprogress_success(sim):
    sim.config(command_s=0.6)
    iid = sim.ids()[0]
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, [iid], doc="AWS-RunShellScript", step="precheck", TimeoutSeconds=600)
    seen = []
    deadline = time.time() + 5
    while time.time() < deadline:
        status = ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid)["Status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in TERMINAL:
            break
        time.sleep(0.03)
    assert seen == ["Pending", "InProgress", "Success"]
    inv = ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid)
    assert inv["ResponseCode"] == 0 and inv["StandardOutputContent"].strip() == "ok" and inv["StatusDetails"] == "Success"


@pytest.mark.parametrize("fault,status,details,ran", [
    ("patch-fail", "Failed", "Failed", True),
    ("patch-timeout", "TimedOut", "Execution Timed Out", True),
    ("undeliverable", "Failed", "Undeliverable", False),
    ("delivery-timeout", "TimedOut", "Delivery Timed Out", False),
])
def test_patch_faults(sim, fault, status, details, ran):
    iid = sim.ids(faults=[fault])[0]
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, [iid])
    inv = _wait_done(ssm, cmd_id)[iid]
    assert (inv["Status"], inv["StatusDetails"]) == (status, details)
    plugin = inv["CommandPlugins"][0]
    assert ("ResponseStartDateTime" in plugin) == ran


@pytest.mark.parametrize("fault,step", [("precheck-fail", "precheck"), ("restart-fail", "restart"), ("health-fail", "health")])
def test_shell_step_faults_follow_comment(sim, fault, step):
    iid = sim.ids(faults=[fault])[0]
    ssm = sim.client("ssm")
    failing = _send(ssm, [iid], doc="AWS-RunShellScript", step=step)
    other = _send(ssm, [iid], doc="AWS-RunPowerShellScript", step="other")
    _wait_done(ssm, failing)
    _wait_done(ssm, other)
    bad = ssm.get_command_invocation(CommandId=failing, InstanceId=iid)
    good = ssm.get_command_invocation(CommandId=other, InstanceId=iid)
    assert (bad["Status"], bad["ResponseCode"]) == ("Failed", 1) and bad["StandardErrorContent"]
    assert (good["Status"], good["ResponseCode"]) == ("Success", 0)


def test_max_errors_terminates_unstarted_and_concurrency_limits(sim):
    sim.config(command_s=0.4)
    bad = sim.ids(faults=["patch-fail"])[0]
    good = sim.ids(count=2)
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, [bad] + good, MaxConcurrency="1", MaxErrors="0")
    time.sleep(0.15)
    states = {k: v["Status"] for k, v in _invocations(ssm, cmd_id).items()}
    assert states[good[0]] == "Pending" and states[good[1]] == "Pending"  # one at a time
    invs = _wait_done(ssm, cmd_id)
    assert invs[bad]["Status"] == "Failed"
    assert [invs[g]["StatusDetails"] for g in good] == ["Terminated", "Terminated"]
    assert ssm.list_commands(CommandId=cmd_id)["Commands"][0]["Status"] == "Failed"


def test_cancel_command(sim):
    sim.config(command_s=3)
    iid = sim.ids()[0]
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, [iid])
    ssm.cancel_command(CommandId=cmd_id)
    inv = ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid)
    assert inv["Status"] == "Cancelled"
    assert _patch(ssm, iid)["MissingCount"] == 3


def test_list_commands_and_invocations_pagination(sim):
    ids = sim.ids(count=7)
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, ids, doc="AWS-RunShellScript")
    first = ssm.list_command_invocations(CommandId=cmd_id, MaxResults=5)
    assert len(first["CommandInvocations"]) == 5 and first["NextToken"]
    assert len(_invocations(ssm, cmd_id)) == 7
    mine = ssm.list_commands(Filters=[{"key": "DocumentName", "value": "AWS-RunShellScript"}])["Commands"]
    assert cmd_id in [c["CommandId"] for c in mine]
    none = ssm.list_commands(CommandId=cmd_id, Filters=[{"key": "DocumentName", "value": "AWS-RunPatchBaseline"}])["Commands"]
    assert none == []


def test_list_commands_filters_by_invocation_time_and_stage(sim):
    """InvokedAfter and ExecutionStage: a caller polls only its own still-running commands with one call."""
    sim.config(command_s=1.0)
    ssm = sim.client("ssm")
    ids = sim.ids(count=2)
    old = _send(ssm, ids[:1], doc="AWS-RunShellScript")
    time.sleep(1.1)
    cmd = ssm.send_command(InstanceIds=ids[1:], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]},
                           Comment="cms-patching run1 restart")["Command"]
    since = cmd["RequestedDateTime"].strftime("%Y-%m-%dT%H:%M:%SZ")
    executing = [{"key": "InvokedAfter", "value": since}, {"key": "ExecutionStage", "value": "Executing"}]
    listed = [c["CommandId"] for c in ssm.list_commands(Filters=executing)["Commands"]]
    assert cmd["CommandId"] in listed and old not in listed
    _wait_done(ssm, cmd["CommandId"])
    assert cmd["CommandId"] not in [c["CommandId"] for c in ssm.list_commands(Filters=executing)["Commands"]]
    with pytest.raises(ClientError, match="InvalidFilterKey"):
        ssm.list_commands(Filters=[{"key": "Comment", "value": "x"}])


def test_patch_state_baseline_and_limit(sim):
    iid = sim.ids(missing=5, patch_group="web")[0]
    ssm = sim.client("ssm")
    st = _patch(ssm, iid)
    assert (st["MissingCount"], st["FailedCount"], st["InstalledPendingRebootCount"], st["PatchGroup"]) == (5, 0, 0, "web")
    assert st["InstalledCount"] > 0 and st["CriticalNonCompliantCount"] > 0 and st["Operation"] == "Scan"
    with pytest.raises(ClientError) as err:
        ssm.describe_instance_patch_states(InstanceIds=[f"i-{n:017x}" for n in range(51)])
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_install_with_reboot_updates_state_and_reboots(sim):
    sim.config(command_s=0.2, reboot_s=0.8)
    iid = sim.ids(missing=4)[0]
    ssm = sim.client("ssm")
    before = _patch(ssm, iid)["InstalledCount"]
    cmd_id = _send(ssm, [iid])
    _wait_done(ssm, cmd_id)
    assert _ping(ssm, iid) == "Online"  # the reboot happened inside the command (tests/sim/test_ssm_reboots.py)
    st = _patch(ssm, iid)
    assert (st["MissingCount"], st["FailedCount"], st["InstalledPendingRebootCount"]) == (0, 0, 0)
    assert st["InstalledCount"] == before + 4 and st["Operation"] == "Install" and st["SnapshotId"] == SNAPSHOT


def test_install_no_reboot_leaves_pending_reboot(sim):
    iid = sim.ids(missing=2)[0]
    ssm = sim.client("ssm")
    cmd_id = _send(ssm, [iid], params={"Operation": ["Install"], "RebootOption": ["NoReboot"]})
    _wait_done(ssm, cmd_id)
    assert _ping(ssm, iid) == "Online"
    st = _patch(ssm, iid)
    assert (st["MissingCount"], st["InstalledPendingRebootCount"]) == (0, 2)


def test_failed_patch_reports_failed_count(sim):
    iid = sim.ids(faults=["patch-fail"])[0]
    ssm = sim.client("ssm")
    _wait_done(ssm, _send(ssm, [iid]))
    assert _patch(ssm, iid)["FailedCount"] > 0


def test_reboot_hang_until_root_volume_replaced(sim):
    sim.config(command_s=0.2, reboot_s=0.2, replace_root_s=0.3, image_pending_s=0)
    iid = sim.ids(faults=["reboot-hang"], missing=3)[0]
    ssm = sim.client("ssm")
    ec2 = sim.client("ec2")
    image_id = ec2.create_image(InstanceId=iid, Name=uuid.uuid4().hex, NoReboot=True)["ImageId"]
    cmd_id = _send(ssm, [iid])
    assert wait_for(lambda: _ping(ssm, iid) == "ConnectionLost", 5)
    assert _invocations(ssm, cmd_id)[iid]["Status"] == "InProgress"  # never ends on its own (test_ssm_reboots.py)
    ssm.cancel_command(CommandId=cmd_id)
    ec2.create_replace_root_volume_task(InstanceId=iid, ImageId=image_id)
    assert wait_for(lambda: _ping(ssm, iid) == "Online", 5)
    assert _patch(ssm, iid)["MissingCount"] == 3
