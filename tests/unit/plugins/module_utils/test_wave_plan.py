"""The wave plan: canary, zones, the disruption budget and the serial bounds, without AWS."""

import math

import pytest

from ansible_collections.cms.patching.plugins.module_utils import wave_plan as P


def fleet(zones, per_zone, costs=None):
    """Candidates i-<zone><n> in play order zone a first, with optional costs per id."""
    costs = costs or {}
    out = []
    for z in zones:
        for n in range(per_zone):
            iid = f"i-{z}{n:02d}"
            out.append({"id": iid, "zone": f"us-east-1{z}", "costs": costs.get(iid, {})})
    return out


def zone(iid):
    return "us-east-1" + iid[2]


def check_budget(plan, candidates, rooms):
    by_id = {c["id"]: c for c in candidates}
    for wave in plan["waves"]:
        used = {}
        for iid in wave:
            for key, cost in by_id[iid]["costs"].items():
                used[key] = used.get(key, 0) + cost
        assert all(used[k] <= rooms.get(k, 0) for k in used if used[k]), (wave, used)


def test_canary_is_one_instance_then_spread_waves_hold_their_share_of_each_zone():
    candidates = fleet("abc", 10)
    plan = P.plan_waves(candidates, {}, serial=[1, "20%"])
    waves = plan["waves"]
    assert waves[0] == ["i-a00"] and plan["skipped"] == {}
    assert sorted(i for w in waves for i in w) == sorted(c["id"] for c in candidates)
    remaining = [c["id"] for c in candidates if c["id"] != "i-a00"]
    for wave in waves[1:]:
        assert len(wave) <= 6  # 20% of 30
        zones = [zone(i) for i in wave]
        assert len(set(zones)) == 3  # mixes zones
        for z in set(zones):
            left = sum(1 for i in remaining if zone(i) == z)
            assert zones.count(z) <= math.ceil(len(wave) * left / len(remaining))
        remaining = [i for i in remaining if i not in wave]


def test_spread_with_unequal_zones_never_takes_a_small_zone_at_once():
    candidates = fleet("a", 12) + fleet("b", 2)[:2]
    plan = P.plan_waves(candidates, {}, serial=[1, 4])
    for wave in plan["waves"][1:]:
        assert sum(1 for i in wave if zone(i) == "us-east-1b") <= 1, plan


def test_zone_by_zone_waves_hold_one_zone_each_and_zones_go_in_turn():
    candidates = fleet("cab", 5)
    plan = P.plan_waves(candidates, {}, strategy="zone_by_zone", serial=[1, 2])
    zones = [{zone(i) for i in w} for w in plan["waves"]]
    assert all(len(z) == 1 for z in zones)
    order = [z.pop() for z in zones]
    assert order == sorted(order)  # a, then b, then c; never back
    assert plan["waves"][0] == ["i-a00"] and [len(w) for w in plan["waves"]] == [1, 2, 2, 2, 2, 1, 2, 2, 1]


def test_serial_sizes_are_upper_bounds_resolved_like_ansible():
    assert P.resolve_sizes([1, "10%", "25%"], 40) == [1, 4, 10]
    assert P.resolve_sizes(["10%"], 5) == [1]  # int(0.5) or 1
    assert P.resolve_sizes("3", 9) == [3]
    plan = P.plan_waves(fleet("a", 40), {}, serial=[1, "10%", "25%"])
    assert [len(w) for w in plan["waves"]] == [1, 4, 10, 10, 10, 5]


def test_a_first_size_above_one_asks_for_no_canary_of_one():
    plan = P.plan_waves(fleet("ab", 3), {}, serial=["100%"])
    assert [len(w) for w in plan["waves"]] == [6]


def test_budget_counts_members_already_unhealthy():
    # One target group of 6 targets, 2 already unhealthy: floor ceil(3) = 3 healthy, 4 healthy -> room 1.
    members = {f"i-a{n:02d}": {"tg:x": 1} for n in range(4)}
    members.update({f"i-a{n:02d}": {"tg:x": 0} for n in range(4, 6)})
    candidates = fleet("a", 6, members)
    rooms, _reasons = P.group_rooms({"target_groups": {"x": {"members": 6, "healthy": 4}}}, 50, "skip")
    assert rooms == {"tg:x": 1}
    plan = P.plan_waves(candidates, rooms, serial=[1, 3])
    check_budget(plan, candidates, rooms)
    assert plan["skipped"] == {}
    # The unhealthy ones cost nothing, so they ride along with a healthy one.
    assert all(sum(members[i]["tg:x"] for i in w) <= 1 for w in plan["waves"])
    assert len(plan["waves"]) == 4


