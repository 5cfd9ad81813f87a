"""The API-call budget of a full run, from the batching design (derivation in docs/performance.md)."""

from __future__ import annotations

import math

SERIAL = [1, "10%", "25%"]   # cms_patching_serial default


def waves(n, serial=None):
    """Batch sizes Ansible makes of n hosts for `serial` (its pct_to_int rules: a % rounds down, at least 1)."""
    serial = list(serial or SERIAL)
    sizes, left, pos = [], n, 0
    while left > 0:
        item = serial[min(pos, len(serial) - 1)]
        size = max(1, int(float(item[:-1]) / 100 * n)) if isinstance(item, str) and item.endswith("%") else int(item)
        sizes.append(min(size, left))
        left -= size
        pos += 1
    return sizes


SSM_BATCH = 50      # SendCommand, DescribeInstanceInformation and DescribeInstancePatchStates take at most 50 ids
EC2_BATCH = 200     # the collection's DescribeImages/DescribeSnapshots/CreateTags id batches
PAGE = 1000         # DescribeInstances page size

# Calls per 50-instance SSM batch of a wave, with polls at least as long as the simulated durations
# (each wait then ends by its second poll). See docs/performance.md for the derivation.
PER_BATCH = {
    "precheck": 1 + 1,          # SendCommand + one ListCommandInvocations (Details) once the command has finished
    # DII + DIPS before, SendCommand, LCI 1, DIPS until fresh (2). No wait for the agent after the command: the reboot is
    # inside it (it ends once the agent is back), and the agents are only watched while it runs (AGENT_CHECKS).
    "patch": 1 + 1 + 1 + 1 + 2,
}
# Agent checks while a patch command is open: one DescribeInstanceInformation per 50 open instances, at most once per
# agent_check_interval (default 60 s) and the first one an interval after the send, so floor(T / interval) per batch
# for a command open T seconds. 0 when every patch command ends within one interval (the smoke test: ~2 s against 60 s);
# ~15 on real AWS for a 15-minute install (add them with full_run(..., agent_checks=15)).
AGENT_CHECKS = 0
POLLS = 2                       # ListCommands per command step (pre-check, patch) per wave: still running, then finished
STEPS = 2                       # command steps per wave: pre-check and patch (restart/health only when configured)
# DescribeImages (backup gate, <= 200 ids) + CreateTags (one per final status; 1 when all pass) + the stop switch's
# GetParameter before the wave (DescribeAlarms per 100 alarms too when cms_patching_alarms is set; none in the bench).
PER_WAVE = 1 + 1 + 1
LOCK_BATCH = 10             # GetParameters and DeleteParameters take at most 10 names
PER_RUN = 2                     # sts:GetCallerIdentity + iam:ListAccountAliases (aws_caller_info, once per invocation)
PREFLIGHT_COMMANDS = 2          # the pre-flight free-space command, one per platform (Linux, Windows) per account and region
TOPOLOGY_PER_REGION = 1         # DescribeTargetGroups when the region has no target group (else topology())
ELB_PAGE = 400                  # DescribeTargetGroups / DescribeLoadBalancers PageSize maximum
BACKUP_PER_200 = 1 + 3 + 2 + 1  # DescribeImages (reuse lookup), DescribeImages polls, DescribeSnapshots, CreateTags verified


# Issue 17's capacity steps, per wave and partition (none for instances without serving target groups or standby).
# Draining and registering are batched per target group, standby per Auto Scaling group and 20 instances; each wait
# ends by its second poll when the poll interval is at least the simulated duration (drain_s, health_s,
# asg_transition_s), as for the other waits. See roles/patching/README.md, "Load balancers and Auto Scaling".
STANDBY_BATCH = 20
ASG_NAMES_BATCH = 50


def capacity_per_wave(target_groups=0, tag_sets=1, asgs=0, standby_members=0, polls=POLLS):
    """Upper bound of the calls of the drain/register steps of one healthy wave, by action.

    target_groups: serving target groups with targets in the wave; tag_sets: distinct drained-tag values (instances
    behind the same groups share one); asgs / standby_members: Auto Scaling groups and members in standby mode.
    """
    # sum over groups of ceil(members / 20) <= ceil(all members / 20) + groups - 1
    standby_calls = math.ceil(standby_members / STANDBY_BATCH) + asgs - 1 if asgs else 0
    asg_reads = math.ceil(asgs / ASG_NAMES_BATCH)
    return {
        "elasticloadbalancing:DeregisterTargets": target_groups,
        "elasticloadbalancing:RegisterTargets": target_groups,
        # the wait until no target drains, and the wait until every target is healthy: `polls` each, per group
        "elasticloadbalancing:DescribeTargetHealth": 2 * polls * target_groups,
        "autoscaling:EnterStandby": standby_calls,
        "autoscaling:ExitStandby": standby_calls,
        # the group read before EnterStandby, the wait for Standby, the read before ExitStandby, the wait for InService
        "autoscaling:DescribeAutoScalingGroups": asg_reads * (1 + polls + 1 + polls),
        # the drained tags (one CreateTags per distinct value) and the standby tag, set before; one DeleteTags each after
        "ec2:CreateTags": (tag_sets if target_groups else 0) + (1 if asgs else 0),
        "ec2:DeleteTags": (1 if target_groups else 0) + (1 if asgs else 0),
    }


