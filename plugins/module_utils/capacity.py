# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Serving capacity around the patch: ELBv2 draining and re-registering, Auto Scaling standby, and the tags that let a
later run put back what a killed run took out.

Every write is batched: one DeregisterTargets / RegisterTargets / DescribeTargetHealth per target group for all the
wave's targets in it, one EnterStandby / ExitStandby per Auto Scaling group and 20 instances, one CreateTags per tag
value. Results are per instance: {instance_id, outcome, error, ...}; the fault table (waves.py) decides the rest.
"""

from __future__ import annotations

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.batching import chunked
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, is_aws_error
from ansible_collections.cms.patching.plugins.module_utils.readers import read_instances

ASG_MODES = ("in_place", "standby")
# EnterStandby / ExitStandby: "You can specify up to 20 instances" (Auto Scaling API reference, InstanceIds).
STANDBY_BATCH = 20
# DescribeAutoScalingGroups AutoScalingGroupNames: "By default, you can only specify up to 50 names" (API reference).
ASG_NAMES_BATCH = 50
TG_NAMES_BATCH = 20  # DescribeTargetGroups Names has no documented maximum: small calls, only used by the recovery
TAG_VALUE_MAX = 256  # EC2 tag values: at most 256 characters (EC2 user guide, "Tag restrictions")
DRAINING = ("draining", "unhealthy.draining")  # TargetHealthStateEnum states of a target still being deregistered
# A target in a zone its load balancer has not enabled, or in a target group no load balancer uses, serves nothing.
NOT_IN_USE = "Target.NotInUse"
DRAIN_MARGIN = 60  # default drain timeout: the largest deregistration delay + this
DEFAULT_DELAY = 300  # ELBv2's default deregistration_delay.timeout_seconds


# ---------------------------------------------------------------- plans (pure)

def serving_groups(instance):
    """The instance's target groups that serve traffic (not `unused`), as discovery read them."""
    return [tg for tg in instance.get("target_groups") or [] if tg.get("arn") and tg.get("state") != "unused"]


def plan(instance):
    """How the instance leaves service before its patch: {mode: drain | standby | None, target_groups, asg_name, drain_timeout}."""
    groups = serving_groups(instance)
    standby = instance.get("asg_mode") == "standby" and bool(instance.get("asg_name"))
    mode = "standby" if standby else ("drain" if groups else None)
    timeout = instance.get("drain_timeout")
    if timeout is None:
        timeout = max([int(tg.get("deregistration_delay") if tg.get("deregistration_delay") is not None else DEFAULT_DELAY)
                       for tg in groups] or [0]) + DRAIN_MARGIN
    return dict(instance_id=instance["instance_id"], mode=mode, target_groups=groups, asg_name=instance.get("asg_name") if standby else None,
                drain_timeout=timeout)


def drained_tags(groups):
    """{tag key: value} recording `groups` ([{name, port}]) as "name:port,..." over as many keys as 256 characters need.

    None when even DRAINED_KEYS cannot hold them (the instance is then not drained: nothing could put it back).
    """
    values, current = [], ""
    for group in groups:
        item = f"{group['name']}:{group.get('port') or ''}"
        candidate = f"{current},{item}" if current else item
        if len(candidate) > TAG_VALUE_MAX:
            values.append(current)
            candidate = item
        current = candidate
    if current:
        values.append(current)
    if len(values) > len(T.DRAINED_KEYS):
        return None
    return dict(zip(T.DRAINED_KEYS, values))


def parse_drained(tags):
    """[(name, port or None)] recorded by drained_tags."""
    out = []
    for key in T.DRAINED_KEYS:
        for item in (tags.get(key) or "").split(","):
            name, _sep, port = item.strip().partition(":")
            if name:
                out.append((name, int(port) if port.isdigit() else None))
    return out


def recovery_of(tags):
    """(drained [(name, port)], standby asg name or None) that a run left on an instance's tags."""
    tags = tags or {}
    return parse_drained(tags), tags.get(T.STANDBY) or None


def tg_name(arn):
    """The name in a target group ARN (...:targetgroup/<name>/<id>)."""
    parts = arn.split("/")
    return parts[-2] if len(parts) >= 3 else arn


