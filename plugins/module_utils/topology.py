# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What serves traffic, read once per account and region: ELBv2 target groups with each target's health, and the
Auto Scaling groups of the scanned instances. No call is made per instance.

Cost for one account and region with T instance target groups (of which T' hold a scanned instance), L load
balancers and G Auto Scaling groups named by the instances' tags: ceil(T/400) DescribeTargetGroups pages, ceil(L/400)
DescribeLoadBalancers pages (none when no group has a load balancer), T DescribeTargetHealth calls (the API has no
batch form), T' DescribeTargetGroupAttributes calls and ceil(G/50) DescribeAutoScalingGroups calls.

A target of a target group that no load balancer uses, or in a zone none of its load balancers has enabled, is
`unused` (reason Target.NotInUse) whatever else it reports: it serves nothing, so it is neither drained nor counted in
the budget (Elastic Load Balancing API reference, TargetHealth: "Target.NotInUse - The target group is not used by any
load balancer or the target is in an Availability Zone that is not enabled for its load balancer").
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.batching import chunked

# DescribeTargetGroups and DescribeLoadBalancers: PageSize 1..400 (botocore elbv2 model).
ELB_PAGE = 400
# DescribeAutoScalingGroups: "By default, you can only specify up to 50 names" (botocore autoscaling model).
ASG_NAMES_PER_CALL = 50
DEFAULT_DEREGISTRATION_DELAY = 300  # seconds, the ELBv2 default of deregistration_delay.timeout_seconds
UNUSED = "unused"
NOT_IN_USE = "Target.NotInUse"


def _pages(client, operation, **params):
    return client.get_paginator(operation).paginate(**params)


def read_target_groups(elbv2):
    """Every target group of type instance in the region (the only type whose targets are instance ids)."""
    groups = []
    for page in _pages(elbv2, "describe_target_groups", PageSize=ELB_PAGE):
        groups.extend(g for g in page.get("TargetGroups", []) if g.get("TargetType", "instance") == "instance")
    return groups


def read_lb_zones(elbv2):
    """{load balancer arn: set of its enabled zone names}."""
    zones = {}
    for page in _pages(elbv2, "describe_load_balancers", PageSize=ELB_PAGE):
        for lb in page.get("LoadBalancers", []):
            zones[lb["LoadBalancerArn"]] = {z.get("ZoneName") for z in lb.get("AvailabilityZones") or []}
    return zones


def read_deregistration_delay(elbv2, arn):
    for attribute in elbv2.describe_target_group_attributes(TargetGroupArn=arn).get("Attributes", []):
        if attribute.get("Key") == "deregistration_delay.timeout_seconds":
            return int(attribute.get("Value") or DEFAULT_DEREGISTRATION_DELAY)
    return DEFAULT_DEREGISTRATION_DELAY


def target_state(description, group_zones, zone):
    """(state, reason) of one DescribeTargetHealth entry; `unused`/Target.NotInUse when the group serves nothing or
    the target's zone (when known) is not enabled on any of its load balancers."""
    health = description.get("TargetHealth") or {}
    state, reason = health.get("State"), health.get("Reason")
    if group_zones is None or (zone and group_zones and zone not in group_zones):
        return UNUSED, NOT_IN_USE
    return state, reason


def target_groups_of(elbv2, zones_by_instance):
    """({instance id: [target entries]}, {arn: {name, members, healthy}}) for the region's instance target groups.

    A target entry is {arn, name, port, state, reason, deregistration_delay}; members and healthy count the group's
    targets (instance and port) that are not unused, and those that are healthy, scanned or not.
    """
    groups = read_target_groups(elbv2)
    lb_zones = read_lb_zones(elbv2) if any(g.get("LoadBalancerArns") for g in groups) else {}
    per_instance, summary = {}, {}
    for group in groups:
        arn = group["TargetGroupArn"]
        lbs = group.get("LoadBalancerArns") or []
        # None: no load balancer uses the group; an empty set: zones unknown (a load balancer we could not list).
        enabled = set().union(*(lb_zones.get(lb, set()) for lb in lbs)) if lbs else None
        descriptions = elbv2.describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", [])
        members = healthy = 0
        mine = []
        for description in descriptions:
            target = description.get("Target") or {}
            instance_id = target.get("Id")
            zone = zones_by_instance.get(instance_id) or target.get("AvailabilityZone")
            state, reason = target_state(description, enabled, zone)
            if state != UNUSED:
                members += 1
                healthy += state == "healthy"
            if instance_id in zones_by_instance:
                mine.append((instance_id, {"arn": arn, "name": group.get("TargetGroupName"), "port": target.get("Port"),
                                           "state": state, "reason": reason}))
        summary[arn] = {"name": group.get("TargetGroupName"), "members": members, "healthy": healthy}
        if mine:
            delay = read_deregistration_delay(elbv2, arn)
            for instance_id, entry in mine:
                entry["deregistration_delay"] = delay
                per_instance.setdefault(instance_id, []).append(entry)
    return per_instance, summary


def asg_names_of(records):
    return sorted({r["tags"][T.ASG_KEY] for r in records if r["tags"].get(T.ASG_KEY)})


def read_auto_scaling_groups(autoscaling, names):
    """DescribeAutoScalingGroups by name, 50 names per call."""
    found = []
    for chunk in chunked(list(names), ASG_NAMES_PER_CALL):
        for page in _pages(autoscaling, "describe_auto_scaling_groups", AutoScalingGroupNames=chunk, MaxRecords=ASG_NAMES_PER_CALL):
            found.extend(page.get("AutoScalingGroups", []))
    return found


def auto_scaling_of(autoscaling, names):
    """({instance id: asg entry}, {arn: {name, members, healthy, min_size, max_size, desired_capacity}}).

    An asg entry is {arn, name, min_size, max_size, desired_capacity, lifecycle_state, health_status}; healthy members
    are InService and Healthy (members in Standby, Pending or Terminating count as members only).
    """
    per_instance, summary = {}, {}
    for group in read_auto_scaling_groups(autoscaling, names) if names else []:
        arn = group.get("AutoScalingGroupARN") or group["AutoScalingGroupName"]
        sizes = {"min_size": group.get("MinSize"), "max_size": group.get("MaxSize"), "desired_capacity": group.get("DesiredCapacity")}
        instances = group.get("Instances") or []
        healthy = sum(1 for i in instances if i.get("LifecycleState") == "InService" and i.get("HealthStatus", "Healthy") == "Healthy")
        summary[arn] = dict(sizes, name=group["AutoScalingGroupName"], members=len(instances), healthy=healthy)
        for member in instances:
            per_instance[member["InstanceId"]] = dict(sizes, arn=arn, name=group["AutoScalingGroupName"],
                                                      lifecycle_state=member.get("LifecycleState"), health_status=member.get("HealthStatus"))
    return per_instance, summary


def read_topology(elbv2, autoscaling, records):
    """Zones, target groups and Auto Scaling groups of the scanned instance `records` (readers.instance_record).

    Returns (per instance {zone, target_groups, asg_name, asg}, summary {target_groups, auto_scaling_groups}): the
    hostvar keys discovery gives each host, and the member counts the wave plan's budget needs.
    """
    zones = {r["instance_id"]: r.get("availability_zone") for r in records}
    targets, tg_summary = target_groups_of(elbv2, zones)
    asgs, asg_summary = auto_scaling_of(autoscaling, asg_names_of(records))
    per_instance = {}
    for record in records:
        iid = record["instance_id"]
        per_instance[iid] = {"zone": zones[iid], "target_groups": targets.get(iid, []),
                             "asg_name": record["tags"].get(T.ASG_KEY), "asg": asgs.get(iid)}
    return per_instance, {"target_groups": tg_summary, "auto_scaling_groups": asg_summary}


def zone_only(records):
    """The per-instance keys without reading ELBv2 or Auto Scaling (topology reading turned off)."""
    return {r["instance_id"]: {"zone": r.get("availability_zone"), "target_groups": [], "asg_name": r["tags"].get(T.ASG_KEY), "asg": None}
            for r in records}
