# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wave plan: every eligible instance gets a wave before the first change, within a disruption budget.

Pure functions, no AWS. Inputs come from discovery (module_utils/topology.py): each instance's zone, its targets in
ELBv2 target groups and its Auto Scaling group, and each group's member counts.

The budget is counted per *group key*: a target group (`tg:<arn>`), an Auto Scaling group (`asg:<arn>`) and, with
asg_mode standby, the group's standby room (`standby:<arn>`). Each key has a room (how many of its units one wave may
take out) and each instance a cost per key (how many units it takes out). A wave never takes more than a key's room.

- target group: units are its targets that are not `unused`; room = healthy - ceil(members * min_healthy_percent /
  100). Members already unhealthy, initial or draining count as members, never as healthy. An instance costs its
  healthy targets there (taking out an unhealthy target loses no healthy one).
- Auto Scaling group (asg_mode in_place or standby): the same rule over its instances, healthy meaning InService and
  Healthy.
- standby room (asg_mode standby): DesiredCapacity - MinSize, since EnterStandby with ShouldDecrementDesiredCapacity
  must leave the desired capacity at or above MinSize (Auto Scaling User Guide, "Temporarily remove instances from your
  Auto Scaling group"); every member costs 1. A room below 1 gives reason asg_min_size.
"""

from __future__ import annotations

import math

STRATEGIES = ("spread", "zone_by_zone")
ASG_MODES = ("skip", "in_place", "standby")
CAPACITY_BUDGET = "capacity_budget"
ASG_MIN_SIZE = "asg_min_size"
DEFAULT_SERIAL = (1, "10%", "25%")


class PlanError(ValueError):
    """A plan setting Ansible would only refuse later (or never)."""


# --- settings ----------------------------------------------------------------------------------------------------

def check_settings(strategy, min_healthy_percent, serial=DEFAULT_SERIAL):
    """Raise PlanError (one line) for an unknown strategy, a percentage outside 0..100 or a bad serial entry."""
    if strategy not in STRATEGIES:
        raise PlanError(f"cms_patching_wave_strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    try:
        pct = float(min_healthy_percent)
    except (TypeError, ValueError):
        pct = -1.0
    if isinstance(min_healthy_percent, bool) or not 0 <= pct <= 100:
        raise PlanError(f"cms_patching_min_healthy_percent must be a number from 0 to 100; got {min_healthy_percent!r}")
    resolve_sizes(serial, 1)
    return pct


def resolve_sizes(serial, count):
    """cms_patching_serial as wave-size upper bounds, percentages taken of `count` as Ansible's serial does
    (ansible.utils.helpers.pct_to_int: the share rounded down, at least 1)."""
    entries = list(serial) if isinstance(serial, (list, tuple)) else [serial]
    if not entries:
        entries = list(DEFAULT_SERIAL)
    sizes = []
    for entry in entries:
        text = str(entry).strip()
        try:
            if text.endswith("%"):
                size = int(int(text[:-1]) / 100.0 * count) or 1
            else:
                size = int(text)
        except ValueError:
            raise PlanError(f"cms_patching_serial entries must be numbers of hosts or percentages; got {entry!r}") from None
        if size < 1:
            raise PlanError(f"cms_patching_serial entries must be at least 1 host or 1%; got {entry!r}")
        sizes.append(size)
    return sizes


def bound(sizes, index):
    """The upper bound of wave `index` (0-based): Ansible keeps using the last size once the list is used up."""
    return sizes[min(index, len(sizes) - 1)]


# --- rooms and costs ---------------------------------------------------------------------------------------------

def floor_of(members, min_healthy_percent):
    """The fewest healthy members a group may keep: min_healthy_percent of its members, rounded up."""
    return int(math.ceil(members * float(min_healthy_percent) / 100.0 - 1e-9))


def budget_room(members, healthy, min_healthy_percent):
    return healthy - floor_of(members, min_healthy_percent)


def blocking_reason(costs, rooms, reasons):
    """The reason an instance fits in no wave at all (a key it costs whose room is below its cost), or None.

    asg_min_size wins over capacity_budget: AWS itself would refuse that standby, so no setting can allow it.
    """
    found = None
    for key, cost in costs.items():
        if cost > 0 and rooms.get(key, 0) < cost:
            reason = reasons.get(key, CAPACITY_BUDGET)
            if reason == ASG_MIN_SIZE:
                return ASG_MIN_SIZE
            found = reason
    return found


def fits(costs, used, rooms):
    return all(used.get(key, 0) + cost <= rooms.get(key, 0) for key, cost in costs.items() if cost > 0)


def take(costs, used):
    for key, cost in costs.items():
        if cost > 0:
            used[key] = used.get(key, 0) + cost


# --- orders ------------------------------------------------------------------------------------------------------

def zone_of(candidate):
    return candidate.get("zone") or ""


def spread_order(candidates):
    """Zones interleaved in proportion to their size, each zone keeping its own (play) order.

    Instance j of a zone of n sits at (j + 0.5) / n of the sequence, so any run of the sequence holds about its share
    of every zone.
    """
    by_zone = {}
    for c in candidates:
        by_zone.setdefault(zone_of(c), []).append(c)
    zone_rank = {z: i for i, z in enumerate(by_zone)}
    keyed = [((j + 0.5) / len(members), zone_rank[z], c) for z, members in by_zone.items() for j, c in enumerate(members)]
    return [c for _pos, _rank, c in sorted(keyed, key=lambda k: (k[0], k[1]))]


def zone_order(candidates):
    """Zone by zone (zones by name), each zone in play order."""
    zones = sorted({zone_of(c) for c in candidates})
    return [c for z in zones for c in candidates if zone_of(c) == z]


# --- the plan ----------------------------------------------------------------------------------------------------

def zone_quotas(remaining, size):
    """Per zone, at most its share (rounded up) of a wave of `size` out of what is left to place."""
    counts = {}
    for c in remaining:
        counts[zone_of(c)] = counts.get(zone_of(c), 0) + 1
    size = min(size, len(remaining))
    return {z: int(math.ceil(size * n / float(len(remaining)))) for z, n in counts.items()}


def next_wave(remaining, size, rooms, strategy):
    """One wave from `remaining` (already in the strategy's order): at most `size`, within every room and quota."""
    if strategy == "zone_by_zone":
        quotas = {zone_of(remaining[0]): size}
    else:
        quotas = zone_quotas(remaining, size)
    wave, used, per_zone = [], {}, {}
    for c in remaining:
        if len(wave) >= size:
            break
        zone = zone_of(c)
        if per_zone.get(zone, 0) >= quotas.get(zone, 0) or not fits(c["costs"], used, rooms):
            continue
        wave.append(c)
        take(c["costs"], used)
        per_zone[zone] = per_zone.get(zone, 0) + 1
    return wave


def fill_waves(candidates, rooms, strategy, sizes, first_index, canary):
    """Waves for placeable candidates; the first one a canary of one when `canary` is set."""
    ordered = zone_order(candidates) if strategy == "zone_by_zone" else list(candidates)
    waves = []
    if canary and ordered:
        waves.append([ordered[0]])
        ordered = ordered[1:]
    remaining = ordered if strategy == "zone_by_zone" else spread_order(ordered)
    index = first_index + len(waves)
    while remaining:
        wave = next_wave(remaining, bound(sizes, index), rooms, strategy)
        placed = {id(c) for c in wave}
        remaining = [c for c in remaining if id(c) not in placed]
        waves.append(wave)
        index += 1
    return waves


def pinned_waves(candidates, previous, rooms):
    """A plan read back from the instances' tags, kept (with its wave numbers) where it still fits today's rooms; the
    rest is released. Returns (waves, their numbers, released candidates)."""
    by_wave = {}
    for c in candidates:
        if c["id"] in previous:
            by_wave.setdefault(previous[c["id"]], []).append(c)
    waves, numbers, released = [], [], []
    for number in sorted(by_wave):
        wave, used = [], {}
        for c in by_wave[number]:
            if fits(c["costs"], used, rooms):
                wave.append(c)
                take(c["costs"], used)
            else:
                released.append(c)
        if wave:
            waves.append(wave)
            numbers.append(number)
    return waves, numbers, released


def plan_waves(candidates, rooms, reasons=None, min_healthy_percent=50, strategy="spread", serial=DEFAULT_SERIAL,
               allow_below_budget=False, previous=None):
    """The wave plan of the eligible `candidates` ([{id, zone, costs: {key: units}}], in play order).

    rooms: {key: units one wave may take out}; reasons: {key: reason when an instance cannot fit} (capacity_budget by
    default, asg_min_size for standby rooms); previous: {id: wave number} of this run's plan read back from tags.
    Returns {"waves": [[id, ...], ...], "numbers": [wave number of each], "skipped": {id: reason}}: numbers are 1, 2, ...
    for a new plan; a plan read back keeps its numbers (a --limit may leave gaps) and new waves come after it.

    Wave 1 is the canary, one instance, when the first serial size is 1 (the default); the later waves follow the
    strategy, each at most its serial size. Instances that fit in no wave are skipped with their reason; with
    allow_below_budget those of capacity_budget go last, one per wave.
    """
    check_settings(strategy, min_healthy_percent, serial)
    reasons = reasons or {}
    previous = previous or {}
    sizes = resolve_sizes(serial, len(candidates))
    blocked, placeable = {}, []
    for c in candidates:
        reason = blocking_reason(c["costs"], rooms, reasons)
        if reason:
            blocked[c["id"]] = reason
        else:
            placeable.append(c)

    waves, numbers, released = pinned_waves(placeable, previous, rooms)
    fresh = [c for c in placeable if c["id"] not in previous] + released
    fresh_ids = {c["id"] for c in fresh}
    fresh = [c for c in placeable if c["id"] in fresh_ids]  # back in play order
    last = max(numbers) if numbers else 0
    waves += fill_waves(fresh, rooms, strategy, sizes, last, canary=not waves and bound(sizes, 0) == 1)

    skipped = {}
    tail = []
    for c in candidates:
        reason = blocked.get(c["id"])
        if reason == CAPACITY_BUDGET and allow_below_budget:
            tail.append([c])
        elif reason:
            skipped[c["id"]] = reason
    numbers += list(range(last + 1, last + 1 + len(waves) + len(tail) - len(numbers)))
    return {"waves": [[c["id"] for c in wave] for wave in waves + tail], "numbers": numbers, "skipped": skipped}


# --- inputs from discovery ---------------------------------------------------------------------------------------

def healthy_target(target):
    return target.get("state") == "healthy"


def instance_costs(entry, asg_mode):
    """{key: units} an instance takes out: its healthy targets per target group (unused ones count nowhere), and with
    asg_mode in_place or standby one unit of its Auto Scaling group when it is InService and Healthy, plus (standby)
    one unit of the group's standby room."""
    costs = {}
    for target in entry.get("target_groups") or []:
        if target.get("state") == "unused":
            continue
        key = "tg:" + target["arn"]
        costs[key] = costs.get(key, 0) + (1 if healthy_target(target) else 0)
    asg = entry.get("asg") or {}
    if asg and asg_mode in ("in_place", "standby"):
        in_service = asg.get("lifecycle_state") == "InService" and asg.get("health_status", "Healthy") == "Healthy"
        costs["asg:" + asg["arn"]] = 1 if in_service else 0
        if asg_mode == "standby":
            costs["standby:" + asg["arn"]] = 1
    return costs


def group_rooms(topology, min_healthy_percent, asg_mode):
    """({key: room}, {key: reason}) from discovery's topology summary ({target_groups: {arn: {members, healthy}},
    auto_scaling_groups: {arn: {members, healthy, min_size, desired_capacity}}})."""
    rooms, reasons = {}, {}
    for arn, tg in (topology.get("target_groups") or {}).items():
        rooms["tg:" + arn] = budget_room(tg["members"], tg["healthy"], min_healthy_percent)
    if asg_mode in ("in_place", "standby"):
        for arn, asg in (topology.get("auto_scaling_groups") or {}).items():
            rooms["asg:" + arn] = budget_room(asg["members"], asg["healthy"], min_healthy_percent)
            if asg_mode == "standby":
                rooms["standby:" + arn] = int(asg["desired_capacity"]) - int(asg["min_size"])
                reasons["standby:" + arn] = ASG_MIN_SIZE
    return rooms, reasons


def wave_tag_value(run_id, number):
    """The value of the wave tag: `<run id>/<wave>` (a run id has no '/'), so a later run reads back only its own plan."""
    return f"{run_id}/{number}"


def read_wave_tag(value, run_id):
    """The wave number a tag value gives for `run_id`, or None (another run's plan, or not a plan)."""
    text = str(value or "")
    tagged_run, sep, number = text.rpartition("/")
    if not sep or tagged_run != str(run_id) or not number.isdigit() or int(number) < 1:
        return None
    return int(number)