def result(iid, outcome, error=None, **extra):
    return dict(extra, instance_id=iid, outcome=outcome, error=error)


def group_by(items, key):
    out = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


# ---------------------------------------------------------------- AWS side

class Capacity:
    """The calls of one partition. `clients.get(service)` gives boto3-like clients; clock/sleep are injectable."""

    def __init__(self, clients, clock, sleep, poll_interval):
        self.clients, self.clock, self.sleep, self.poll = clients, clock, sleep, max(0.0, float(poll_interval))

    @property
    def elb(self):
        return self.clients.get("elbv2")

    @property
    def asg(self):
        return self.clients.get("autoscaling")

    # -------------------------------------------------------- tags

    def set_tags(self, values):
        """CreateTags per distinct tag set: values {iid: {key: value}}. Returns {iid: error} of the calls that failed."""
        errors = {}
        by_value = group_by(values.items(), lambda kv: tuple(sorted(kv[1].items())))
        for tag_set, items in sorted(by_value.items()):
            ids = [iid for iid, _v in items]
            try:
                self.clients.get("ec2").create_tags(Resources=ids, Tags=[{"Key": k, "Value": v} for k, v in tag_set])
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                errors.update({iid: aws_error_message(e, "ec2:CreateTags") for iid in ids})
        return errors

    def clear_tags(self, ids, keys):
        """DeleteTags of `keys` on `ids` (one call per 500). An error only warns: the next run re-registers (idempotent)."""
        errors = []
        for chunk in chunked(sorted(set(ids)), 500):
            try:
                self.clients.get("ec2").delete_tags(Resources=chunk, Tags=[{"Key": k} for k in keys])
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                errors.append(aws_error_message(e, "ec2:DeleteTags"))
        return errors

    # -------------------------------------------------------- ELBv2

    def change_targets(self, action, by_tg):
        """DeregisterTargets or RegisterTargets, one call per target group: by_tg {arn: [(iid, port)]}. {arn: error}."""
        call = getattr(self.elb, "deregister_targets" if action == "deregister" else "register_targets")
        errors = {}
        for arn, targets in sorted(by_tg.items()):
            try:
                call(TargetGroupArn=arn, Targets=[dict({"Id": iid}, **({"Port": int(port)} if port else {})) for iid, port in targets])
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                errors[arn] = aws_error_message(e, f"elasticloadbalancing:{action.capitalize()}Targets", tg_name(arn))
        return errors

    def target_states(self, by_tg, errors=None):
        """{(arn, iid): (state, reason)} from one DescribeTargetHealth per target group (asked for the wave's targets).

        A failed read leaves its target group out; `errors`, when given, gets {arn: one line} of each, for a reader that
        must not take a read that saw nothing for healthy targets (the bake)."""
        states = {}
        for arn, targets in sorted(by_tg.items()):
            try:
                found = self.elb.describe_target_health(
                    TargetGroupArn=arn, Targets=[dict({"Id": iid}, **({"Port": int(port)} if port else {})) for iid, port in targets])
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                if errors is not None:
                    errors[arn] = aws_error_message(e, "elasticloadbalancing:DescribeTargetHealth", tg_name(arn))
                continue  # a failed read is a poll that saw nothing: the wait goes on until its deadline
            for desc in found.get("TargetHealthDescriptions", []):
                health = desc.get("TargetHealth") or {}
                states[(arn, desc["Target"]["Id"])] = (health.get("State"), health.get("Reason"))
        return states

    def wait_targets(self, watch, done, deadlines):
        """Poll until done(state, reason) for every (arn, iid, port) of each instance, or its deadline passes.

        watch {iid: [(arn, port)]}; deadlines {iid: monotonic time}. Returns (finished ids, timed-out ids, last states).
        """
        pending = {iid for iid, targets in watch.items() if targets}
        finished, late, states = set(watch) - pending, set(), {}
        while pending:
            by_tg = {}
            for iid in sorted(pending):
                for arn, port in watch[iid]:
                    by_tg.setdefault(arn, []).append((iid, port))
            states.update(self.target_states(by_tg))
            now_done = {iid for iid in pending if all(done(*states.get((arn, iid), (None, None))) for arn, _p in watch[iid])}
            finished |= now_done
            pending -= now_done
            now = self.clock()
            expired = {iid for iid in pending if now >= deadlines[iid]}
            late |= expired
            pending -= expired
            if pending:
                self.sleep(max(0.0, min(self.poll, min(deadlines[iid] for iid in pending) - now)))
        return finished, late, states

    def arns_by_name(self, names):
        """{name: arn} of target groups by name (DescribeTargetGroups, 20 names a call); unknown names are left out."""
        out = {}
        for chunk in chunked(sorted(set(names)), TG_NAMES_BATCH):
            try:
                groups = self.elb.describe_target_groups(Names=chunk)["TargetGroups"]
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                # One unknown name fails the whole call (TargetGroupNotFound): ask for the others one by one.
                groups = []
                for name in chunk if len(chunk) > 1 else []:
                    try:
                        groups += self.elb.describe_target_groups(Names=[name])["TargetGroups"]
                    except Exception as inner:  # pylint: disable=broad-except
                        if not is_aws_error(inner):
                            raise
            out.update({g["TargetGroupName"]: g["TargetGroupArn"] for g in groups})
        return out

    # -------------------------------------------------------- Auto Scaling

    def groups(self, names):
        """{name: group} from DescribeAutoScalingGroups (50 names a call)."""
        out = {}
        for chunk in chunked(sorted(set(names)), ASG_NAMES_BATCH):
            pages = self.asg.get_paginator("describe_auto_scaling_groups").paginate(AutoScalingGroupNames=chunk)
            for page in pages:
                out.update({g["AutoScalingGroupName"]: g for g in page.get("AutoScalingGroups", [])})
        return out

    def lifecycle(self, names):
        """{iid: LifecycleState} of the members of the named groups, plus the groups themselves."""
        groups = self.groups(names)
        return {m["InstanceId"]: m.get("LifecycleState") for g in groups.values() for m in g.get("Instances", [])}, groups

    def standby_call(self, action, by_asg):
        """EnterStandby (decrementing the desired capacity) or ExitStandby, per group and 20 ids. {iid: error}."""
        errors = {}
        for name, ids in sorted(by_asg.items()):
            for chunk in chunked(ids, STANDBY_BATCH):
                try:
                    if action == "enter":
                        self.asg.enter_standby(AutoScalingGroupName=name, InstanceIds=chunk, ShouldDecrementDesiredCapacity=True)
                    else:
                        self.asg.exit_standby(AutoScalingGroupName=name, InstanceIds=chunk)
                except Exception as e:  # pylint: disable=broad-except
                    if not is_aws_error(e):
                        raise
                    message = aws_error_message(e, f"autoscaling:{action.capitalize()}Standby", name)
                    errors.update({iid: message for iid in chunk})
        return errors

    def wait_lifecycle(self, by_asg, wanted, deadline):
        """Poll DescribeAutoScalingGroups until every instance is in `wanted`, or the deadline. (reached ids, late ids)."""
        pending = {iid for ids in by_asg.values() for iid in ids}
        reached = set()
        while pending:
            try:
                states, _groups = self.lifecycle([n for n, ids in by_asg.items() if set(ids) & pending])
            except Exception as e:  # pylint: disable=broad-except
                if not is_aws_error(e):
                    raise
                states = {}
            now_there = {iid for iid in pending if states.get(iid) == wanted}
            reached |= now_there
            pending -= now_there
            now = self.clock()
            if not pending or now >= deadline:
                break
            self.sleep(max(0.0, min(self.poll, deadline - now)))
        return reached, pending


