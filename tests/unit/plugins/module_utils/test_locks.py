"""Run locks against an in-memory Parameter Store with SSM's Overwrite=false semantics (the simulator tests use moto's)."""

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils import locks
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
IDS = [f"i-{n:017x}" for n in range(1, 24)]


def _error(code):
    return ClientError({"Error": {"Code": code, "Message": code}}, "op")


class FakeSsm:
    """Parameter Store: PutParameter refuses to overwrite unless asked; GetParameters/DeleteParameters take <= 10 names."""

    def __init__(self):
        self.params = {}
        self.calls = Counter()
        self.before_put = None  # hook: lets a test make another run win a race

    def put_parameter(self, Name, Value, Type, Overwrite=False, **_kw):
        self.calls["PutParameter"] += 1
        if self.before_put:
            hook, self.before_put = self.before_put, None
            hook(Name)
        if Name in self.params and not Overwrite:
            raise _error("ParameterAlreadyExists")
        assert Type == "String"
        self.params[Name] = Value
        return {"Version": 1}

    def get_parameters(self, Names):
        self.calls["GetParameters"] += 1
        assert len(Names) <= 10
        return {"Parameters": [{"Name": n, "Value": self.params[n]} for n in Names if n in self.params],
                "InvalidParameters": [n for n in Names if n not in self.params]}

    def delete_parameters(self, Names):
        self.calls["DeleteParameters"] += 1
        assert len(Names) <= 10
        for name in Names:
            self.params.pop(name, None)

    def holder(self, instance_id):
        raw = self.params.get(locks.lock_name(instance_id))
        return json.loads(raw)["run_id"] if raw else None


def statuses(results):
    return {r["instance_id"]: (r["status"], r["how"]) for r in results}


def test_free_instances_are_locked_with_one_put_each_and_no_read():
    ssm = FakeSsm()
    out = locks.acquire(ssm, IDS, "run-a", 600, now=NOW)
    assert all(r["status"] == "acquired" and r["how"] == "new" for r in out)
    assert [r["instance_id"] for r in out] == IDS
    assert ssm.calls == Counter(PutParameter=len(IDS))
    value = json.loads(ssm.params["/cms-patching/locks/" + IDS[0]])
    assert value["run_id"] == "run-a" and value["expires_at"] == "2025-03-01T12:10:00Z" and len(value["token"]) == 32


def test_second_run_is_refused_and_told_the_holder_with_batched_reads():
    ssm = FakeSsm()
    now = locks.utcnow()  # run_locks reads the real clock
    locks.acquire(ssm, IDS[:12], "run-a", 600, now=now)
    ssm.calls.clear()
    out = locks.run_locks(ssm, {"state": "acquired", "instance_ids": IDS, "run_id": "run-b", "ttl": 600})
    assert out["locked_by_other_run"] == IDS[:12] and out["acquired"] == IDS[12:]
    expires = (now + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert out["results"][0]["owner"] == {"run_id": "run-a", "expires_at": expires}
    assert ssm.calls["GetParameters"] == 2  # 12 contended names, 10 per call
    assert all(ssm.holder(i) == "run-a" for i in IDS[:12]) and all(ssm.holder(i) == "run-b" for i in IDS[12:])


def test_same_run_is_reentrant_and_renews_the_expiry():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:3], "run-a", 600, now=NOW)
    later = NOW + timedelta(minutes=5)
    out = locks.acquire(ssm, IDS[:3], "run-a", 600, now=later)
    assert statuses(out) == {i: ("acquired", "reentrant") for i in IDS[:3]}
    assert json.loads(ssm.params[locks.lock_name(IDS[0])])["expires_at"] == "2025-03-01T12:15:00Z"


def test_expired_lock_is_taken_over_once():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:2], "run-a", 60, now=NOW)
    later = NOW + timedelta(minutes=2)
    out = locks.acquire(ssm, IDS[:2], "run-b", 600, now=later)
    assert statuses(out) == {i: ("acquired", "taken_over") for i in IDS[:2]}
    assert ssm.holder(IDS[0]) == "run-b"
    # a third run arriving after the takeover finds a live lock
    out = locks.acquire(ssm, IDS[:1], "run-c", 600, now=later)
    assert out[0]["status"] == "locked_by_other_run" and out[0]["owner"]["run_id"] == "run-b"


def test_two_runs_racing_for_one_expired_lock_cannot_both_win():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:1], "run-a", 60, now=NOW)
    later = NOW + timedelta(minutes=2)
    expired = locks.read_locks(ssm, IDS[:1])[IDS[0]]
    # run-b read the same expired value and claims the takeover first
    assert locks.acquire_one(ssm, IDS[0], "run-b", 600, expired, later)["how"] == "taken_over"
    # run-c acts on the stale read it made before: its claim for the same token fails
    out = locks.acquire_one(ssm, IDS[0], "run-c", 600, expired, later)
    assert out["status"] == "locked_by_other_run" and out["owner"]["run_id"] == "run-b"
    assert ssm.holder(IDS[0]) == "run-b"