def test_unused_target_groups_are_ignored():
    entry = {"target_groups": [{"arn": "u", "state": "unused"}, {"arn": "x", "state": "healthy"}, {"arn": "x", "state": "initial"}]}
    assert P.instance_costs(entry, "skip") == {"tg:x": 1}


def test_single_member_target_group_with_a_50_percent_floor_is_capacity_budget():
    candidates = fleet("ab", 2, {"i-a00": {"tg:solo": 1}})
    rooms, reasons = P.group_rooms({"target_groups": {"solo": {"members": 1, "healthy": 1}}}, 50, "skip")
    plan = P.plan_waves(candidates, rooms, reasons)
    assert plan["skipped"] == {"i-a00": "capacity_budget"}
    assert "i-a00" not in [i for w in plan["waves"] for i in w]
    assert plan["waves"][0] == ["i-a01"]  # the canary is the first instance that fits


def test_allow_below_budget_puts_them_last_one_per_wave():
    costs = {"i-a00": {"tg:solo": 1}, "i-a01": {"tg:duo": 1}, "i-a02": {"tg:duo": 1}}
    candidates = fleet("a", 5, costs)
    rooms = {"tg:solo": 0, "tg:duo": 0}
    plan = P.plan_waves(candidates, rooms, serial=[1, "100%"], allow_below_budget=True)
    assert plan["skipped"] == {}
    assert plan["waves"] == [["i-a03"], ["i-a04"], ["i-a00"], ["i-a01"], ["i-a02"]]


def test_standby_room_is_desired_minus_min_size():
    topology = {"auto_scaling_groups": {
        "g1": {"members": 6, "healthy": 6, "min_size": 4, "desired_capacity": 6},
        "g0": {"members": 2, "healthy": 2, "min_size": 2, "desired_capacity": 2}}}
    rooms, reasons = P.group_rooms(topology, 50, "standby")
    assert rooms == {"asg:g1": 3, "standby:g1": 2, "asg:g0": 1, "standby:g0": 0}
    asg = {"lifecycle_state": "InService", "health_status": "Healthy"}
    candidates = []
    for n in range(6):
        costs = P.instance_costs({"asg": dict(asg, arn="g1")}, "standby")
        candidates.append({"id": f"i-g1{n}", "zone": "us-east-1" + "abc"[n % 3], "costs": costs})
    for n in range(2):
        candidates.append({"id": f"i-g0{n}", "zone": "us-east-1a", "costs": P.instance_costs({"asg": dict(asg, arn="g0")}, "standby")})
    plan = P.plan_waves(candidates, rooms, reasons, allow_below_budget=True, serial=[1, "100%"])
    # g0 cannot lose desired capacity at all: never patched in service, even with allow_below_budget.
    assert plan["skipped"] == {"i-g00": "asg_min_size", "i-g01": "asg_min_size"}
    assert all(len(w) <= 2 for w in plan["waves"])
    check_budget(plan, candidates, rooms)
    assert sorted(i for w in plan["waves"] for i in w) == [f"i-g1{n}" for n in range(6)]


def test_in_place_counts_the_group_but_not_standby_and_skip_counts_nothing():
    entry = {"asg": {"arn": "g", "lifecycle_state": "InService", "health_status": "Healthy"}}
    assert P.instance_costs(entry, "in_place") == {"asg:g": 1}
    assert P.instance_costs(entry, "skip") == {}
    standby = {"asg": {"arn": "g", "lifecycle_state": "Standby", "health_status": "Healthy"}}
    assert P.instance_costs(standby, "standby") == {"asg:g": 0, "standby:g": 1}


