"""The serving-capacity calls of a wave (issue 17), for the tests that run the tool's whole AWS surface under
docs/iam-policy.json (test_security.py, test_iam_enforced.py).

ssm_patch_wave over two instances behind a target group (DeregisterTargets, RegisterTargets, DescribeTargetHealth) and
two members of an Auto Scaling group in standby mode (EnterStandby, ExitStandby, DescribeAutoScalingGroups), one of the
first left drained by a "killed run" (its cms-patching:drained tag read with DescribeInstances, the group's ARN with
DescribeTargetGroups, the tags removed with DeleteTags). The instances carry no cms-test tag: the playbook runs of
those tests never see them.
"""

import time

from helpers import run_module


def capacity_wave(seeder, sim, env, tag):
    """Run the wave with `env` (the key under test); returns {instance name: final_status}."""
    target_group, group = f"cap-{tag}"[:32], f"cap-{tag}"
    seeded = seeder.seed({"region": "us-east-1", "groups": [
        {"count": 2, "name_prefix": f"caplb-{tag}", "target_groups": [target_group]},
        {"count": 2, "name_prefix": f"capasg-{tag}", "asg": group, "target_groups": [target_group]}]})
    sim.configure(health_s=0.2, drain_s=0.3, asg_transition_s=0.2)
    ids = [s["instance_id"] for s in seeded]
    made = run_module("ami_backup_verify", {"instance_ids": ids, "run_id": f"cap-{tag}", "poll_interval": 0.2, "region": "us-east-1"}, env)
    assert made["rc"] == 0, made.get("msg")
    elb = seeder.client("elbv2")
    arn = elb.describe_target_groups(Names=[target_group])["TargetGroups"][0]["TargetGroupArn"]
    for _n in range(100):
        if {d["TargetHealth"]["State"] for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]} == {"healthy"}:
            break
        time.sleep(0.1)
    target = {"arn": arn, "name": target_group, "port": 80, "state": "healthy", "deregistration_delay": 300}
    # Discovery's topology reads under the key tested (ec2_patch_scan: DescribeTargetGroups, DescribeLoadBalancers,
    # DescribeTargetHealth, DescribeTargetGroupAttributes, DescribeAutoScalingGroups) give the wave these very entries.
    scan = run_module("ec2_patch_scan", {"instance_ids": ids, "region": "us-east-1", "asg_mode": "standby"}, env)
    assert scan["rc"] == 0, scan.get("msg")
    for found in scan["instances"]:
        assert [{k: t[k] for k in target} for t in found["target_groups"]] == [target], found["target_groups"]
    # What a run killed mid-drain leaves: the tag, then the deregistration.
    killed = seeded[0]["instance_id"]
    seeder.client("ec2").create_tags(Resources=[killed], Tags=[{"Key": "cms-patching:drained", "Value": f"{target_group}:80"}])
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": killed, "Port": 80}])
    instances = []
    for item in seeded:
        member = item["name"].startswith("capasg")
        instances.append(dict(instance_id=item["instance_id"], region="us-east-1", platform="linux", target_groups=[target],
                              asg_name=group if member else None, asg_mode="standby" if member else "in_place"))
    result = run_module("ssm_patch_wave", {"instances": instances, "run_id": f"cap-{tag}", "poll_interval": 0.5, "drain_timeout": 20,
                                           "lb_healthy_timeout": 20, "standby_timeout": 20, "agent_online_timeout": 20,
                                           "execution_timeout": 60, "status_tags": False}, env)
    assert result["rc"] == 0, result.get("msg")
    names = {s["instance_id"]: s["name"] for s in seeded}
    return {names[e["instance_id"]]: e.get("final_status") for e in result["results"]}