def ssm_batches(sizes):
    return sum(math.ceil(w / SSM_BATCH) for w in sizes)


def topology(target_groups=0, load_balancers=0):
    """Discovery's topology reads of one account and region holding target_groups target groups (type instance) and
    load_balancers load balancers, none of them serving the scanned instances (module_utils/topology.py)."""
    pages = max(1, math.ceil(target_groups / ELB_PAGE))
    return pages + (max(1, math.ceil(load_balancers / ELB_PAGE)) if load_balancers else 0) + target_groups


def full_run(n, sizes=None, platforms=2, agent_checks=AGENT_CHECKS, target_groups=0, load_balancers=0):
    """Upper bound of the API calls of one full playbooks/patch.yml over n healthy instances, by term (target_groups
    and load_balancers: those of the region, for discovery's topology reads)."""
    sizes = sizes or waves(n)
    batches = ssm_batches(sizes)
    terms = {
        "agent checks while patch commands are open (DII per 50 per check)": agent_checks * batches,
        "CreateImage, one per instance": n,
        "inventory (DescribeInstances pages + DII per 50)": math.ceil(n / PAGE) + math.ceil(n / SSM_BATCH),
        "discovery (DescribeInstances pages + DII + DIPS per 50)": math.ceil(n / PAGE) + 2 * math.ceil(n / SSM_BATCH),
        # Issue 17: the topology per account and region (module_utils/topology.py): the bench fleet is behind no load
        # balancer and in no Auto Scaling group, but discovery reads every target group of the region all the same.
        "discovery topology (DescribeTargetGroups pages, DescribeLoadBalancers pages, DescribeTargetHealth per group)":
            topology(target_groups, load_balancers),
        # The wave plan written to the instances' tag cms-patching:wave: one CreateTags per wave (and account/region).
        "wave plan tags (CreateTags per wave)": len(sizes),
        "backup (per 200 images)": BACKUP_PER_200 * math.ceil(n / EC2_BATCH),
        # Pre-checks go out per platform (different documents), so a wave may hold one more pre-check batch per platform.
        "pre-checks per SSM batch": PER_BATCH["precheck"] * (batches + (platforms - 1) * len(sizes)),
        "patch per SSM batch": PER_BATCH["patch"] * batches,
        # One ListCommands per poll for every open command of the step (50 commands a page).
        "ListCommands polls (2 per step per wave)": sum(
            POLLS * (math.ceil((math.ceil(w / SSM_BATCH) + platforms - 1) / SSM_BATCH) + math.ceil(math.ceil(w / SSM_BATCH) / SSM_BATCH))
            for w in sizes),
        "per wave (gate DescribeImages, CreateTags, stop switch GetParameter)": PER_WAVE * len(sizes),
        "per run (caller identity)": PER_RUN,
        # Issue 18's pre-flight in the backup play, per account and region (module_utils/preflight.py): the free-space
        # command per platform with its polls, the agent versions (DII per 50), the volumes and instance types read for
        # the KMS and instance-store checks, and the two Service Quotas reads.
        "pre-flight (per account and region)": PREFLIGHT_COMMANDS * (PER_BATCH["precheck"] + POLLS) + math.ceil(n / SSM_BATCH)
        + 2 * math.ceil(n / PAGE) + 2,
        # The run lock (issue 9): SSM has no batched compare-and-set, so one PutParameter per instance; the backup play
        # reads the locks first (GetParameters per 10) and each wave releases its own (GetParameters + DeleteParameters per 10).
        "run locks (PutParameter per instance, Get/DeleteParameters per 10)": n + math.ceil(n / LOCK_BATCH)
        + sum(2 * math.ceil(w / LOCK_BATCH) for w in sizes),
    }
    return terms


def linear_form(platforms=2, agent_checks=AGENT_CHECKS):
    """(a, b, c) with full_run(n) <= a*n + b*waves + c, using ceil(x/k) <= x/k + 1 for every batched term."""
    per_batch = PER_BATCH["precheck"] + PER_BATCH["patch"] + agent_checks
    # ListCommands pages per poll: ceil(commands/50), with commands <= w/50 + platforms (pre-check) and <= w/50 + 1 (patch).
    polls_a, polls_b = POLLS * STEPS / SSM_BATCH ** 2, POLLS * (STEPS + (platforms + 1) / SSM_BATCH)
    a = 1 + 4 / SSM_BATCH + 4 / PAGE + BACKUP_PER_200 / EC2_BATCH + per_batch / SSM_BATCH + polls_a + 1 + 3 / LOCK_BATCH
    b = per_batch + PER_BATCH["precheck"] * (platforms - 1) + polls_b + PER_WAVE + 2 + 1  # + the wave plan's tag
    c = 3 + 2 + BACKUP_PER_200 + PER_RUN + 1 + TOPOLOGY_PER_REGION + PREFLIGHT_COMMANDS * (PER_BATCH["precheck"] + POLLS) + 3 + 2
    return round(a, 4), b, c