def min_size_refusal(error):
    """Whether an EnterStandby error is Auto Scaling's refusal to go below MinSize."""
    return "minimum size" in (error or "").lower() or "min-size" in (error or "").lower() or "minsize" in (error or "").lower()


# ---------------------------------------------------------------- the steps

def read_capacity_tags(ec2, instance_ids):
    """{iid: {key: value}} of the capacity tags (tags.CAPACITY_KEYS) on the instances.

    Through the shared DescribeInstances reader (200 ids a query), which every run may already call: no
    ec2:DescribeTags permission of its own.
    """
    found = {iid: {} for iid in instance_ids}
    for record in read_instances(ec2, instance_ids):
        found[record["instance_id"]] = {k: v for k, v in record["tags"].items() if k in T.CAPACITY_KEYS}
    return found


def take_out(cap, plans, standby_timeout):
    """Before the patch: EnterStandby (standby members), then DeregisterTargets and the wait until no target drains.

    Each result says what was done, so that whatever happens next it can be put back: `deregistered` (target groups
    deregistered by us), `standby` (the group it entered Standby in, or was asked to).
    """
    results = {}
    attached = {}  # asg name -> target group arns Auto Scaling itself deregisters and registers
    standby = [p for p in plans if p["mode"] == "standby"]
    if standby:
        attached = _enter_standby(cap, standby, standby_timeout, results)
    started = cap.clock()
    explicit, watch = {}, {}
    for p in plans:
        iid = p["instance_id"]
        if iid in results and results[iid]["outcome"] != "success":
            continue
        own = attached.get(p["asg_name"], set()) if p["mode"] == "standby" else set()
        explicit[iid] = [tg for tg in p["target_groups"] if tg["arn"] not in own]
        watch[iid] = [(tg["arn"], tg.get("port")) for tg in p["target_groups"]]
    values = {iid: drained_tags(groups) for iid, groups in explicit.items() if groups}
    for iid in [i for i, v in values.items() if v is None]:
        results[iid] = _out(results, iid, "drain_failed", "too many target groups to record in the drained tags: not drained")
    failed_tags = cap.set_tags({iid: v for iid, v in values.items() if v})
    for iid, error in failed_tags.items():
        results[iid] = _out(results, iid, "drain_failed", error)
    by_tg, done_by = {}, {}
    for iid, groups in explicit.items():
        if iid in results and results[iid]["outcome"] != "success":
            continue
        for tg in groups:
            by_tg.setdefault(tg["arn"], []).append((iid, tg.get("port")))
    errors = cap.change_targets("deregister", by_tg)
    for arn, targets in by_tg.items():
        for iid, _port in targets:
            if arn in errors:
                results[iid] = _out(results, iid, "drain_failed", errors[arn])
            else:
                done_by.setdefault(iid, []).append(next(tg for tg in explicit[iid] if tg["arn"] == arn))
    waiting = {iid: t for iid, t in watch.items() if iid not in results or results[iid]["outcome"] == "success"}
    deadlines = {p["instance_id"]: started + p["drain_timeout"] for p in plans}
    _done, late, states = cap.wait_targets(waiting, lambda state, _reason: state not in DRAINING, deadlines)
    plan_of = {p["instance_id"]: p for p in plans}
    for iid in waiting:
        if iid in late:
            still = [tg_name(arn) for arn, _p in watch[iid] if (states.get((arn, iid)) or (None,))[0] in DRAINING]
            error = f"still draining after {plan_of[iid]['drain_timeout']} s: {', '.join(still) or 'unknown'}"
            results[iid] = _out(results, iid, "drain_timed_out", error)
        else:
            results[iid] = _out(results, iid, "success", None)
    for iid, res in results.items():
        res["deregistered"] = [dict(arn=tg["arn"], name=tg.get("name"), port=tg.get("port")) for tg in done_by.get(iid, [])]
        res["drain_tagged"] = iid in values and iid not in failed_tags and values[iid] is not None
    return [results[p["instance_id"]] for p in plans if p["instance_id"] in results]