@pytest.mark.parametrize("strategy", ["spread", "zone_by_zone"])
def test_two_target_groups_across_three_zones_stay_within_budget(strategy):
    # tg web: 9 members (3 per zone), all healthy; tg api: 6 members, one out already.
    costs = {}
    for n, c in enumerate(fleet("abc", 3)):
        costs[c["id"]] = {"tg:web": 1}
        if n < 6:
            costs[c["id"]]["tg:api"] = 0 if n == 5 else 1
    candidates = fleet("abc", 3, costs)
    topology = {"target_groups": {"web": {"members": 9, "healthy": 9}, "api": {"members": 6, "healthy": 5}}}
    rooms, reasons = P.group_rooms(topology, 50, "skip")
    assert rooms == {"tg:web": 4, "tg:api": 2}
    plan = P.plan_waves(candidates, rooms, reasons, strategy=strategy, serial=[1, "100%"])
    check_budget(plan, candidates, rooms)
    assert sorted(i for w in plan["waves"] for i in w) == sorted(costs)
    if strategy == "zone_by_zone":
        assert all(len({zone(i) for i in w}) == 1 for w in plan["waves"])


def test_previous_plan_is_followed_and_new_instances_come_after():
    candidates = fleet("ab", 3)
    first = P.plan_waves(candidates, {}, serial=[1, 2])
    previous = {iid: n for n, wave in enumerate(first["waves"], 1) for iid in wave}
    again = P.plan_waves(list(reversed(candidates)), {}, serial=[1, 2], previous=previous)
    as_sets = [set(w) for w in first["waves"]]
    assert [set(w) for w in again["waves"]] == as_sets
    newcomer = {"id": "i-new", "zone": "us-east-1a", "costs": {}}
    grown = P.plan_waves(candidates + [newcomer], {}, serial=[1, 2], previous=previous)
    assert [set(w) for w in grown["waves"][:-1]] == as_sets and grown["waves"][-1] == ["i-new"]


def test_previous_plan_that_now_breaks_the_budget_is_split():
    costs = {f"i-a{n:02d}": {"tg:x": 1} for n in range(4)}
    candidates = fleet("a", 4, costs)
    previous = {"i-a00": 1, "i-a01": 2, "i-a02": 2, "i-a03": 2}  # planned when the group had room 2
    plan = P.plan_waves(candidates, {"tg:x": 1}, previous=previous)
    check_budget(plan, candidates, {"tg:x": 1})
    assert plan["waves"][:2] == [["i-a00"], ["i-a01"]] and sorted(i for w in plan["waves"] for i in w) == sorted(costs)


@pytest.mark.parametrize("strategy, pct, message", [
    ("zigzag", 50, "cms_patching_wave_strategy must be one of spread, zone_by_zone; got 'zigzag'"),
    ("spread", 101, "cms_patching_min_healthy_percent must be a number from 0 to 100; got 101"),
    ("spread", -1, "from 0 to 100"),
    ("spread", "half", "from 0 to 100"),
])
def test_bad_settings_are_one_line(strategy, pct, message):
    with pytest.raises(P.PlanError) as err:
        P.plan_waves([], {}, strategy=strategy, min_healthy_percent=pct)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_floor_rounds_up_and_zero_or_hundred_percent():
    assert P.floor_of(3, 50) == 2 and P.floor_of(4, 50) == 2 and P.floor_of(10, 0) == 0 and P.floor_of(10, 100) == 10
    assert P.budget_room(10, 10, 100) == 0 and P.budget_room(10, 7, 0) == 7


def test_wave_tags_belong_to_one_run():
    value = P.wave_tag_value("run-7", 3)
    assert value == "run-7/3" and P.read_wave_tag(value, "run-7") == 3
    assert P.read_wave_tag(value, "run-8") is None and P.read_wave_tag("run-7/x", "run-7") is None and P.read_wave_tag(None, "r") is None


def test_empty_fleet_has_an_empty_plan():
    assert P.plan_waves([], {}) == {"waves": [], "numbers": [], "skipped": {}}


def test_a_limited_read_back_keeps_the_wave_numbers_and_new_waves_come_after():
    candidates = fleet("a", 4)
    previous = {"i-a00": 1, "i-a01": 3, "i-a02": 3}  # a --limit left wave 2 out; i-a03 is new
    plan = P.plan_waves(candidates, {}, previous=previous, serial=[1, 5])
    assert plan["waves"] == [["i-a00"], ["i-a01", "i-a02"], ["i-a03"]] and plan["numbers"] == [1, 3, 4]
    fresh = P.plan_waves(candidates, {}, serial=[1, 5])
    assert fresh["numbers"] == [1, 2]
