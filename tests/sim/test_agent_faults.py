"""Agent faults (agent-stuck, agent-dead), EC2 reboot/stop/start as the SSM model sees them, and disk-full, with plain boto3.

AWS facts followed (see the simulator's comments): the agent runs the document again after a reboot inside a command,
so a command whose agent is brought back can still end (SSM user guide, "Handling reboots when running commands");
RebootInstances ignores instances that are not running; a stop goes through `stopping` (stop_s) before `stopped`, and
StartInstances meanwhile is IncorrectInstanceState; an instance store-backed instance cannot be stopped
(UnsupportedOperation); a stop releases an auto-assigned public IPv4 address (EC2 user guide, "Amazon EC2 instance IP
addressing").
"""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from .conftest import wait_for

REBOOT_S = 0.6
# The collection's Linux free-space pre-check (roles/patching/vars/main.yml), rendered with patching_min_free_mb 1024.
PRECHECK = ("for fs in / /var; do avail=$(df -Pm \"$fs\" | awk 'NR==2 {print $4}'); if [ \"$avail\" -lt 1024 ]; then "
            "echo \"only ${avail} MB free on $fs, need 1024\"; exit 1; fi; done")


def _ping(ssm, iid):
    return ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])["InstanceInformationList"][0]["PingStatus"]


def _state(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def _status(ssm, cmd_id, iid):
    return ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid)["Status"]


def _install(ssm, iid):
    return ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunPatchBaseline", Comment="cms-patching run1 patch",
                            Parameters={"Operation": ["Install"], "RebootOption": ["RebootIfNeeded"],
                                        "SnapshotId": [str(uuid.uuid4())]})["Command"]["CommandId"]


def _stuck_after_reboot(sim, fault):
    """An instance with `fault` whose patch command has rebooted it; returns (ssm, ec2, instance id, command id) once the
    agent has stayed away for well past the reboot."""
    sim.config(command_s=0.2, reboot_s=REBOOT_S, ping_interval_s=0.1)
    iid = sim.ids(missing=2, faults=[fault])[0]
    ssm, ec2 = sim.client("ssm"), sim.client("ec2")
    assert _ping(ssm, iid) == "Online"
    cmd_id = _install(ssm, iid)
    assert wait_for(lambda: _ping(ssm, iid) == "ConnectionLost", timeout=10)
    time.sleep(3 * REBOOT_S)  # three simulated reboots long: an agent that could come back by itself would have
    assert (_ping(ssm, iid), _status(ssm, cmd_id, iid)) == ("ConnectionLost", "InProgress")
    return ssm, ec2, iid, cmd_id


def test_ec2_reboot_is_a_reboot_window(sim):
    sim.config(reboot_s=REBOOT_S, ping_interval_s=0.1)
    iid = sim.ids()[0]
    ssm, ec2 = sim.client("ssm"), sim.client("ec2")
    assert _ping(ssm, iid) == "Online"
    ec2.reboot_instances(InstanceIds=[iid])
    assert _ping(ssm, iid) == "ConnectionLost"
    assert wait_for(lambda: _ping(ssm, iid) == "Online", timeout=10)


def test_agent_stuck_comes_back_after_an_ec2_reboot_and_the_command_finishes(sim):
    ssm, ec2, iid, cmd_id = _stuck_after_reboot(sim, "agent-stuck")
    assert ssm.describe_instance_patch_states(InstanceIds=[iid])["InstancePatchStates"][0]["MissingCount"] == 2
    ec2.reboot_instances(InstanceIds=[iid])
    assert _ping(ssm, iid) == "ConnectionLost"  # booting
    assert wait_for(lambda: _status(ssm, cmd_id, iid) == "Success", timeout=10)
    assert _ping(ssm, iid) == "Online"
    assert ssm.describe_instance_patch_states(InstanceIds=[iid])["InstancePatchStates"][0]["MissingCount"] == 0


