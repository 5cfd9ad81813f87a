"""The wave_plan filter: per-host results with waves and groups, the patching play's pattern and serial, the tags."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.cms.patching.plugins.filter.plan import wave_plan

TG = "arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/web/1"


def pair(n, zone="us-east-1a", eligible=True, tags=None, tgs=None):
    iid = f"i-{n:017x}"
    return {"host": f"h{n}", "result": {"instance_id": iid, "eligible": eligible, "reasons": [] if eligible else ["ssm_offline"],
                                        "zone": zone, "tags": tags or {}, "target_groups": tgs or []}}


def hostvars(pairs):
    return {p["host"]: {"instance_id": p["result"]["instance_id"], "region": "us-east-1", "account_id": "111111111111"} for p in pairs}


def test_pattern_serial_groups_and_tag_batches():
    healthy = [{"arn": TG, "state": "healthy"}]
    pairs = [pair(1, tgs=healthy), pair(2, "us-east-1b", tgs=healthy), pair(3, "us-east-1c", tgs=healthy), pair(4, eligible=False),
             pair(5, tgs=[{"arn": "solo", "state": "healthy"}])]
    scans = [{"asg_mode": "skip", "topology": {"target_groups": {TG: {"members": 4, "healthy": 4}, "solo": {"members": 1, "healthy": 1}}}}]
    plan = wave_plan(pairs, scans, hostvars(pairs), "run-1", 50, "spread", [1, 2])
    by_host = {h["host"]: h for h in plan["hosts"]}
    assert by_host["h5"]["result"]["reasons"] == ["capacity_budget"] and by_host["h5"]["groups"] == ["cms_patching_skipped"]
    assert by_host["h4"]["groups"] == ["cms_patching_skipped"] and by_host["h4"]["result"]["wave"] is None
    assert [w["hosts"] for w in plan["waves"]] == [["h1"], ["h2", "h3"]]
    assert by_host["h2"]["groups"] == ["cms_patching_wave_2"] and by_host["h2"]["result"]["wave"] == 2
    assert plan["pattern"] == "cms_patching_wave_1:cms_patching_wave_2" and plan["serial"] == [1, 2]
    assert [(b["value"], b["instance_ids"]) for b in plan["tag_batches"]] == [
        ("run-1/1", [pairs[0]["result"]["instance_id"]]), ("run-1/2", sorted(p["result"]["instance_id"] for p in pairs[1:3]))]


def test_tagged_plan_of_this_run_is_followed_and_not_tagged_again():
    pairs = [pair(1, tags={"cms-patching:wave": "run-1/2"}), pair(2, tags={"cms-patching:wave": "run-1/1"}),
             pair(3, tags={"cms-patching:wave": "other-run/1"})]
    plan = wave_plan(pairs, [], hostvars(pairs), "run-1", serial=["100%"])
    assert [w["hosts"] for w in plan["waves"]] == [["h2"], ["h1"], ["h3"]]
    assert [b["value"] for b in plan["tag_batches"]] == ["run-1/3"]


def test_a_limited_read_back_keeps_the_wave_numbers_and_groups():
    pairs = [pair(1, tags={"cms-patching:wave": "run-1/3"}), pair(2, tags={"cms-patching:wave": "run-1/1"})]
    plan = wave_plan(pairs, [], hostvars(pairs), "run-1")
    assert plan["pattern"] == "cms_patching_wave_1:cms_patching_wave_3" and plan["serial"] == [1, 1]
    assert [w["wave"] for w in plan["waves"]] == [1, 3] and plan["tag_batches"] == []
    assert {h["host"]: h["groups"] for h in plan["hosts"]} == {"h1": ["cms_patching_wave_3"], "h2": ["cms_patching_wave_1"]}


def test_nothing_eligible_matches_no_host():
    pairs = [pair(1, eligible=False)]
    plan = wave_plan(pairs, [], hostvars(pairs), "run-1")
    assert plan["pattern"] == "!all" and plan["waves"] == [] and plan["tag_batches"] == []


def test_bad_strategy_is_a_filter_error():
    with pytest.raises(AnsibleFilterError, match="cms_patching_wave_strategy must be one of spread, zone_by_zone"):
        wave_plan([pair(1)], [], {}, "run-1", strategy="zig")