def _out(results, iid, outcome, error):
    """A take_out result, keeping what an earlier stage recorded (the standby group)."""
    res = dict(results.get(iid) or {}, instance_id=iid, outcome=outcome, error=error)
    res.setdefault("standby", None)
    return res


def _enter_standby(cap, plans, timeout, results):
    """EnterStandby with ShouldDecrementDesiredCapacity, never below MinSize; waits for Standby. Returns attached TGs."""
    by_asg = group_by(plans, lambda p: p["asg_name"])
    try:
        groups = cap.groups(by_asg)
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        for p in plans:
            results[p["instance_id"]] = _out(results, p["instance_id"], "standby_failed",
                                             aws_error_message(e, "autoscaling:DescribeAutoScalingGroups"))
        return {}
    attached, todo = {}, {}
    for name, members in sorted(by_asg.items()):
        group = groups.get(name)
        if group is None:
            for p in members:
                results[p["instance_id"]] = _out(results, p["instance_id"], "standby_failed", f"Auto Scaling group {name} not found")
            continue
        attached[name] = set(group.get("TargetGroupARNs") or [])
        # With ShouldDecrementDesiredCapacity the desired capacity may not go below MinSize (EnterStandby API reference):
        # only as many members as the room above MinSize; the others are never patched in service, MinSize is not touched.
        room = max(0, int(group.get("DesiredCapacity", 0)) - int(group.get("MinSize", 0)))
        for p in members[room:]:
            results[p["instance_id"]] = _out(
                results, p["instance_id"], "min_size",
                f"EnterStandby would take {name} below its MinSize {group.get('MinSize')} (desired capacity {group.get('DesiredCapacity')})")
        todo[name] = [p["instance_id"] for p in members[:room]]
    failed = cap.set_tags({iid: {T.STANDBY: name} for name, ids in todo.items() for iid in ids})
    for iid, error in failed.items():
        results[iid] = _out(results, iid, "standby_failed", error)
    asked = {name: [i for i in ids if i not in failed] for name, ids in todo.items()}
    refused = cap.standby_call("enter", asked)
    for iid, error in refused.items():
        results[iid] = _out(results, iid, "min_size" if min_size_refusal(error) else "standby_failed", error)
    cap.clear_tags(list(refused), [T.STANDBY])
    entered = {name: [i for i in ids if i not in refused] for name, ids in asked.items()}
    entered = {name: ids for name, ids in entered.items() if ids}
    # EnteringStandby lasts until the group's target groups have drained the instance (Auto Scaling User Guide,
    # "Temporarily remove instances from your Auto Scaling group"): the wait allows the drain's bound on top of its own.
    drain = {p["instance_id"]: p["drain_timeout"] for p in plans}
    limit = timeout + max((drain[i] for ids in entered.values() for i in ids), default=0)
    _reached, late = cap.wait_lifecycle(entered, "Standby", cap.clock() + limit)
    for name, ids in entered.items():
        for iid in ids:
            if iid in late:
                results[iid] = _out(results, iid, "standby_failed", f"not in Standby in {name} after {limit:g} s")
            else:
                results[iid] = _out(results, iid, "success", None)
            results[iid]["standby"] = name  # asked to enter: put back (ExitStandby) if it is there
    return attached


