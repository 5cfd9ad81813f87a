"""ssm_instance_lock against the simulator (moto's Parameter Store): two runs at once never hold the same instance."""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import run_module


def fresh_ids(count):
    """Locks only need ids, not instances: unique ids keep parallel tests apart in the shared Parameter Store."""
    return [f"i-{uuid.uuid4().hex[:17]}" for _n in range(count)]


def lock(sim, ids, run_id, state="acquired", ttl=600, check_mode=False):
    result = run_module("ssm_instance_lock", {"instance_ids": ids, "run_id": run_id, "state": state, "ttl": ttl}, sim.env,
                        check_mode=check_mode)
    assert result["rc"] == 0, result["msg"]
    return result


def holder(sim, instance_id):
    params = sim.client("ssm").get_parameters(Names=[f"/cms-patching/locks/{instance_id}"])["Parameters"]
    return json.loads(params[0]["Value"])["run_id"] if params else None


def test_two_runs_at_once_over_overlapping_instances_never_share_one(sim):
    ids = fresh_ids(24)
    first, second = ids[:16], ids[8:]  # 8 instances in both runs
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda args: lock(sim, *args), [(first, "run-a"), (second, "run-b")])
    calls = sim.stats()["calls"]
    assert calls["ssm:PutParameter"] == 32  # one attempt per instance per run
    assert calls["ssm:GetParameters"] <= 2  # only the refused names are read, 10 per call, once per run that lost any
    overlap = set(first) & set(second)
    assert not set(a["acquired"]) & set(b["acquired"])
    assert set(a["acquired"]) | set(b["acquired"]) == set(ids)
    assert set(a["locked_by_other_run"]) | set(b["locked_by_other_run"]) == overlap
    for result, other in ((a, "run-b"), (b, "run-a")):
        for entry in result["results"]:
            expected = "run-a" if entry["instance_id"] in a["acquired"] else "run-b"
            assert holder(sim, entry["instance_id"]) == expected
            if entry["status"] == "locked_by_other_run":
                assert entry["owner"]["run_id"] == other


def test_same_run_reentrant_release_and_relock(sim):
    ids = fresh_ids(12)
    assert lock(sim, ids, "run-a")["acquired"] == ids
    again = lock(sim, ids[:5], "run-a")  # another slice/phase of the same run
    assert again["acquired"] == ids[:5] and {r["how"] for r in again["results"]} == {"reentrant"}
    refused = lock(sim, ids, "run-b")
    assert refused["locked_by_other_run"] == ids and refused["changed"] is False
    released = lock(sim, ids, "run-b", state="released")
    assert released["released"] == [] and released["changed"] is False and holder(sim, ids[0]) == "run-a"
    released = lock(sim, ids, "run-a", state="released")
    assert released["released"] == ids and holder(sim, ids[0]) is None
    assert sim.stats()["calls"]["ssm:DeleteParameters"] == 2  # 12 names, 10 per call
    assert lock(sim, ids, "run-b")["acquired"] == ids


def test_expired_lock_is_taken_over_and_its_claim_released(sim):
    ids = fresh_ids(3)
    lock(sim, ids, "run-a", ttl=1)
    time.sleep(1.5)
    taken = lock(sim, ids, "run-b")
    assert taken["taken_over"] == ids and holder(sim, ids[0]) == "run-b"
    ssm = sim.client("ssm")
    claims = ssm.get_parameters_by_path(Path=f"/cms-patching/takeovers/{ids[0]}")["Parameters"]
    assert len(claims) == 1 and json.loads(claims[0]["Value"])["run_id"] == "run-b"
    lock(sim, ids, "run-b", state="released")
    assert not ssm.get_parameters_by_path(Path=f"/cms-patching/takeovers/{ids[0]}")["Parameters"]


def test_check_mode_changes_nothing(sim):
    ids = fresh_ids(4)
    lock(sim, ids[:1], "run-a")
    sim.reset_stats()
    planned = lock(sim, ids, "run-b", check_mode=True)
    assert planned["locked_by_other_run"] == ids[:1] and planned["acquired"] == ids[1:]
    assert holder(sim, ids[1]) is None
    assert lock(sim, ids[:1], "run-a", state="released", check_mode=True)["released"] == ids[:1]
    assert holder(sim, ids[0]) == "run-a"
    assert not sim.stats()["mutating"]


@pytest.mark.parametrize("args, message", [
    ({"instance_ids": ["i-12"], "run_id": "r"}, "malformed instance id(s): i-12"),
    ({"instance_ids": ["i-0123456789abcdef0"], "run_id": "a b"}, "invalid run_id 'a b'"),
    ({"instance_ids": ["i-0123456789abcdef0"], "run_id": "r", "ttl": 0}, "ttl must be between 1 and 604800 seconds, got 0"),
    ({"instance_ids": ["i-0123456789abcdef0"], "run_id": "r", "state": "locked"}, "value of state must be one of: acquired, released"),
    ({"instance_ids": ["i-0123456789abcdef0"], "run_id": "r", "region": "us-nowhere-1"}, "unknown region 'us-nowhere-1'"),
])
def test_bad_input_is_one_line_and_changes_nothing(sim, args, message):
    result = run_module("ssm_instance_lock", args, sim.env)
    assert result["rc"] != 0 and message in result["msg"] and "\n" not in result["msg"] and "Traceback" not in result["stderr"]
    assert not sim.stats()["calls"]
