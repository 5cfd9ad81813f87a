"""Discovery's topology reader against the shared read-only ELBv2 / Auto Scaling fakes: batched, per region, no
call per instance, unused targets counted nowhere, and the scan's asg modes."""

import pytest
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils import topology as TOPO
from ansible_collections.cms.patching.plugins.module_utils.scan import build_instance, ineligibility_reasons
from ansible_collections.cms.patching.tests.unit.fakes.topology import FakeAsgReader, FakeElbReader


def record(iid, zone="us-east-1a", asg=None):
    tags = {"aws:autoscaling:groupName": asg} if asg else {}
    return {"instance_id": iid, "availability_zone": zone, "tags": tags, "state": "running", "name": iid, "patch_group": None,
            "account_id": "111111111111", "root_device_type": "ebs", "root_device_name": "/dev/xvda", "volumes": [],
            "ec2_platform": "linux"}


@pytest.fixture
def world():
    elb, asg = FakeElbReader(), FakeAsgReader()
    lb_ab = elb.add_lb("web", ["us-east-1a", "us-east-1b"])
    web = elb.add_group("web", [("i-1", 80, "healthy"), ("i-2", 80, "unhealthy", "Target.FailedHealthChecks"),
                                ("i-3", 80, "healthy"), ("i-other", 80, "healthy"), ("i-c", 80, "healthy")],
                        lbs=[lb_ab], delay=30)
    api = elb.add_group("api", [("i-1", 8080, "healthy"), ("i-1", 8081, "draining", "Target.DeregistrationInProgress")], lbs=[lb_ab])
    lonely = elb.add_group("lonely", [("i-3", 80, "healthy")])  # no load balancer
    elb.add_group("ips", [("10.0.0.1", 80, "healthy")], lbs=[lb_ab], target_type="ip")
    asg_arn = asg.add_group("web-asg", ["i-3", ("i-4", "Standby", "Healthy")], min_size=1, desired=1)
    records = [record("i-1"), record("i-2", "us-east-1b"), record("i-3", asg="web-asg"), record("i-4", asg="web-asg"),
               record("i-c", "us-east-1c"), record("i-5")]
    return elb, asg, records, {"web": web, "api": api, "lonely": lonely, "asg": asg_arn}


def test_targets_ports_health_and_delay_per_instance(world):
    elb, asg, records, arns = world
    per_instance, summary = TOPO.read_topology(elb, asg, records)
    assert per_instance["i-1"]["zone"] == "us-east-1a"
    assert sorted((t["name"], t["port"], t["state"]) for t in per_instance["i-1"]["target_groups"]) == [
        ("api", 8080, "healthy"), ("api", 8081, "draining"), ("web", 80, "healthy")]
    web1 = next(t for t in per_instance["i-1"]["target_groups"] if t["name"] == "web")
    assert web1 == {"arn": arns["web"], "name": "web", "port": 80, "state": "healthy", "reason": None, "deregistration_delay": 30}
    assert per_instance["i-2"]["target_groups"][0]["reason"] == "Target.FailedHealthChecks"
    assert per_instance["i-5"] == {"zone": "us-east-1a", "target_groups": [], "asg_name": None, "asg": None}
    # Members count every target that is not unused (scanned or not); the draining one is a member, not healthy.
    assert summary["target_groups"][arns["web"]] == {"name": "web", "members": 4, "healthy": 3}
    assert summary["target_groups"][arns["api"]] == {"name": "api", "members": 2, "healthy": 1}


def test_no_load_balancer_or_a_zone_not_enabled_is_unused_and_counts_nowhere(world):
    elb, asg, records, arns = world
    per_instance, summary = TOPO.read_topology(elb, asg, records)
    lonely = next(t for t in per_instance["i-3"]["target_groups"] if t["name"] == "lonely")
    assert (lonely["state"], lonely["reason"]) == ("unused", "Target.NotInUse")
    assert summary["target_groups"][arns["lonely"]]["members"] == 0
    # i-c reports healthy, but its zone us-east-1c is not enabled on the web load balancer.
    assert [(t["state"], t["reason"]) for t in per_instance["i-c"]["target_groups"]] == [("unused", "Target.NotInUse")]