def test_agent_stuck_cancelled_command_does_not_resume(sim):
    ssm, ec2, iid, cmd_id = _stuck_after_reboot(sim, "agent-stuck")
    ssm.cancel_command(CommandId=cmd_id)
    assert wait_for(lambda: _status(ssm, cmd_id, iid) == "Cancelled", timeout=10)
    ec2.reboot_instances(InstanceIds=[iid])
    assert wait_for(lambda: _ping(ssm, iid) == "Online", timeout=10)
    assert _status(ssm, cmd_id, iid) == "Cancelled"
    assert ssm.describe_instance_patch_states(InstanceIds=[iid])["InstancePatchStates"][0]["MissingCount"] == 2


def test_agent_dead_needs_a_stop_and_start(sim):
    ssm, ec2, iid, cmd_id = _stuck_after_reboot(sim, "agent-dead")
    ec2.reboot_instances(InstanceIds=[iid])
    time.sleep(3 * REBOOT_S)
    assert (_ping(ssm, iid), _status(ssm, cmd_id, iid)) == ("ConnectionLost", "InProgress")
    ec2.stop_instances(InstanceIds=[iid])
    assert wait_for(lambda: _state(ec2, iid) == "stopped", timeout=10)
    assert (_ping(ssm, iid), _status(ssm, cmd_id, iid)) == ("ConnectionLost", "InProgress")
    ec2.start_instances(InstanceIds=[iid])
    assert wait_for(lambda: _status(ssm, cmd_id, iid) == "Success", timeout=10)
    assert _ping(ssm, iid) == "Online"
    assert ssm.describe_instance_patch_states(InstanceIds=[iid])["InstancePatchStates"][0]["MissingCount"] == 0


def test_stop_refused_for_an_instance_store_root(sim):
    iid = sim.ids(root_device="instance-store")[0]
    ec2 = sim.client("ec2", retries=1)
    with pytest.raises(ClientError) as err:
        ec2.stop_instances(InstanceIds=[iid])
    assert err.value.response["Error"]["Code"] == "UnsupportedOperation"
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_stop_goes_through_stopping_and_start_waits_for_stopped(sim):
    """EC2 user guide, "Amazon EC2 instance state changes": running -> stopping -> stopped; EC2 API reference, "Error
    codes": IncorrectInstanceState for StartInstances of an instance that is not stopped yet."""
    sim.config(stop_s=60.0)
    slow, other = sim.ids(count=2)
    ec2 = sim.client("ec2", retries=1)
    answer = ec2.stop_instances(InstanceIds=[slow])["StoppingInstances"][0]
    assert (answer["PreviousState"]["Name"], answer["CurrentState"]["Name"]) == ("running", "stopping")
    inst = ec2.describe_instances(InstanceIds=[slow])["Reservations"][0]["Instances"][0]
    assert (inst["State"]["Name"], inst["State"]["Code"]) == ("stopping", 64)
    with pytest.raises(ClientError) as err:
        ec2.start_instances(InstanceIds=[slow, other])
    assert err.value.response["Error"]["Code"] == "IncorrectInstanceState" and slow in err.value.response["Error"]["Message"]
    assert ec2.stop_instances(InstanceIds=[slow])["StoppingInstances"][0]["PreviousState"]["Name"] == "stopping"
    assert (_state(ec2, slow), _state(ec2, other)) == ("stopping", "running")  # refused whole: nothing started or changed
    listed = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["stopping"]}, {"Name": "instance-id", "Values": [slow, other]}])
    assert [i["InstanceId"] for r in listed["Reservations"] for i in r["Instances"]] == [slow]

    sim.config(stop_s=0.3)
    ec2.stop_instances(InstanceIds=[other])
    assert _state(ec2, other) == "stopping"
    assert wait_for(lambda: _state(ec2, other) == "stopped", timeout=10)
    assert ec2.start_instances(InstanceIds=[other])["StartingInstances"][0]["PreviousState"]["Name"] == "stopped"
    assert _state(ec2, other) == "running"
    assert _state(ec2, slow) == "stopping"  # its stop_s was fixed when it was stopped


def test_reboot_leaves_a_stopped_instance_stopped(sim):
    iid = sim.ids()[0]
    ec2 = sim.client("ec2")
    ec2.stop_instances(InstanceIds=[iid])
    assert wait_for(lambda: _state(ec2, iid) == "stopped", timeout=10)
    ec2.reboot_instances(InstanceIds=[iid])
    assert _state(ec2, iid) == "stopped"
    assert _ping(sim.client("ssm"), iid) == "ConnectionLost"