def put_back(cap, outs, healthy_timeout, standby_timeout):
    """After the patch (or its rollback, or a failure): ExitStandby, RegisterTargets with the same ports, then the wait
    until every serving target is healthy. outs: [{instance_id, plan, deregistered, standby, back_in}]."""
    results = {o["instance_id"]: result(o["instance_id"], "success", None, back_in=True) for o in outs}
    todo_exit = {}
    for o in outs:
        if o.get("standby") and not o.get("back_in"):
            todo_exit.setdefault(o["standby"], []).append(o["instance_id"])
    if todo_exit:
        for iid, error in _exit_standby(cap, todo_exit, standby_timeout).items():
            results[iid].update(outcome="exit_failed", error=error, back_in=False)
    by_tg = {}
    for o in outs:
        if not o.get("back_in"):
            for tg in o.get("deregistered") or []:
                by_tg.setdefault(tg["arn"], []).append((o["instance_id"], tg.get("port")))
    errors = cap.change_targets("register", by_tg)
    for arn, error in errors.items():
        for iid, _port in by_tg[arn]:
            results[iid].update(outcome="register_failed", error=error, back_in=False)
    registered = [o["instance_id"] for o in outs if o.get("deregistered") and not o.get("back_in")
                  and results[o["instance_id"]]["outcome"] == "success"]
    if registered:
        cap.clear_tags(registered, T.DRAINED_KEYS)
    watch = {o["instance_id"]: [(tg["arn"], tg.get("port")) for tg in o["plan"]["target_groups"]] for o in outs
             if results[o["instance_id"]]["outcome"] == "success"}
    deadline = cap.clock() + healthy_timeout
    _done, late, states = cap.wait_targets(watch, _serving, {iid: deadline for iid in watch})
    for iid in late:
        bad = [f"{tg_name(arn)} {'/'.join(filter(None, states.get((arn, iid)) or ('unknown',)))}"
               for arn, _p in watch[iid] if not _serving(*(states.get((arn, iid)) or (None, None)))]
        results[iid].update(outcome="unhealthy", error=f"not healthy after {healthy_timeout} s: {', '.join(bad)}")
    return [results[o["instance_id"]] for o in outs]


