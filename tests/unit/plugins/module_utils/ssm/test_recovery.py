"""AgentRecovery and its rules, with a scripted fake EC2 (the integration tests use the simulator's agent faults)."""

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.ssm.recovery import AgentRecovery, stop_start_blocker, validate_actions

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


class FakeEc2:
    """RebootInstances / StopInstances / StartInstances / DescribeInstances / DescribeInstanceTypes, recorded."""

    def __init__(self, instances, refuse=()):
        self.instances = instances  # id -> dict(state, type, root, tags)
        self.refuse = set(refuse)   # ids a power call refuses (IncorrectInstanceState)
        self.calls = []

    def _power(self, name, ids, state=None):
        self.calls.append((name, list(ids)))
        bad = [i for i in ids if i in self.refuse]
        if bad:
            raise ClientError({"Error": {"Code": "IncorrectInstanceState", "Message": f"{bad[0]} is not in a valid state"}}, name)
        for iid in ids:
            if state:
                self.instances[iid]["state"] = state

    def reboot_instances(self, InstanceIds):  # noqa: N803 (boto3's names)
        self._power("RebootInstances", InstanceIds)

    def stop_instances(self, InstanceIds):  # noqa: N803
        self._power("StopInstances", InstanceIds, "stopping")

    def start_instances(self, InstanceIds):  # noqa: N803
        self._power("StartInstances", InstanceIds, "pending")

    def describe_instance_types(self, InstanceTypes):  # noqa: N803
        self.calls.append(("DescribeInstanceTypes", list(InstanceTypes)))
        return {"InstanceTypes": [{"InstanceType": t, "InstanceStorageSupported": t.startswith("m5d")} for t in InstanceTypes]}

    def get_paginator(self, operation):
        assert operation == "describe_instances"
        fake = self

        class Pages:
            def paginate(self, Filters, **_kw):  # noqa: N803
                ids = next(f["Values"] for f in Filters if f["Name"] == "instance-id")
                fake.calls.append(("DescribeInstances", list(ids)))
                return [{"Reservations": [{"OwnerId": "111111111111", "Instances": [
                    {"InstanceId": i, "State": {"Name": fake.instances[i]["state"]}, "InstanceType": fake.instances[i]["type"],
                     "RootDeviceType": fake.instances[i]["root"], "Tags": [{"Key": k, "Value": v} for k, v in fake.instances[i]["tags"].items()]}
                    for i in ids if i in fake.instances]}]}]
        return Pages()


def instance(state="running", itype="t3.micro", root="ebs", tags=None):
    return dict(state=state, type=itype, root=root, tags=tags or {})


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def recovery(ec2, actions, clock=None):
    return AgentRecovery(ec2, actions, timeout=10, clock=clock or Clock(), now=lambda: T0)


def test_validate_actions():
    assert validate_actions(None) == ["reboot"]
    assert validate_actions([]) == []
    assert validate_actions(["stop_start", "reboot"]) == ["stop_start", "reboot"]
    for bad, text in ((["hibernate"], "unknown action(s) 'hibernate'"), (["reboot", "reboot"], "twice"), ("reboot", "must be a list")):
        with pytest.raises(PatchingError, match=text.replace("(", r"\(").replace(")", r"\)")):
            validate_actions(bad)


def test_stop_start_blocker():
    assert stop_start_blocker(dict(tags={}, root_device_type="ebs"), False) is None
    assert stop_start_blocker(dict(tags={"aws:autoscaling:groupName": "web"}, root_device_type="ebs"), False) == "auto_scaling_member"
    assert stop_start_blocker(dict(tags={}, root_device_type="instance-store"), False) == "instance_store"
    assert stop_start_blocker(dict(tags={}, root_device_type="ebs"), True) == "instance_store"  # NVMe instance store
    assert stop_start_blocker(dict(tags={}, root_device_type="ebs"), None) == "instance_type_unknown"
    assert stop_start_blocker(None, False) == "instance_not_found"


def test_reboot_is_one_batched_call_and_an_agent_seen_after_it_is_back():
    ec2 = FakeEc2({"i-1": instance(), "i-2": instance()})
    rec = recovery(ec2, ["reboot"])
    assert rec.escalate(["i-1", "i-2"], T0) == []  # nothing given up yet: each got its reboot
    assert ec2.calls == [("RebootInstances", ["i-1", "i-2"])]
    assert rec.since("i-1") == T0
    rec.seen("i-1", T0 - timedelta(seconds=5))  # a ping from before the reboot says nothing
    rec.seen("i-1", T0 + timedelta(seconds=5), "ConnectionLost")  # nor a later time while the agent is not Online
    assert rec.attempts["i-1"][0]["result"] is None
    rec.seen("i-1", T0 + timedelta(seconds=5))
    assert [(a["action"], a["result"]) for a in rec.attempts["i-1"]] == [("reboot", "agent_back")]
    # i-2 still silent past the timeout: no action left, given up, with the note for the cancel message
    assert rec.escalate(["i-2"], T0 + timedelta(seconds=11)) == ["i-2"]
    assert rec.note("i-2") == "recovery: reboot agent_not_back"


def test_stop_start_waits_for_stopped_then_starts_and_skips_what_it_must_not_touch():
    clock = Clock()
    ec2 = FakeEc2({"i-1": instance(), "i-asg": instance(tags={"aws:autoscaling:groupName": "web"}),
                   "i-nvme": instance(itype="m5d.large")})
    rec = recovery(ec2, ["stop_start", "reboot"], clock)
    assert rec.escalate(["i-1", "i-asg", "i-nvme"], T0) == []
    # the skipped ones went straight on to the next action (reboot), in one call
    assert ("StopInstances", ["i-1"]) in ec2.calls and ("RebootInstances", ["i-asg", "i-nvme"]) in ec2.calls
    assert [(a["action"], a["result"], a["reason"]) for a in rec.attempts["i-asg"]][0] == ("stop_start", "skipped", "auto_scaling_member")
    assert rec.attempts["i-nvme"][0]["reason"] == "instance_store"
    assert rec.busy("i-1") and rec.since("i-1") is None
    rec.tick(T0)  # still stopping: no start yet
    assert not any(c[0] == "StartInstances" for c in ec2.calls)
    ec2.instances["i-1"]["state"] = "stopped"
    clock.t = 3
    rec.tick(T0 + timedelta(seconds=3))
    assert ("StartInstances", ["i-1"]) in ec2.calls and not rec.busy("i-1")
    assert rec.since("i-1") == T0 + timedelta(seconds=3)
    rec.finish({"i-1": "success", "i-asg": "timed_out", "i-nvme": "timed_out"})
    assert rec.attempts["i-1"][-1]["result"] == "agent_back"
    assert rec.attempts["i-asg"][-1]["result"] == "unresolved"


def test_a_refused_batch_is_retried_id_by_id_and_a_stop_that_never_ends_gives_up():
    clock = Clock()
    ec2 = FakeEc2({"i-1": instance(), "i-2": instance()}, refuse={"i-2"})
    rec = recovery(ec2, ["stop_start"], clock)
    assert rec.escalate(["i-1", "i-2"], T0) == ["i-2"]  # refused, nothing left to try
    assert rec.attempts["i-2"][0]["result"] == "failed" and "IncorrectInstanceState" in rec.attempts["i-2"][0]["error"]
    assert ("StopInstances", ["i-1"]) in ec2.calls
    clock.t = 11
    rec.tick(T0)
    assert rec.attempts["i-1"][0]["result"] == "not_stopped" and not rec.busy("i-1")