def test_stop_start_changes_an_auto_assigned_public_ip(sim):
    ec2 = sim.client("ec2")
    iid = sim.ids()[0]
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    launched = ec2.run_instances(ImageId=inst["ImageId"], MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "AssociatePublicIpAddress": True, "SubnetId": inst["SubnetId"]}])
    new_id = launched["Instances"][0]["InstanceId"]
    before = ec2.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0].get("PublicIpAddress")
    assert before
    ec2.stop_instances(InstanceIds=[new_id])
    assert not ec2.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0].get("PublicIpAddress")
    assert wait_for(lambda: _state(ec2, new_id) == "stopped", timeout=10)
    ec2.start_instances(InstanceIds=[new_id])
    after = ec2.describe_instances(InstanceIds=[new_id])["Reservations"][0]["Instances"][0].get("PublicIpAddress")
    assert after and after != before


def _run(ssm, iid, document, commands, step="precheck"):
    cmd_id = ssm.send_command(InstanceIds=[iid], DocumentName=document, Comment=f"cms-patching run1 {step}",
                              Parameters={"commands": commands})["Command"]["CommandId"]
    assert wait_for(lambda: _status(ssm, cmd_id, iid) not in ("Pending", "InProgress"), timeout=10)
    return ssm.get_command_invocation(CommandId=cmd_id, InstanceId=iid)


def test_disk_full_fails_free_space_checks_and_patching(sim):
    sim.config(command_s=0.1, reboot_s=0.1)
    full, healthy = sim.ids(faults=["disk-full"])[0], sim.ids()[0]
    ssm = sim.client("ssm")
    out = _run(ssm, full, "AWS-RunShellScript", [PRECHECK], step="preflight")
    assert (out["Status"], out["ResponseCode"]) == ("Failed", 1)
    assert "only 12 MB free on /, need 1024" in out["StandardOutputContent"]
    assert _run(ssm, healthy, "AWS-RunShellScript", [PRECHECK])["Status"] == "Success"
    # A check whose minimum the disk still meets passes, and commands that do not look at free space are unaffected.
    assert _run(ssm, full, "AWS-RunShellScript", [PRECHECK.replace("1024", "10")])["Status"] == "Success"
    assert _run(ssm, full, "AWS-RunShellScript", ["systemctl restart nginx"], step="restart")["Status"] == "Success"
    win = sim.ids(faults=["disk-full"], platform="windows")[0]
    check = "$free = [math]::Floor((Get-PSDrive -Name C).Free / 1MB); if ($free -lt 2048) { exit 1 }"
    out = _run(ssm, win, "AWS-RunPowerShellScript", [check])
    assert (out["Status"], "C:" in out["StandardOutputContent"]) == ("Failed", True)
    cmd_id = _install(ssm, full)
    assert wait_for(lambda: _status(ssm, cmd_id, full) == "Failed", timeout=10)
    inv = ssm.get_command_invocation(CommandId=cmd_id, InstanceId=full)
    assert inv["ResponseCode"] == 1 and "No space left on device" in inv["StandardErrorContent"]
    assert ssm.describe_instance_patch_states(InstanceIds=[full])["InstancePatchStates"][0]["InstalledCount"] == 100


def _last_ping(ssm, iid):
    return ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [iid]}])["InstanceInformationList"][0]["LastPingDateTime"]


def test_a_hung_agent_reports_no_ping_after_the_reboot_it_did_not_come_back_from(sim):
    """LastPingDateTime is when the agent last pinged (botocore ssm model): an EC2 reboot that does not bring a dead
    agent back must not make it look as if it had pinged until that reboot."""
    ssm, ec2, iid, _cmd_id = _stuck_after_reboot(sim, "agent-dead")
    before = _last_ping(ssm, iid)
    ec2.reboot_instances(InstanceIds=[iid])
    time.sleep(3 * REBOOT_S)
    assert (_ping(ssm, iid), _last_ping(ssm, iid)) == ("ConnectionLost", before)