def test_auto_scaling_groups_by_name(world):
    elb, asg, records, arns = world
    per_instance, summary = TOPO.read_topology(elb, asg, records)
    assert per_instance["i-3"]["asg_name"] == "web-asg"
    assert per_instance["i-3"]["asg"] == {"arn": arns["asg"], "name": "web-asg", "min_size": 1, "max_size": 2, "desired_capacity": 1,
                                          "lifecycle_state": "InService", "health_status": "Healthy"}
    assert per_instance["i-4"]["asg"]["lifecycle_state"] == "Standby"
    expected = {"name": "web-asg", "members": 2, "healthy": 1, "min_size": 1, "max_size": 2, "desired_capacity": 1}
    assert summary["auto_scaling_groups"][arns["asg"]] == expected


def test_calls_are_per_region_and_group_never_per_instance(world):
    elb, asg, records, _arns = world
    TOPO.read_topology(elb, asg, records)
    # 3 instance target groups (the ip one is skipped); attributes only of groups holding a scanned instance's target,
    # in use or not (web, api, lonely); one DescribeAutoScalingGroups for one name.
    assert elb.calls == {"DescribeTargetGroups": 1, "DescribeLoadBalancers": 1, "DescribeTargetHealth": 3, "DescribeTargetGroupAttributes": 3}
    assert asg.calls == {"DescribeAutoScalingGroups": 1}


def test_many_groups_page_and_asg_names_go_fifty_per_call():
    elb, asg = FakeElbReader(), FakeAsgReader()
    lb = elb.add_lb("lb", ["us-east-1a"])
    for n in range(401):
        elb.add_group(f"tg{n}", [], lbs=[lb])
    records = []
    for n in range(120):
        asg.add_group(f"g{n}", [f"i-{n}"])
        records.append(record(f"i-{n}", asg=f"g{n}"))
    per_instance, summary = TOPO.read_topology(elb, asg, records)
    assert elb.calls["DescribeTargetGroups"] == 2 and len(summary["target_groups"]) == 401
    assert elb.calls["DescribeTargetGroupAttributes"] == 0  # no group holds a scanned instance
    assert asg.calls["DescribeAutoScalingGroups"] == 3 and len(summary["auto_scaling_groups"]) == 120
    assert per_instance["i-119"]["asg"]["name"] == "g119"


def test_no_load_balancer_at_all_skips_describe_load_balancers():
    elb, asg = FakeElbReader(), FakeAsgReader()
    elb.add_group("orphan", [("i-1", 80, "healthy")])
    per_instance, _summary = TOPO.read_topology(elb, asg, [record("i-1")])
    assert "DescribeLoadBalancers" not in elb.calls and asg.calls == {}
    assert per_instance["i-1"]["target_groups"][0]["state"] == "unused"


@pytest.mark.parametrize("action", ["DescribeTargetGroups", "DescribeTargetHealth", "DescribeLoadBalancers", "DescribeAutoScalingGroups"])
def test_a_missing_read_permission_raises_the_access_denied(world, action):
    elb, asg, records, _arns = world
    (asg if action == "DescribeAutoScalingGroups" else elb).deny.add(action)
    with pytest.raises(ClientError) as err:
        TOPO.read_topology(elb, asg, records)
    assert err.value.response["Error"]["Code"] == "AccessDenied" and action in str(err.value)


@pytest.mark.parametrize("mode, allow, reasons", [
    ("skip", False, ["asg_member"]), ("in_place", False, []), ("standby", False, []), ("skip", True, []),
])
def test_asg_modes(mode, allow, reasons):
    instance = build_instance(record("i-3", asg="web-asg"), "us-east-1", {"ping_status": "Online", "platform_type": "Linux"})
    assert ineligibility_reasons(instance, {}, allow_asg_members=allow, asg_mode=mode) == reasons
    assert instance.zone == "us-east-1a" and instance.asg_name == "web-asg"
