"""An in-memory, read-only ELBv2 and Auto Scaling for discovery's topology reader (module_utils/topology.py).

It answers with AWS's shapes: DescribeTargetGroups and DescribeLoadBalancers in pages of PageSize (Marker),
DescribeTargetHealth of a whole group (the state each target was given; AWS itself reports `unused`/Target.NotInUse
for a group no load balancer uses), DescribeTargetGroupAttributes, DescribeAutoScalingGroups by name (at most 50
names, MaxRecords pages). Every call is counted; `deny` holds actions refused with AccessDenied.
"""

from collections import Counter

from botocore.exceptions import ClientError

ACCOUNT = "111111111111"


def denied(action):
    service = "autoscaling" if action == "DescribeAutoScalingGroups" else "elasticloadbalancing"
    message = f"User: arn:aws:iam::{ACCOUNT}:user/t is not authorized to perform: {service}:{action}"
    return ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, action)


class _Pages:
    def __init__(self, fake, op):
        self.fake, self.op = fake, op

    def paginate(self, **params):
        marker = None
        while True:
            page = getattr(self.fake, self.op)(**dict(params, **({"Marker": marker} if marker else {})))
            yield page
            marker = page.get("NextMarker") or page.get("NextToken")
            if not marker:
                return


class _Counting:
    def __init__(self):
        self.calls = Counter()
        self.deny = set()

    def _call(self, action):
        self.calls[action] += 1
        if action in self.deny:
            raise denied(action)

    def get_paginator(self, op):
        return _Pages(self, op)


def _page(items, size, marker):
    start = int(marker or 0)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


class FakeElbReader(_Counting):
    def __init__(self):
        super().__init__()
        self.groups = {}  # arn -> {name, type, lbs, delay, targets: [(id, port, state, reason)]}
        self.lbs = {}  # arn -> [zone names]

    def add_lb(self, name, zones):
        arn = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:loadbalancer/app/{name}/{len(self.lbs):016x}"
        self.lbs[arn] = list(zones)
        return arn

    def add_group(self, name, targets, lbs=(), delay=300, target_type="instance"):
        """targets: [(instance id, port, state[, reason])]."""
        arn = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:targetgroup/{name}/{len(self.groups):016x}"
        rows = [tuple(t) + (None,) * (4 - len(t)) for t in targets]
        self.groups[arn] = {"name": name, "type": target_type, "lbs": list(lbs), "delay": delay, "targets": rows}
        return arn

    def describe_target_groups(self, PageSize=400, Marker=None):
        self._call("DescribeTargetGroups")
        assert 1 <= PageSize <= 400
        items = [{"TargetGroupArn": arn, "TargetGroupName": g["name"], "TargetType": g["type"], "LoadBalancerArns": g["lbs"]}
                 for arn, g in self.groups.items()]
        page, nxt = _page(items, PageSize, Marker)
        return dict({"TargetGroups": page}, **({"NextMarker": nxt} if nxt else {}))

    def describe_load_balancers(self, PageSize=400, Marker=None):
        self._call("DescribeLoadBalancers")
        assert 1 <= PageSize <= 400
        items = [{"LoadBalancerArn": arn, "AvailabilityZones": [{"ZoneName": z, "SubnetId": "subnet-" + z} for z in zones]}
                 for arn, zones in self.lbs.items()]
        page, nxt = _page(items, PageSize, Marker)
        return dict({"LoadBalancers": page}, **({"NextMarker": nxt} if nxt else {}))

    def describe_target_health(self, TargetGroupArn):
        self._call("DescribeTargetHealth")
        g = self.groups[TargetGroupArn]
        out = []
        for iid, port, state, reason in g["targets"]:
            if not g["lbs"]:
                state, reason = "unused", "Target.NotInUse"
            health = dict({"State": state}, **({"Reason": reason} if reason else {}))
            out.append({"Target": {"Id": iid, "Port": port}, "TargetHealth": health})
        return {"TargetHealthDescriptions": out}

    def describe_target_group_attributes(self, TargetGroupArn):
        self._call("DescribeTargetGroupAttributes")
        return {"Attributes": [{"Key": "stickiness.enabled", "Value": "false"},
                               {"Key": "deregistration_delay.timeout_seconds", "Value": str(self.groups[TargetGroupArn]["delay"])}]}


class FakeAsgReader(_Counting):
    def __init__(self):
        super().__init__()
        self.groups = {}  # name -> {min, max, desired, members: [(id, lifecycle, health)]}

    def add_group(self, name, members, min_size=0, desired=None, max_size=None):
        rows = [(m, "InService", "Healthy") if isinstance(m, str) else tuple(m) for m in members]
        self.groups[name] = {"min": min_size, "max": max_size or len(rows), "desired": len(rows) if desired is None else desired,
                             "members": rows}
        return f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:0000:autoScalingGroupName/{name}"

    def describe_auto_scaling_groups(self, AutoScalingGroupNames=(), MaxRecords=50, Marker=None):
        self._call("DescribeAutoScalingGroups")
        assert len(AutoScalingGroupNames) <= 50 and MaxRecords <= 100
        items = [{"AutoScalingGroupName": n, "MinSize": g["min"], "MaxSize": g["max"], "DesiredCapacity": g["desired"],
                  "AutoScalingGroupARN": f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:0000:autoScalingGroupName/{n}",
                  "Instances": [{"InstanceId": i, "LifecycleState": s, "HealthStatus": h} for i, s, h in g["members"]]}
                 for n, g in self.groups.items() if n in AutoScalingGroupNames]
        page, nxt = _page(items, MaxRecords, Marker)
        return dict({"AutoScalingGroups": page}, **({"NextToken": nxt} if nxt else {}))
