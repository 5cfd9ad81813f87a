"""An in-memory ELBv2 (target health), Auto Scaling (standby) and EC2 tags for the capacity unit tests.

It follows the same AWS rules as the simulator (tests/simulator/awssim/elbv2.py, autoscaling.py), on a fake clock:
a registered target is `initial` for health_s then `healthy`; a deregistered one `draining` for its group's delay
(forever with `stuck`), then `unused`/Target.NotRegistered; `unhealthy` ids never pass once registered again;
EnterStandby/ExitStandby take 20 ids, refuse below MinSize, move over `transition_s` and deregister/register the
group's attached target groups. Every call is recorded; `fail[action]` makes an action raise a ClientError.
"""

from botocore.exceptions import ClientError


def client_error(code, op, message="refused"):
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += max(float(seconds), 0.01)


class _Paginator:
    def __init__(self, method):
        self.method = method

    def paginate(self, **params):
        return [self.method(**params)]


class Recorder:
    def __init__(self, clock, log=None):
        self.clock = clock
        self.calls = []
        self.log = [] if log is None else log  # shared by the fakes of one Clients: every call in order
        self.fail = {}  # action -> ClientError

    def _call(self, action, **kw):
        self.calls.append((action, kw))
        self.log.append(action)
        if action in self.fail:
            raise self.fail[action]

    def count(self, action):
        return sum(1 for a, _kw in self.calls if a == action)


class FakeElb(Recorder):
    def __init__(self, clock, health_s=5.0, log=None):
        super().__init__(clock, log)
        self.health_s = health_s
        self.groups = {}  # arn -> {name, port, drain_s, targets: {iid: {port, since}}, draining: {iid: {port, since}}}
        self.stuck, self.unhealthy = set(), set()

    def add_group(self, name, port=80, drain_s=30.0, members=()):
        arn = f"arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/{name}/{len(self.groups):016x}"
        self.groups[arn] = {"name": name, "port": port, "drain_s": drain_s, "targets": {}, "draining": {}}
        for iid in members:
            self.groups[arn]["targets"][iid] = {"port": port, "since": -1e9}  # healthy long since
        return arn

    def tg(self, arn, iid, port=None):
        """The discovery dict of a target group for an instance."""
        g = self.groups[arn]
        return {"arn": arn, "name": g["name"], "port": port or g["port"], "state": "healthy", "deregistration_delay": int(g["drain_s"])}

    def state(self, arn, iid):
        g, now = self.groups[arn], self.clock()
        if iid in g["targets"]:
            if iid in self.unhealthy and g["targets"][iid]["since"] > 0:
                return "unhealthy", "Target.ResponseCodeMismatch"
            if now < g["targets"][iid]["since"] + self.health_s:
                return "initial", "Elb.RegistrationInProgress"
            return "healthy", None
        gone = g["draining"].get(iid)
        if gone and (iid in self.stuck or now < gone["since"] + g["drain_s"]):
            return "draining", "Target.DeregistrationInProgress"
        return "unused", "Target.NotRegistered"

    def deregister_targets(self, TargetGroupArn, Targets):
        self._call("DeregisterTargets", TargetGroupArn=TargetGroupArn, Targets=Targets)
        g = self.groups[TargetGroupArn]
        for t in Targets:
            if t["Id"] not in g["targets"] and t["Id"] not in g["draining"]:
                raise client_error("InvalidTarget", "DeregisterTargets", f"{t['Id']} is not registered")
        self.drop(TargetGroupArn, [t["Id"] for t in Targets])

    def drop(self, arn, ids):
        g = self.groups[arn]
        for iid in ids:
            record = g["targets"].pop(iid, None)
            if record:
                g["draining"][iid] = {"port": record["port"], "since": self.clock()}

    def register_targets(self, TargetGroupArn, Targets):
        self._call("RegisterTargets", TargetGroupArn=TargetGroupArn, Targets=Targets)
        self.add(TargetGroupArn, [(t["Id"], t.get("Port")) for t in Targets])

    def add(self, arn, targets):
        g = self.groups[arn]
        for iid, port in targets:
            if iid not in g["targets"]:
                g["targets"][iid] = {"port": port or g["port"], "since": self.clock()}
                g["draining"].pop(iid, None)

    def describe_target_health(self, TargetGroupArn, Targets):
        self._call("DescribeTargetHealth", TargetGroupArn=TargetGroupArn, Targets=Targets)
        out = []
        for t in Targets:
            state, reason = self.state(TargetGroupArn, t["Id"])
            out.append({"Target": {"Id": t["Id"], "Port": t.get("Port")}, "TargetHealth": dict({"State": state}, **({"Reason": reason} if reason else {}))})
        return {"TargetHealthDescriptions": out}

    def describe_target_groups(self, Names):
        self._call("DescribeTargetGroups", Names=Names)
        found = [{"TargetGroupName": g["name"], "TargetGroupArn": arn} for arn, g in self.groups.items() if g["name"] in Names]
        if len(found) < len(set(Names)):
            raise client_error("TargetGroupNotFound", "DescribeTargetGroups", "One or more target groups not found")
        return {"TargetGroups": found}