def _serving(state, reason):
    """A target is back when healthy, or when it serves nothing anyway (zone not enabled, group unused)."""
    return state == "healthy" or (state == "unused" and reason == NOT_IN_USE)


def _exit_standby(cap, by_asg, timeout):
    """ExitStandby (after EnteringStandby has ended), then the wait for InService; clears the standby tag. {iid: error}."""
    errors = {}
    deadline = cap.clock() + timeout
    states = _states(cap, by_asg)
    entering = {name: [i for i in ids if states.get(i) == "EnteringStandby"] for name, ids in by_asg.items()}
    if any(entering.values()):
        cap.wait_lifecycle({n: ids for n, ids in entering.items() if ids}, "Standby", deadline)
        states = _states(cap, by_asg)
    # Only members in Standby can leave it; one never there (InService, Pending) is back already.
    asked = {name: [i for i in ids if states.get(i, "Standby") == "Standby"] for name, ids in by_asg.items()}
    refused = cap.standby_call("exit", {n: ids for n, ids in asked.items() if ids})
    errors.update(refused)
    waiting = {name: [i for i in ids if i not in refused] for name, ids in by_asg.items()}
    _reached, late = cap.wait_lifecycle({n: ids for n, ids in waiting.items() if ids}, "InService", deadline)
    for iid in late:
        errors[iid] = f"not InService after {timeout} s (last state {states.get(iid) or 'unknown'})"
    back = [i for ids in waiting.values() for i in ids if i not in late]
    if back:
        cap.clear_tags(back, [T.STANDBY])
    return errors


def _states(cap, names):
    """{iid: LifecycleState}; {} when the read fails (ExitStandby is then asked for every instance)."""
    try:
        return cap.lifecycle(names)[0]
    except Exception as e:  # pylint: disable=broad-except
        if not is_aws_error(e):
            raise
        return {}


def recover(cap, tagged, standby_timeout):
    """What an earlier run left out of service (its tags): register the drained target groups, ExitStandby. tagged {iid: tags}."""
    results = {}
    drained = {iid: recovery_of(tags)[0] for iid, tags in tagged.items()}
    standby = {iid: recovery_of(tags)[1] for iid, tags in tagged.items()}
    names = {name for items in drained.values() for name, _port in items}
    arns = cap.arns_by_name(names) if names else {}
    by_tg, missing = {}, {}
    for iid, items in drained.items():
        for name, port in items:
            if name in arns:
                by_tg.setdefault(arns[name], []).append((iid, port))
            else:
                missing.setdefault(iid, []).append(name)
    errors = cap.change_targets("register", by_tg)
    failed = {iid: error for arn, error in errors.items() for iid, _p in by_tg[arn]}
    # A target group gone since is nothing to register with: the tag is cleared all the same.
    done = [iid for iid, items in drained.items() if items and iid not in failed]
    if done:
        cap.clear_tags(done, T.DRAINED_KEYS)
    by_asg = group_by([iid for iid, name in standby.items() if name], lambda iid: standby[iid])
    if by_asg:
        failed.update(_exit_standby(cap, by_asg, standby_timeout))
    for iid in tagged:
        results[iid] = result(iid, "failed" if iid in failed else "success", failed.get(iid),
                              registered=sorted({name for name, _p in drained[iid]} - set(missing.get(iid, []))),
                              exited_standby=standby[iid] if iid not in failed else None)
    return [results[iid] for iid in tagged]
