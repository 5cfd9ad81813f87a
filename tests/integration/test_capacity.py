"""Issue 17's capacity test: a mixed fleet in 3 zones runs end to end (playbooks/patch.yml) on the simulator while a
poller reads DescribeTargetHealth of both target groups all along.

The fleet: 6 instances behind target group `web`, an Auto Scaling group of 6 (MinSize 2, cms_patching_asg_mode
standby) attached to target group `app`, one of whose members fails its health check after the patch, and 2 instances
behind no load balancer. It shows that no target group ever had fewer healthy targets than the budget allows
(cms_patching_min_healthy_percent 50: ceil(6 * 50 / 100) = 3), that every instance ends registered and healthy (or
rolled back and registered), and that the Auto Scaling group ends at its desired capacity with every member InService.
The poller uses the run's own key, so it sees the simulated durations the run sees.
"""

import threading
import time
import uuid

from helpers import FAST, FAST_VARS, read_report, run_playbook, write_fleet_inventory

DURATIONS = dict(FAST, health_s=0.3, drain_s=0.5, asg_transition_s=0.3)
FLOOR = 3  # ceil(6 members * 50 / 100)


class Poller(threading.Thread):
    """DescribeTargetHealth of each target group every 0.1 s: the healthy count per group at each sample."""

    def __init__(self, sim, arns):
        super().__init__(daemon=True)
        self.elb, self.arns = sim.client("elbv2"), arns
        self.samples, self.errors = [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            sample = {}
            for name, arn in self.arns.items():
                try:
                    found = self.elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
                except Exception as e:  # pylint: disable=broad-except
                    self.errors.append(str(e))
                    break
                sample[name] = sum(1 for d in found if d["TargetHealth"]["State"] == "healthy")
            else:
                self.samples.append(sample)
            self.stop.wait(0.1)


def states(sim, arn):
    return {d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in sim.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def wait_all_healthy(sim, arns, members, tries=100):
    for _n in range(tries):
        if all(states(sim, arns[name]) == {i: "healthy" for i in ids} for name, ids in members.items()):
            return True
        time.sleep(0.1)
    return False


def test_no_target_group_below_budget_during_a_full_run(sim, tmp_path):
    sim.configure(**DURATIONS)
    tag = uuid.uuid4().hex[:8]
    web, app, group = f"web-{tag}", f"app-{tag}", f"asg-{tag}"
    zones = ["a", "b", "c"]
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": f"cap-{tag}"}, "groups": [
        dict(count=6, name_prefix="web", zones=zones, target_groups=[web]),
        dict(count=5, name_prefix="asg", zones=zones, asg=group, asg_min_size=2, target_groups=[app]),
        dict(count=1, name_prefix="asgbad", zones=["c"], asg=group, asg_min_size=2, target_groups=[app], faults=["health-fail"]),
        dict(count=2, name_prefix="batch", zones=zones)]})
    by_name = {i["name"]: i["instance_id"] for i in instances}
    elb = sim.client("elbv2")
    arns = {name: elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"] for name in (web, app)}
    members = {web: [i for n, i in by_name.items() if n.startswith("web")], app: [i for n, i in by_name.items() if n.startswith("asg")]}
    assert len(members[web]) == len(members[app]) == 6
    assert wait_all_healthy(sim, arns, members)
    asg = sim.client("autoscaling")
    before = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    assert (before["DesiredCapacity"], before["MinSize"]) == (6, 2)

    poller = Poller(sim, {web: arns[web], app: arns[app]})
    poller.start()
    run_id = f"cap-{tag}"
    try:
        proc = run_playbook("playbooks/patch.yml", sim.env, inventory=write_fleet_inventory(tmp_path, f"cap-{tag}"), extra_vars=dict(
            FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"), cms_patching_max_fail_percentage=100,
            # Waves of up to 3: hosts are planned in (random) instance-id order, and a wave of one failing host (asgbad as
            # the canary) would end the play whatever max_fail_percentage says.
            cms_patching_serial=[3, "25%"], cms_patching_asg_mode="standby", cms_patching_min_healthy_percent=50,
            patching_health_checks=["curl -fsS http://localhost/health"],
            patching_drain_timeout=30, patching_lb_healthy_timeout=30, patching_standby_timeout=30))
    finally:
        poller.stop.set()
        poller.join(timeout=10)
    assert proc.returncode in (0, 2), proc.stdout[-3000:]  # 2: the rolled-back host is failed (PLAY RECAP)

    # The poller saw the whole run, draining included, and never a group below its floor.
    assert len(poller.samples) > 50 and not poller.errors, (len(poller.samples), poller.errors[:3])
    lowest = {name: min(s[name] for s in poller.samples) for name in (web, app)}
    # That each group was drained is asserted from the report and the calls below: a poll may fall between two short
    # drains on a loaded machine, so the samples are not asked to show one.
    assert all(low >= FLOOR for low in lowest.values()), lowest

    _report, entries = read_report(tmp_path / "reports", run_id)
    final = {name: (entries[iid].get("final_status"), entries[iid].get("reason")) for name, iid in by_name.items()}
    assert final.pop("asgbad-001") == ("rolled_back", "health_check_failed"), final
    assert set(final.values()) == {("patched", None)}, final
    # Taken out of service before the patch: the web members drained from their group, the Auto Scaling members in
    # Standby (Auto Scaling deregistered them from `app` itself).
    for name, iid in by_name.items():
        capacity = entries[iid].get("capacity") or {}
        if name.startswith("web"):
            assert capacity.get("drained") == [web] and capacity.get("healthy") is True, (name, capacity)
        elif name.startswith("asg"):
            assert capacity.get("standby") is True and capacity.get("drained") == [], (name, capacity)
            assert entries[iid]["steps"]["drain"]["ended_at"] <= entries[iid]["steps"]["patch"]["started_at"]
        else:
            assert not capacity, (name, capacity)
    calls = sim.stats()["calls"]
    # one EnterStandby per wave that holds members; ExitStandby once more in the wave whose member is put back after its rollback
    assert 1 <= calls["autoscaling:EnterStandby"] <= calls["autoscaling:ExitStandby"] <= calls["autoscaling:EnterStandby"] + 1
    assert calls["elasticloadbalancing:DeregisterTargets"] >= 1  # web's drains: one call per wave that holds web members
    # Every instance ends registered and healthy (the rolled-back one too), the group at its desired capacity.
    assert wait_all_healthy(sim, arns, members, tries=50)
    after = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    assert after["DesiredCapacity"] == 6 and after["MinSize"] == 2
    assert {i["LifecycleState"] for i in after["Instances"]} == {"InService"} and len(after["Instances"]) == 6
    tags = sim.client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": list(by_name.values())},
                                                    {"Name": "key", "Values": ["cms-patching:drained", "cms-patching:standby"]}])
    assert tags["Tags"] == []
