"""ssm_patch_wave's standby step waits for the drain that Auto Scaling itself starts: an instance is in Standby only
once the group's target groups have drained it (Auto Scaling User Guide, "Temporarily remove instances from your Auto
Scaling group"; the simulator's EnteringStandby lasts until then). So the wait for Standby allows the drain's bound
(drain_timeout) on top of standby_timeout; a deregistration delay longer than standby_timeout is not a failure."""

import uuid

from helpers import FAST, run_module


def test_standby_waits_out_a_drain_longer_than_standby_timeout(sim):
    sim.configure(**dict(FAST, health_s=0.2, drain_s=3.0, asg_transition_s=0.2))
    tag = uuid.uuid4().hex[:8]
    group, web = f"asg-{tag}", f"web-{tag}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [
        dict(count=2, name_prefix="m", asg=group, target_groups=[web], zones=["a", "b"])]})
    member = instances[0]["instance_id"]
    made = run_module("ami_backup_verify", {"instance_ids": [member], "run_id": "run-sd", "poll_interval": 0.1, "region": "us-east-1"},
                      sim.env)
    assert made["rc"] == 0, made.get("msg")
    elb = sim.client("elbv2")
    arn = elb.describe_target_groups(Names=[web])["TargetGroups"][0]["TargetGroupArn"]
    target = dict(arn=arn, name=web, port=80, state="healthy", reason=None, deregistration_delay=300)
    result = run_module("ssm_patch_wave", dict(
        run_id="run-sd", poll_interval=0.5, execution_timeout=60, agent_online_timeout=20, agent_check_interval=0.5,
        command_timeout=60, rollback_timeout=60, fail_on_no_success=False, drain_timeout=20, lb_healthy_timeout=20,
        standby_timeout=1,  # shorter than the 3 s drain
        instances=[dict(instance_id=member, region="us-east-1", platform="linux", health_checks=["true"], target_groups=[target],
                        asg_name=group, asg_mode="standby", capacity_tags={})]), sim.env)
    assert result["rc"] == 0, result.get("msg")
    (entry,) = result["results"]
    assert (entry["final_status"], entry.get("reason")) == ("patched", None), entry
    asg = sim.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    assert asg["DesiredCapacity"] == 2 and {i["LifecycleState"] for i in asg["Instances"]} == {"InService"}