class FakeAsg(Recorder):
    def __init__(self, clock, elb, transition_s=2.0, log=None):
        super().__init__(clock, log)
        self.elb, self.transition_s = elb, transition_s
        self.groups = {}  # name -> {min, max, desired, tgs, members: {iid: (state, then, at)}}

    def add_group(self, name, members, min_size=0, target_groups=()):
        self.groups[name] = {"min": min_size, "max": len(members), "desired": len(members), "tgs": list(target_groups),
                             "members": {iid: ("InService", None, 0) for iid in members}}

    def lifecycle(self, name, iid):
        state, then, at = self.groups[name]["members"][iid]
        return then if then and self.clock() >= at else state

    def get_paginator(self, op):
        assert op == "describe_auto_scaling_groups"
        return _Paginator(self.describe_auto_scaling_groups)

    def describe_auto_scaling_groups(self, AutoScalingGroupNames):
        self._call("DescribeAutoScalingGroups", AutoScalingGroupNames=AutoScalingGroupNames)
        assert len(AutoScalingGroupNames) <= 50
        return {"AutoScalingGroups": [
            {"AutoScalingGroupName": n, "MinSize": g["min"], "MaxSize": g["max"], "DesiredCapacity": g["desired"], "TargetGroupARNs": g["tgs"],
             "Instances": [{"InstanceId": i, "LifecycleState": self.lifecycle(n, i)} for i in g["members"]]}
            for n, g in self.groups.items() if n in AutoScalingGroupNames]}

    def enter_standby(self, AutoScalingGroupName, InstanceIds, ShouldDecrementDesiredCapacity):
        self._call("EnterStandby", AutoScalingGroupName=AutoScalingGroupName, InstanceIds=InstanceIds)
        g = self.groups[AutoScalingGroupName]
        if len(InstanceIds) > 20:
            raise client_error("ValidationError", "EnterStandby", "The number of instances exceeds the limit of 20")
        if any(self.lifecycle(AutoScalingGroupName, i) != "InService" for i in InstanceIds):
            raise client_error("ValidationError", "EnterStandby", "The instance is not in InService.")
        if ShouldDecrementDesiredCapacity and g["desired"] - len(InstanceIds) < g["min"]:
            raise client_error("ValidationError", "EnterStandby", "... which cannot be less than the minimum size.")
        for iid in InstanceIds:
            g["members"][iid] = ("EnteringStandby", "Standby", self.clock() + self.transition_s)
            for arn in g["tgs"]:
                self.elb.drop(arn, [iid])
        if ShouldDecrementDesiredCapacity:
            g["desired"] -= len(InstanceIds)

    def exit_standby(self, AutoScalingGroupName, InstanceIds):
        self._call("ExitStandby", AutoScalingGroupName=AutoScalingGroupName, InstanceIds=InstanceIds)
        g = self.groups[AutoScalingGroupName]
        if len(InstanceIds) > 20:
            raise client_error("ValidationError", "ExitStandby", "The number of instances exceeds the limit of 20")
        if any(self.lifecycle(AutoScalingGroupName, i) != "Standby" for i in InstanceIds):
            raise client_error("ValidationError", "ExitStandby", "The instance is not in Standby.")
        for iid in InstanceIds:
            g["members"][iid] = ("Pending", "InService", self.clock() + self.transition_s)
            for arn in g["tgs"]:
                self.elb.add(arn, [(iid, None)])
        g["desired"] += len(InstanceIds)


class FakeTags(Recorder):
    """EC2 CreateTags / DeleteTags / DescribeTags (resource-id and key filters) / DescribeInstances (instance-id filter)."""

    def __init__(self, clock, log=None):
        super().__init__(clock, log)
        self.tags = {}  # iid -> {key: value}

    def create_tags(self, Resources, Tags):
        self._call("CreateTags", Resources=Resources, Tags=Tags)
        for rid in Resources:
            self.tags.setdefault(rid, {}).update({t["Key"]: t["Value"] for t in Tags})

    def delete_tags(self, Resources, Tags):
        self._call("DeleteTags", Resources=Resources, Tags=Tags)
        for rid in Resources:
            for t in Tags:
                self.tags.get(rid, {}).pop(t["Key"], None)

    def get_paginator(self, op):
        return _Paginator({"describe_tags": self.describe_tags, "describe_instances": self.describe_instances}[op])

    def describe_instances(self, Filters):
        """Only what the capacity code reads: the instances of an instance-id filter, with their tags."""
        self._call("DescribeInstances", Filters=Filters)
        ids = next(f["Values"] for f in Filters if f["Name"] == "instance-id")
        return {"Reservations": [{"OwnerId": "111111111111", "Instances": [
            {"InstanceId": rid, "Tags": [{"Key": k, "Value": v} for k, v in self.tags.get(rid, {}).items()]} for rid in ids]}]}

    def describe_tags(self, Filters):
        self._call("DescribeTags", Filters=Filters)
        ids = next(f["Values"] for f in Filters if f["Name"] == "resource-id")
        keys = next(f["Values"] for f in Filters if f["Name"] == "key")
        return {"Tags": [{"ResourceId": rid, "Key": k, "Value": v} for rid in ids for k, v in self.tags.get(rid, {}).items() if k in keys]}


class Clients:
    """clients.get(service) over the three fakes (ssm/ec2 patch steps are faked elsewhere)."""

    def __init__(self, clock=None, health_s=5.0, transition_s=2.0):
        self.clock = clock or Clock()
        self.log = []
        self.elb = FakeElb(self.clock, health_s, self.log)
        self.asg = FakeAsg(self.clock, self.elb, transition_s, self.log)
        self.ec2 = FakeTags(self.clock, self.log)

    def get(self, service, max_attempts=None):  # pylint: disable=unused-argument
        return {"elbv2": self.elb, "autoscaling": self.asg, "ec2": self.ec2}[service]

    def calls(self):
        return list(self.log)