def test_a_lock_created_between_our_refused_write_and_our_read_is_retried():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:1], "run-a", 600, now=NOW)
    ssm.before_put = lambda name: None
    # run-a releases between run-b's refused put and its read: run-b gets it on the retry
    original = ssm.get_parameters

    def release_then_read(Names):
        ssm.params.pop(locks.lock_name(IDS[0]), None)
        ssm.get_parameters = original
        return original(Names)

    ssm.get_parameters = release_then_read
    out = locks.acquire(ssm, IDS[:1], "run-b", 600, now=NOW)
    assert statuses(out) == {IDS[0]: ("acquired", "new")} and ssm.holder(IDS[0]) == "run-b"


def test_unreadable_lock_is_never_taken():
    ssm = FakeSsm()
    ssm.params[locks.lock_name(IDS[0])] = "not json"
    out = locks.acquire(ssm, IDS[:1], "run-b", 600, now=NOW + timedelta(days=30))
    assert out[0]["status"] == "locked_by_other_run" and out[0]["owner"]["run_id"] == "unknown"


def test_release_deletes_only_this_runs_locks_and_takeover_claims():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:1], "run-a", 60, now=NOW)
    locks.acquire(ssm, IDS[:1], "run-b", 600, now=NOW + timedelta(minutes=2))  # takeover leaves a claim
    locks.acquire(ssm, IDS[1:3], "run-a", 600, now=NOW)
    assert any(n.startswith(locks.TAKEOVER_PREFIX) for n in ssm.params)
    out = locks.run_locks(ssm, {"state": "released", "instance_ids": IDS[:4], "run_id": "run-b", "ttl": 600})
    assert out["released"] == [IDS[0]] and out["locked_by_other_run"] == IDS[1:3] and out["changed"] is True
    assert [r["status"] for r in out["results"]] == ["released", "locked_by_other_run", "locked_by_other_run", "not_locked"]
    assert ssm.holder(IDS[0]) is None and ssm.holder(IDS[1]) == "run-a"
    assert not any(n.startswith(locks.TAKEOVER_PREFIX) for n in ssm.params)


def test_check_mode_only_reads():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:1], "run-a", 600)
    ssm.calls.clear()
    out = locks.run_locks(ssm, {"state": "acquired", "instance_ids": IDS[:11], "run_id": "run-b", "ttl": 600}, check_mode=True)
    assert out["locked_by_other_run"] == IDS[:1] and out["acquired"] == IDS[1:11]
    assert set(ssm.calls) == {"GetParameters"} and ssm.calls["GetParameters"] == 2
    assert ssm.holder(IDS[1]) is None
    rel = locks.run_locks(ssm, {"state": "released", "instance_ids": IDS[:1], "run_id": "run-a", "ttl": 600}, check_mode=True)
    assert rel["released"] == IDS[:1] and ssm.holder(IDS[0]) == "run-a"


@pytest.mark.parametrize("params, message", [
    ({"instance_ids": ["i-12"], "run_id": "r", "ttl": 60}, "malformed instance id(s): i-12"),
    ({"instance_ids": IDS[:1], "run_id": "bad run", "ttl": 60}, "invalid run_id 'bad run'"),
    ({"instance_ids": IDS[:1], "run_id": "", "ttl": 60}, "invalid run_id ''"),
    ({"instance_ids": IDS[:1], "run_id": "r", "ttl": 0}, "ttl must be between 1 and 604800 seconds, got 0"),
    ({"instance_ids": IDS[:1], "run_id": "r", "ttl": -5}, "ttl must be between 1 and 604800 seconds, got -5"),
])
def test_bad_input_is_refused_before_any_call(params, message):
    ssm = FakeSsm()
    with pytest.raises(PatchingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        locks.run_locks(ssm, dict(params, state="acquired"))
    assert not ssm.calls


def test_aws_errors_become_one_line():
    class Denied(FakeSsm):
        def put_parameter(self, **kw):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not\nallowed"}}, "PutParameter")

    with pytest.raises(PatchingError, match="^ssm_instance_lock failed: AccessDeniedException: not allowed$"):
        locks.run_locks(Denied(), {"state": "acquired", "instance_ids": IDS[:1], "run_id": "r", "ttl": 60})


def test_a_second_takeover_spends_the_first_claim():
    ssm = FakeSsm()
    locks.acquire(ssm, IDS[:1], "run-a", 60, now=NOW)
    locks.acquire(ssm, IDS[:1], "run-b", 60, now=NOW + timedelta(minutes=2))
    locks.acquire(ssm, IDS[:1], "run-c", 60, now=NOW + timedelta(minutes=4))
    claims = [n for n in ssm.params if n.startswith(locks.TAKEOVER_PREFIX)]
    assert len(claims) == 1 and json.loads(ssm.params[claims[0]])["run_id"] == "run-c" and ssm.holder(IDS[0]) == "run-c"
