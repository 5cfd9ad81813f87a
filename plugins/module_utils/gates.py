# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run's gates, read before each wave and watched during its bake: CloudWatch alarms and the operator's stop switch.

- Alarms: DescribeAlarms with AlarmTypes MetricAlarm and CompositeAlarm (without it, AWS returns metric alarms only),
  at most 100 AlarmNames per call (CloudWatch API Reference, DescribeAlarms), or one AlarmNamePrefix. Every configured
  alarm must exist, so a typo cannot switch the gate off. INSUFFICIENT_DATA is an alarm only when asked for.
- Stop switch: one SSM String parameter in the controller's default account and region. The value `stop` stops the
  run; a missing parameter (GetParameter: ParameterNotFound) means go.
- Target health (during the bake only): DescribeTargetHealth per serving target group with the wave's patched targets
  (capacity.Capacity.target_states), per account and region. A target in `unhealthy` is `bake_unhealthy`; `initial`
  (registration still checking) and `draining` are not (ELBv2 user guide, "Health checks for Application Load Balancer
  target groups": target health status).
- Verdicts: `alarm` (with the alarm's name) wins over `bake_unhealthy` (with the target group's name), which wins over
  `stop`; `unreadable` when a gate cannot be read (the run does not go on blind).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ansible_collections.cms.patching.plugins.module_utils.batching import chunked
from ansible_collections.cms.patching.plugins.module_utils.capacity import Capacity, serving_groups, tg_name
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, error_code, is_aws_error

ALARM_TYPES = ["MetricAlarm", "CompositeAlarm"]
NAMES_PER_CALL = 100  # DescribeAlarms AlarmNames: at most 100 items
STOP_VALUE = "stop"
DEFAULT_STOP_PARAMETER = "/cms-patching/stop"
VERDICTS = ("go", "alarm", "bake_unhealthy", "stop", "unreadable")
ENTRY_KEYS = ("name", "region", "role_arn", "external_id")


def normalise_alarms(alarms):
    """[{name, region, role_arn, external_id}] from names or dicts; one line of error for anything else."""
    out = []
    for item in alarms or []:
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise PatchingError(f"cms_patching_alarms: each entry must be an alarm name or a dict with a name; got {item!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS) - {"account_id"})
        if unknown:
            raise PatchingError(f"cms_patching_alarms: unknown key {unknown[0]} in {entry['name']} (allowed: {', '.join(ENTRY_KEYS)})")
        out.append({k: (entry.get(k) or None) for k in ENTRY_KEYS})
    return out


def validate(params):
    """One line for settings that cannot work, before any AWS call."""
    alarms = normalise_alarms(params.get("alarms"))
    prefix = params.get("alarm_prefix") or ""
    if alarms and prefix:
        raise PatchingError("set cms_patching_alarms or cms_patching_alarm_prefix, not both")
    if (params.get("bake_time") or 0) < 0:
        raise PatchingError(f"cms_patching_bake_time must be 0 or more seconds; got {params.get('bake_time')}")
    if (params.get("poll_interval") or 0) <= 0:
        raise PatchingError(f"the gate's poll_interval must be greater than 0; got {params.get('poll_interval')}")
    return alarms, prefix


def alarm_groups(alarms, default_region):
    """{(region, role_arn, external_id): [names]}: one DescribeAlarms series per account and region."""
    groups = {}
    for alarm in alarms:
        key = (alarm["region"] or default_region, alarm["role_arn"], alarm["external_id"])
        if alarm["name"] not in groups.setdefault(key, []):
            groups[key].append(alarm["name"])
    return groups


def describe_alarms(cloudwatch, names=None, prefix=None):
    """[{name, type, state, reason, updated}] of the named alarms (<= 100 per call) or of every alarm with the prefix."""
    requests = [{"AlarmNames": chunk} for chunk in chunked(names, NAMES_PER_CALL)] if names else [{"AlarmNamePrefix": prefix}]
    found = []
    for request in requests:
        token = None
        while True:
            page = cloudwatch.describe_alarms(AlarmTypes=ALARM_TYPES, **request, **({"NextToken": token} if token else {}))
            for kind, key in (("MetricAlarm", "MetricAlarms"), ("CompositeAlarm", "CompositeAlarms")):
                for alarm in page.get(key) or []:
                    updated = alarm.get("StateUpdatedTimestamp")
                    found.append({"name": alarm["AlarmName"], "type": kind, "state": alarm.get("StateValue"),
                                  "reason": alarm.get("StateReason"), "updated": updated.isoformat() if hasattr(updated, "isoformat") else updated})
            token = page.get("NextToken")
            if not token:
                break
    return found


def is_firing(alarm, on_missing_data=False):
    return alarm["state"] == "ALARM" or (on_missing_data and alarm["state"] == "INSUFFICIENT_DATA")


def read_stop(ssm, name):
    """The stop parameter's value, or None when it does not exist."""
    try:
        return ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except Exception as e:  # pylint: disable=broad-except
        if error_code(e) == "ParameterNotFound":
            return None
        raise


def set_stop(ssm, name, stop, check_mode=False):
    """Set the stop switch to `stop` or back to `go` (PutParameter, Overwrite); {changed, stop_value, previous}.

    Written even when it already says so: an operator who presses stop gets a fresh write, never a read they must trust."""
    previous = read_stop(ssm, name)
    value = STOP_VALUE if stop else "go"
    changed = previous != value
    if not check_mode:
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True,
                          Description="cms.patching stop switch: 'stop' starts no new patching wave (playbooks/stop.yml)")
    return {"changed": changed, "stop_value": value, "previous": previous}


def target_partitions(instances):
    """{(region, role_arn, external_id): {arn: [(iid, port)]}}: the instances' serving targets, per account and region."""
    parts = {}
    for inst in instances or []:
        key = (inst.get("region") or None, inst.get("role_arn") or None, inst.get("external_id") or None)
        for group in serving_groups(inst):
            targets = parts.setdefault(key, {}).setdefault(group["arn"], [])
            if (inst["instance_id"], group.get("port")) not in targets:
                targets.append((inst["instance_id"], group.get("port")))
    return parts


def first_unhealthy(states):
    """(target group name, instance id) of the first target in `unhealthy`, or None; `initial` and `draining` are not."""
    for (arn, iid), (state, _reason) in sorted(states.items()):
        if state == "unhealthy":
            return tg_name(arn), iid
    return None


class _Clients:
    """capacity.Capacity's `clients.get(service)` over client_for, for one account and region."""

    def __init__(self, client_for, key):
        self.client_for, self.key = client_for, key

    def get(self, service):
        return self.client_for(service, *self.key)


def read_target_health(client_for, partitions, default_region):
    """{(arn, iid): (state, reason)} of every partition, through capacity's batched DescribeTargetHealth reader.

    A read that failed (AWS error) or a wave target the answer did not describe leaves the bake blind: unless a target
    was seen `unhealthy` (the wave rolls back anyway), PatchingError with the first in one line, so the verdict is
    `unreadable`, never `go`. (The wave's own waits take such a read as a poll that saw nothing and poll on.)"""
    states, blind = {}, []
    for (region, role_arn, external_id), by_tg in sorted(partitions.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        cap = Capacity(_Clients(client_for, (region or default_region, role_arn, external_id)), time.monotonic, time.sleep, 0)
        errors = {}
        found = cap.target_states(by_tg, errors)
        blind += [errors[arn] for arn in sorted(errors)]
        blind += [f"elasticloadbalancing:DescribeTargetHealth gave no health for {iid} in target group {tg_name(arn)}"
                  for arn, targets in sorted(by_tg.items()) if arn not in errors for iid, _port in targets if (arn, iid) not in found]
        states.update(found)
    if blind and not first_unhealthy(states):
        raise PatchingError(blind[0] + (f" (and {len(blind) - 1} more)" if len(blind) > 1 else ""))
    return states


def decide(alarms, stop_value, on_missing_data=False, unhealthy=None):
    """The verdict of one read: {verdict, alarm_name, firing}. An alarm, then an unhealthy target (both roll back the
    wave), win over the stop switch. `unhealthy` is (target group name, instance id) or None."""
    firing = [a["name"] for a in alarms if is_firing(a, on_missing_data)]
    if firing:
        return {"verdict": "alarm", "alarm_name": firing[0], "firing": firing}
    if unhealthy:
        return {"verdict": "bake_unhealthy", "alarm_name": None, "firing": [], "target_group": unhealthy[0], "unhealthy_instance": unhealthy[1]}
    if (stop_value or "").strip().lower() == STOP_VALUE:
        return {"verdict": "stop", "alarm_name": None, "firing": []}
    return {"verdict": "go", "alarm_name": None, "firing": []}


class GateReader:
    """One read of every gate. client_for(service, region, role_arn, external_id) gives a boto3 client."""

    def __init__(self, client_for, alarms, prefix, default_region, stop_parameter, on_missing_data=False, targets=None):
        self.client_for = client_for
        self.partitions = target_partitions(targets)  # the wave's patched instances (bake only)
        self.groups = alarm_groups(alarms, default_region)
        self.prefix = prefix
        self.default_region = default_region
        self.stop_parameter = stop_parameter
        self.on_missing_data = on_missing_data
        self.reads = 0

    def alarms(self):
        """Every configured alarm with its state; PatchingError (one line) when one does not exist."""
        if self.prefix:
            found = describe_alarms(self.client_for("cloudwatch", self.default_region, None, None), prefix=self.prefix)
            if not found:
                raise PatchingError(f"cms_patching_alarm_prefix: no CloudWatch alarm (metric or composite) starts with "
                                    f"'{self.prefix}' in {self.default_region}")
            return [dict(a, region=self.default_region) for a in found]
        out = []
        for (region, role_arn, external_id), names in self.groups.items():
            found = {a["name"]: a for a in describe_alarms(self.client_for("cloudwatch", region, role_arn, external_id), names=names)}
            missing = [n for n in names if n not in found]
            if missing:
                where = f"{region}" + (f" through {role_arn}" if role_arn else "")
                raise PatchingError(f"cms_patching_alarms: no CloudWatch alarm (metric or composite) named "
                                    f"{', '.join(missing)} in {where}")
            out += [dict(found[n], region=region) for n in names]
        return out

    def read(self):
        """{verdict, alarm_name, firing, alarms, stop_value, error}; an AWS error gives the verdict `unreadable`.

        An alarm in ALARM wins over everything read after it (the wave rolls back), so it is decided before the stop
        switch and the target health are read: a failed read of those cannot turn a firing alarm into `unreadable`."""
        self.reads += 1
        stop = unhealthy = None
        try:
            alarms = self.alarms()
            if not any(is_firing(a, self.on_missing_data) for a in alarms):
                stop = read_stop(self.client_for("ssm", self.default_region, None, None), self.stop_parameter) if self.stop_parameter else None
                unhealthy = first_unhealthy(read_target_health(self.client_for, self.partitions, self.default_region)) if self.partitions else None
        except PatchingError as e:
            return {"verdict": "unreadable", "alarm_name": None, "firing": [], "alarms": [], "stop_value": None, "error": str(e)}
        except Exception as e:  # pylint: disable=broad-except
            if not is_aws_error(e):
                raise
            return {"verdict": "unreadable", "alarm_name": None, "firing": [], "alarms": [], "stop_value": None,
                    "error": aws_error_message(e, "reading the gates")}
        return dict(decide(alarms, stop, self.on_missing_data, unhealthy), alarms=alarms, stop_value=stop, error=None)


def watch(read, bake_time, poll_interval, clock=time.monotonic, sleep=time.sleep):
    """Read the gates until one says stop, or for bake_time seconds (a read at the start and one at the end or later).

    Returns the last read, with `polls` and `watched` (seconds by `clock`).
    """
    start = clock()
    polls = 0
    while True:
        state = read()
        polls += 1
        watched = clock() - start
        if state["verdict"] != "go" or watched >= bake_time:
            return dict(state, polls=polls, watched=round(watched, 3))
        sleep(min(poll_interval, bake_time - watched))


# ---------------------------------------------------------------- what the patching role does with a verdict

# The report's reason for the instances a gate leaves unpatched (docs/report-schema.md).
# approval_*: the operator's answer after the canary (a pause on the command line, an AWX approval node).
REASONS = {"alarm": "alarm", "bake_unhealthy": "bake_unhealthy", "stop": "stopped_by_operator", "unreadable": "gate_unreadable",
           "approval_denied": "approval_denied", "approval_timeout": "approval_timeout"}


def parse_waves(waves):
    """cms_patching_waves -> [(first, last or None)]: numbers from 1, or "N-" for wave N and every later one. Empty: all."""
    if waves in (None, "", []):
        return [(1, None)]
    items = waves if isinstance(waves, list) else [waves]
    ranges = []
    for item in items:
        text = str(item).strip()
        try:
            if text.endswith("-"):
                ranges.append((int(text[:-1]), None))
            else:
                ranges.append((int(text), int(text)))
        except ValueError:
            ranges = None
            break
        if ranges[-1][0] < 1:
            ranges = None
            break
    if not ranges:
        raise PatchingError(f"cms_patching_waves must list wave numbers from 1, or \"N-\" for wave N and later (such as [1] or [\"2-\"]); got {waves!r}")
    return ranges


def wave_selected(number, waves):
    return any(first <= int(number) and (last is None or int(number) <= last) for first, last in parse_waves(waves))


def held_entry(instance_id, verdict, alarm_name=None, wave=None, target_group=None):
    """Report entry of an instance a gate leaves unpatched."""
    entry = {"instance_id": instance_id, "final_status": "not_patched", "reason": REASONS[verdict]}
    if verdict == "alarm":
        entry["alarm_name"] = alarm_name
    if verdict == "bake_unhealthy":
        entry["target_group"] = target_group
    if wave is not None:
        entry["stop_wave"] = int(wave)
    return entry


def bake_rollback_entries(restored, alarm_name, target_group=None):
    """Report entries of the instances rolled back because an alarm fired (or, with `target_group`, a target turned
    unhealthy) during the bake (ssm_patch_wave mode=restore results): `rolled_back` with reason `alarm` (or
    `bake_unhealthy`), or `failed` (rollback_failed); the wave's own step times are kept."""
    entries = []
    for result in restored or []:
        entry = {"instance_id": result["instance_id"], "rollback": result.get("rollback")}
        entry.update({"target_group": target_group} if target_group else {"alarm_name": alarm_name})
        if result.get("final_status") == "rolled_back":
            entry.update(final_status="rolled_back", reason="bake_unhealthy" if target_group else "alarm")
        elif result.get("final_status") == "failed":
            entry.update(final_status="failed", reason=result.get("reason") or "rollback_failed")
        entries.append(entry)
    return entries


def approval_reason(hold, canary_ended_at=None, approval_timeout=0, now=None):
    """The reason a job run on an approval's failure path records (cms_patching_hold).

    approval_denied / approval_timeout are taken as given. approval_not_given decides between them: AWX sends a denial
    and a timeout down the same failure path and tells the next job neither, so the answer that came at or after the
    approval node's timeout (cms_patching_approval_timeout) from the end of the canary (cms_patching_canary_ended_at, which
    the canary job publishes) is a timeout; an earlier one, or one without both values, is a denial.
    """
    if hold != "approval_not_given":
        return hold
    if not canary_ended_at or not approval_timeout or int(approval_timeout) <= 0:
        return "approval_denied"
    ended = datetime.fromisoformat(str(canary_ended_at).replace("Z", "+00:00"))
    if ended.tzinfo is None:
        ended = ended.replace(tzinfo=timezone.utc)
    waited = ((now or datetime.now(timezone.utc)) - ended).total_seconds()
    return "approval_timeout" if waited >= int(approval_timeout) else "approval_denied"
