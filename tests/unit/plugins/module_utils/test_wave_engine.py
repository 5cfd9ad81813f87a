"""The wave engine (module_utils/wave_engine.py) with fake steps: the fault table end to end, partitions run
concurrently within their bound, per-step times, the per-step summary and the no-success line."""

import threading

import pytest

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.plugins.module_utils.wave_engine import no_success_message, run_gated_wave, run_wave
from ansible_collections.cms.patching.plugins.module_utils.waves import PATCH_FAILURES

from ansible_collections.cms.patching.tests.unit.fakes.wave import SNAPSHOT, Clock, iid
from ansible_collections.cms.patching.tests.unit.fakes.wave import wave_params as params

AMI = "ami-0123456789abcdef0"


def instance(n, region="us-east-1", account="111111111111", **kw):
    return dict(dict(instance_id=iid(n), region=region, account_id=account, platform="linux", precheck_commands=["true"],
                     restart_services=["nginx"], health_checks=["curl -f localhost"]), **kw)


class FakeSteps:
    """Each instance's plan says what each step gives it; every call is recorded (step, region, ids)."""

    def __init__(self, plan=None, barrier=None, fail=None):
        self.plan = plan or {}
        self.barrier = barrier
        self.fail = fail or {}  # (step, region) -> exception the step's call raises
        self.calls, self.tags = [], []
        self._lock = threading.Lock()
        self.active = self.max_active = 0

    def _enter(self, step, clients, ids):
        region = clients._session.region  # pylint: disable=protected-access
        with self._lock:
            self.calls.append((step, region, sorted(ids)))
        if (step, region) in self.fail:
            raise self.fail[(step, region)]

    def gate(self, clients, ids, max_age_hours):
        self.max_age_hours = max_age_hours
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.barrier:
                self.barrier.wait(timeout=10)  # breaks unless enough partitions are in the gate at the same time
            self._enter("gate", clients, ids)
            return {i: ({"image_id": AMI} if self.plan.get(i, {}).get("backup", True) else None) for i in ids}
        finally:
            with self._lock:
                self.active -= 1

    def command(self, clients, p, check_mode):
        ids = [t["instance_id"] for t in p["targets"]]
        self._enter(p["step"], clients, ids)
        return [{"instance_id": i, "outcome": "would_run" if check_mode else self.plan.get(i, {}).get(p["step"], "success"),
                 "error": None} for i in ids]

    def patch(self, clients, p, check_mode):
        self._enter("patch", clients, p["instance_ids"])
        assert p["snapshot_id"] == SNAPSHOT and p["run_id"] == "run-wave"
        return [{"instance_id": i, "command_id": None if check_mode else "cmd-1",
                 "outcome": "would_run" if check_mode else self.plan.get(i, {}).get("patch", "success")} for i in p["instance_ids"]]

    def restore(self, clients, p, check_mode):
        ids = [t["instance_id"] for t in p["instances"]]
        self._enter("rollback", clients, ids)
        return [{"instance_id": t["instance_id"], "image_id": t["image_id"], "task_id": "replacevol-1",
                 "status": self.plan.get(t["instance_id"], {}).get("rollback", "succeeded"), "error": None} for t in p["instances"]]

    def tag(self, clients, ids, tags):
        self._enter("tag", clients, ids)
        self.tags.append((sorted(ids), tags))

    def capacity_tags(self, clients, ids):
        self._enter("capacity_tags", clients, ids)
        return {}


class Session:
    def __init__(self, account_id, region, role_arn, external_id):
        self.account_id, self.region, self.role_arn, self.external_id = account_id, region, role_arn, external_id


def wave(instances, steps, check_mode=False, **kw):
    sessions = []

    def session_for(*key):
        sessions.append(Session(*key))
        return sessions[-1]

    result = run_wave(params(instances, **kw), check_mode, session_for, steps=steps, now=Clock())
    return result, sessions


# Each row of the fault table (module_utils/waves.py): the patch outcome -> (final_status, reason, rolled back).
PATCH_ROWS = {
    "failed": ("rolled_back", "patch_failed", True),
    "timed_out": ("rolled_back", "patch_timed_out", True),
    "cancelled": ("rolled_back", "patch_timed_out", True),
    "reboot_timeout": ("rolled_back", "reboot_timeout", True),
    "noncompliant": ("rolled_back", "compliance_not_clean", True),
    "undeliverable": ("failed", "undeliverable", False),
    "delivery_timed_out": ("failed", "delivery_timed_out", False),
    "terminated": ("failed", "patch_not_started", False),
    "state_unknown": ("failed", "state_unknown", False),
    "not_found": ("failed", "not_found", False),
}
# The other rows: the step that fails (plan), and what the instance ends as.
OTHER_ROWS = [
    ({}, ("patched", None, False)),
    ({"patch": "pending_reboot"}, ("patched", None, False)),
    ({"backup": False}, ("failed", "no_verified_backup", False)),
    ({"precheck": "failed"}, ("failed", "precheck_failed", False)),
    ({"precheck": "undeliverable"}, ("failed", "undeliverable", False)),
    ({"precheck": "delivery_timed_out"}, ("failed", "delivery_timed_out", False)),
    ({"restart": "failed"}, ("rolled_back", "service_restart_failed", True)),
    ({"health": "failed"}, ("rolled_back", "health_check_failed", True)),
    ({"health": "failed", "rollback": "failed"}, ("failed", "rollback_failed", True)),
]


def test_every_row_of_the_fault_table():
    assert set(PATCH_FAILURES) <= set(PATCH_ROWS), "a new row of the fault table needs its expected outcome here"
    rows = [({"patch": outcome}, PATCH_ROWS[outcome]) for outcome in PATCH_FAILURES] + OTHER_ROWS
    plan = {iid(n): row_plan for n, (row_plan, _expected) in enumerate(rows)}
    steps = FakeSteps(plan)
    result, _sessions = wave([instance(n) for n in range(len(rows))], steps)
    by_id = {e["instance_id"]: e for e in result["results"]}
    rolled = {i for step, _region, ids in steps.calls if step == "rollback" for i in ids}
    for n, (row_plan, (status, reason, rolled_back)) in enumerate(rows):
        entry = by_id[iid(n)]
        assert (entry["final_status"], entry.get("reason"), iid(n) in rolled) == (status, reason, rolled_back), (row_plan, entry)
        assert result["outcomes"][iid(n)]["final_status"] == status
    failed_rollback = by_id[iid(len(rows) - 1)]
    assert failed_rollback["failed_step"] == "health_check_failed"
    # Only what passed the pre-checks was patched, only what was patched was restarted and health-checked.
    patched = {i for step, _r, ids in steps.calls if step == "patch" for i in ids}
    assert iid(len(PATCH_FAILURES) + 3) not in patched  # precheck failed
    restarted = {i for step, _r, ids in steps.calls if step == "restart" for i in ids}
    assert restarted == {i for i in patched if plan[i].get("patch", "success") in ("success", "pending_reboot")}


def test_without_rollback_the_failures_stay_failed_and_nothing_is_restored():
    steps = FakeSteps({iid(1): {"patch": "failed"}, iid(2): {"health": "failed"}})
    result, _s = wave([instance(1), instance(2), instance(3)], steps, rollback=False)
    statuses = {e["instance_id"]: (e["final_status"], e["reason"]) for e in result["results"]}
    assert statuses == {iid(1): ("failed", "patch_failed"), iid(2): ("failed", "health_check_failed"), iid(3): ("patched", None)}
    assert not [c for c in steps.calls if c[0] == "rollback"]


def test_without_required_backup_an_unprotected_instance_is_patched_but_never_rolled_back():
    steps = FakeSteps({iid(1): {"backup": False, "patch": "failed"}, iid(2): {"backup": False}})
    result, _s = wave([instance(1), instance(2)], steps, require_backup=False)
    statuses = {e["instance_id"]: e["final_status"] for e in result["results"]}
    assert statuses == {iid(1): "failed", iid(2): "patched"}
    assert not [c for c in steps.calls if c[0] == "rollback"]


def test_partitions_run_concurrently_each_with_its_own_session():
    keys = [("us-east-1", "111111111111"), ("eu-west-1", "111111111111"), ("us-east-1", "222222222222")]
    instances = [instance(n * 10 + k, region=region, account=account) for n, (region, account) in enumerate(keys) for k in range(2)]
    # A barrier of three in the gate: it breaks (BrokenBarrierError) unless all three partitions are there at once.
    steps = FakeSteps(barrier=threading.Barrier(3))
    result, sessions = wave(instances, steps)
    assert sorted((s.account_id, s.region) for s in sessions) == sorted((a, r) for r, a in keys)
    assert steps.max_active == 3
    assert result["summary"]["final_status"] == {"patched": 6}
    gate_calls = [(region, ids) for step, region, ids in steps.calls if step == "gate"]
    assert len(gate_calls) == 3 and sorted(i for _r, ids in gate_calls for i in ids) == sorted(i["instance_id"] for i in instances)
    assert [e["instance_id"] for e in result["results"]] == [i["instance_id"] for i in instances]  # the caller's order


def test_partition_concurrency_is_a_bound():
    instances = [instance(n, region=region) for n, region in enumerate(["us-east-1", "us-east-2", "eu-west-1", "eu-west-2"])]
    steps = FakeSteps(barrier=threading.Barrier(2))  # two at a time meet; a third would wait for a fourth that never comes
    result, _s = wave(instances, steps, partition_concurrency=2)
    assert steps.max_active == 2 and result["summary"]["final_status"] == {"patched": 4}


def test_each_step_has_its_start_and_end_times_in_order():
    steps = FakeSteps({iid(2): {"health": "failed"}})
    result, _s = wave([instance(1), instance(2)], steps)
    by_id = {e["instance_id"]: e for e in result["results"]}
    assert list(by_id[iid(1)]["steps"]) == ["gate", "precheck", "patch", "restart", "health"]
    assert list(by_id[iid(2)]["steps"]) == ["gate", "precheck", "patch", "restart", "health", "rollback"]
    for entry in by_id.values():
        times = [(s["started_at"], s["ended_at"]) for s in entry["steps"].values()]
        assert all(start < end for start, end in times)
        assert all(times[n][1] <= times[n + 1][0] for n in range(len(times) - 1))  # a step starts after the last one ended
    assert by_id[iid(2)]["steps"]["health"]["outcome"] == "failed" and by_id[iid(2)]["steps"]["rollback"]["outcome"] == "succeeded"
    assert by_id[iid(1)]["steps"]["gate"] == dict(by_id[iid(1)]["steps"]["gate"], outcome="passed", error=None)


def test_summary_counts_passed_and_failed_per_step():
    plan = {iid(1): {"backup": False}, iid(2): {"precheck": "failed"}, iid(3): {"patch": "failed"}, iid(4): {"health": "failed"}}
    result, _s = wave([instance(n) for n in range(1, 7)], FakeSteps(plan))
    assert result["summary"] == {
        "total": 6,
        "steps": {"gate": {"passed": 5, "failed": 1}, "precheck": {"passed": 4, "failed": 1}, "patch": {"passed": 3, "failed": 1},
                  "restart": {"passed": 3, "failed": 0}, "health": {"passed": 2, "failed": 1}, "rollback": {"passed": 2, "failed": 0}},
        "final_status": {"failed": 2, "rolled_back": 2, "patched": 2},
    }


def test_status_tags_one_call_per_status_and_partition():
    steps = FakeSteps({iid(2): {"patch": "failed"}})
    result, _s = wave([instance(1), instance(2), instance(3, region="eu-west-1")], steps)
    assert result["changed"] is True
    tagged = sorted((ids, tags["cms-patching:last-patch-status"]) for ids, tags in steps.tags)
    assert tagged == [([iid(1)], "patched"), ([iid(2)], "rolled_back"), ([iid(3)], "patched")]
    assert all(tags["cms-patching:run-id"] == "run-wave" and tags["cms-patching:last-patched-at"] == result["wave_time"]
               for _ids, tags in steps.tags)


def test_check_mode_sends_nothing_and_decides_nothing():
    steps = FakeSteps({iid(2): {"backup": False}})
    result, _s = wave([instance(1), instance(2, backup_planned=True), instance(3)], steps, check_mode=True)
    assert not steps.tags and not [c for c in steps.calls if c[0] == "rollback"]
    for entry in result["results"]:
        assert "final_status" not in entry and "reason" not in entry
        assert entry["patch"]["outcome"] == "would_run"  # planned backups pass the gate of a dry run
    assert no_success_message(result, True) is None


def test_a_step_failing_as_a_whole_fails_only_its_partition():
    boom = PatchingError("ssm:DescribeInstanceInformation failed: AccessDeniedException: no")
    steps = FakeSteps(fail={("patch", "eu-west-1"): boom, ("gate", "eu-west-2"): PatchingError("sts:AssumeRole failed for x")})
    result, _s = wave([instance(1), instance(2, region="eu-west-1"), instance(3, region="eu-west-2")], steps)
    by_id = {e["instance_id"]: e for e in result["results"]}
    assert by_id[iid(1)]["final_status"] == "patched"
    # Nothing was sent: no rollback of a guess.
    assert (by_id[iid(2)]["final_status"], by_id[iid(2)]["reason"], by_id[iid(2)]["rollback"]["performed"]) == ("failed", "not_patched", False)
    assert by_id[iid(2)]["steps"]["patch"]["error"] == str(boom)
    assert (by_id[iid(3)]["final_status"], by_id[iid(3)]["reason"]) == ("failed", "no_verified_backup")
    assert {p["region"]: p["errors"] for p in result["partitions"]}["eu-west-1"] == {"patch": str(boom)}


def test_no_success_is_one_line_naming_the_reasons():
    steps = FakeSteps({iid(1): {"backup": False}, iid(2): {"backup": False}, iid(3): {"patch": "failed"}})
    result, _s = wave([instance(1), instance(2), instance(3)], steps)
    message = no_success_message(result, False)
    assert message.startswith("no instance of the wave succeeded: 2 failed/no_verified_backup (")
    assert "1 rolled_back/patch_failed" in message and "\n" not in message
    ok, _s = wave([instance(1), instance(2)], FakeSteps({iid(1): {"patch": "failed"}}))
    assert no_success_message(ok, False) is None


@pytest.mark.parametrize("bad, message", [
    ([{"instance_id": "i-123"}], "malformed instance id"),
    ([instance(1), instance(1)], "duplicate instance id"),
    ([instance(1, region=None)], None),  # the region option covers it
    ([instance(1, restart_services=["nginx; rm -rf /"])], "invalid service name"),
])
def test_bad_input_is_refused_before_any_session(bad, message):
    steps = FakeSteps()
    if message is None:
        wave(bad, steps)
        return
    with pytest.raises(PatchingError, match=message):
        wave(bad, steps)
    assert not steps.calls


def test_bad_options_are_refused_before_any_session():
    with pytest.raises(PatchingError, match="snapshot_id"):
        wave([instance(1)], FakeSteps(), snapshot_id="{bad}")
    with pytest.raises(PatchingError, match="no region"):
        wave([instance(1, region=None)], FakeSteps(), region=None)
    with pytest.raises(PatchingError, match="command_timeout"):
        wave([instance(1)], FakeSteps(), command_timeout=0)


def test_restore_mode_only_restores_from_the_newest_backup_of_any_age():
    steps = FakeSteps({iid(2): {"backup": False}, iid(3): {"rollback": "failed"}})
    p = params([instance(1), instance(2), instance(3)], mode="restore", max_backup_age_hours=None)
    result = run_wave(p, False, Session, steps=steps, now=Clock())
    assert steps.max_age_hours is None  # any age, unless told otherwise
    assert [c[0] for c in steps.calls] == ["gate", "rollback"] and steps.calls[1][2] == [iid(1), iid(3)]
    assert not steps.tags
    outcomes = result["outcomes"]
    assert (outcomes[iid(1)]["final_status"], outcomes[iid(1)]["reason"]) == ("rolled_back", None)
    assert (outcomes[iid(2)]["final_status"], outcomes[iid(2)]["reason"]) == ("failed", "no_verified_backup")
    assert (outcomes[iid(3)]["final_status"], outcomes[iid(3)]["reason"]) == ("failed", "rollback_failed")
    assert [e["rollback"]["performed"] for e in result["results"]] == [True, False, True]
    assert no_success_message(result, False) is None  # a restored instance is the success of a restore
    patch_mode = run_wave(params([instance(1)]), False, Session, steps=FakeSteps(), now=Clock())
    assert patch_mode["mode"] == "patch"


def test_patch_mode_gate_defaults_to_a_day():
    steps = FakeSteps()
    run_wave(params([instance(1)], max_backup_age_hours=None), False, Session, steps=steps, now=Clock())
    assert steps.max_age_hours == 24


def test_the_wave_line_the_patch_summary_callback_prints():
    from ansible_collections.cms.patching.plugins.callback.patch_summary import wave_line  # pylint: disable=import-outside-toplevel
    result, _s = wave([instance(1), instance(2)], FakeSteps({iid(2): {"precheck": "failed"}}))
    assert wave_line(result["summary"]) == ("wave of 2: gate 2 passed; precheck 1 passed, 1 failed; patch 1 passed; restart 1 passed; "
                                            "health 1 passed => failed=1, patched=1")


# ---------------------------------------------------------------- the gated wave (mode=patch as the patching role runs it)

GATES = dict(alarms=["web-5xx"], alarm_prefix="", alarm_on_missing_data=False, stop_parameter="/cms-patching/stop", bake_time=0, hold="")


class Gates:
    """Fake gate reads: `verdicts` is what each read returns in turn (the last one repeats); every read's targets are kept."""

    def __init__(self, *verdicts):
        self.verdicts, self.reads = list(verdicts), []

    def reader(self, targets):
        def read():
            self.reads.append(sorted(t["instance_id"] for t in targets))
            verdict = self.verdicts[min(len(self.reads), len(self.verdicts)) - 1]
            return dict(verdict, alarms=[], stop_value=None, error=None) if isinstance(verdict, dict) else \
                {"verdict": verdict, "alarm_name": "web-5xx" if verdict == "alarm" else None, "firing": [], "alarms": [],
                 "stop_value": None, "error": None}
        return read


def gated(instances, steps, gate_reads=None, check_mode=False, watched=None, **kw):
    def session_for(*key):
        return Session(*key)

    def watch(read, bake_time, poll_interval):
        if watched is not None:
            watched.append(bake_time)
        return dict(read(), polls=1, watched=0)

    kw.setdefault("gates", dict(GATES))
    return run_gated_wave(params(instances, **kw), check_mode, session_for, gate_reads.reader if gate_reads else None, steps=steps, now=Clock(),
                          watch=watch)


def test_a_gate_before_the_wave_starts_nothing():
    steps, reads = FakeSteps(), Gates("alarm")
    result = gated([instance(1), instance(2)], steps, reads)
    assert (result["verdict"], result["stopped_at"], result["alarm_name"]) == ("alarm", "gate", "web-5xx")
    assert result["results"] == [] and steps.calls == [] and reads.reads == [[]]  # the held entries are the caller's


def test_a_hold_reads_no_gate_and_starts_nothing():
    steps, reads = FakeSteps(), Gates("go")
    result = gated([instance(1)], steps, reads, gates=dict(GATES, hold="approval_timeout"))
    assert (result["verdict"], result["stopped_at"]) == ("approval_timeout", "gate")
    assert steps.calls == [] and reads.reads == []


def test_an_unknown_hold_is_one_line_before_any_call():
    with pytest.raises(PatchingError, match="unknown hold verdict 'later'"):
        gated([instance(1)], FakeSteps(), Gates("go"), gates=dict(GATES, hold="later"))


def test_after_the_deadline_the_wave_only_gets_its_reason():
    steps, reads = FakeSteps(), Gates("go")
    result = gated([instance(1), instance(2)], steps, reads, not_after="2026-11-30T01:00:00Z")  # the fake clock is at 02:00
    assert result["deadline_passed"] and result["results"] == [{"instance_id": iid(n), "reason": "deadline_passed"} for n in (1, 2)]
    assert steps.calls == [] and reads.reads == [] and result["verdict"] == "go"
    assert not gated([instance(1)], FakeSteps(), Gates("go"), not_after="2026-11-30T03:00:00")["deadline_passed"]  # naive is UTC
    with pytest.raises(PatchingError, match="cms_patching_not_after 'tonight' is not an ISO time"):
        gated([instance(1)], FakeSteps(), Gates("go"), not_after="tonight")


def test_a_quiet_bake_changes_nothing_and_watches_only_the_patched_instances():
    steps, reads, watched = FakeSteps({iid(2): {"health": "failed"}}), Gates("go"), []
    result = gated([instance(1), instance(2)], steps, reads, watched=watched, gates=dict(GATES, bake_time=600))
    assert reads.reads == [[], [iid(1)]] and watched == [0, 600]  # the gate once, then the bake over what was patched
    assert (result["verdict"], result["stopped_at"], result["bake"]["verdict"]) == ("go", None, "go")
    assert {e["instance_id"]: e["final_status"] for e in result["results"]} == {iid(1): "patched", iid(2): "rolled_back"}


@pytest.mark.parametrize("verdict, reason, key, value", [
    ("alarm", "alarm", "alarm_name", "web-5xx"),
    ({"verdict": "bake_unhealthy", "alarm_name": None, "firing": [], "target_group": "web", "unhealthy_instance": iid(1)},
     "bake_unhealthy", "target_group", "web"),
])
def test_an_alarm_or_an_unhealthy_target_in_the_bake_rolls_back_what_the_wave_patched(verdict, reason, key, value):
    steps = FakeSteps({iid(3): {"patch": "failed"}})
    result = gated([instance(1), instance(2), instance(3)], steps, Gates("go", verdict), gates=dict(GATES, bake_time=600))
    assert (result["verdict"], result["stopped_at"], result[key]) == (reason, "bake", value)
    rollbacks = [ids for step, _r, ids in steps.calls if step == "rollback"]
    assert rollbacks == [[iid(3)], [iid(1), iid(2)]]  # the wave's own rollback, then the bake's of what it patched
    by_id = {e["instance_id"]: e for e in result["results"]}
    for n in (1, 2):
        entry = by_id[iid(n)]
        assert (entry["final_status"], entry["reason"], entry[key]) == ("rolled_back", reason, value)
        assert entry["patch"]["outcome"] == "success" and entry["rollback"]["status"] == "succeeded"  # the wave's steps are kept
        assert {"patch", "rollback"} <= set(entry["steps"])  # with the bake rollback's start and end (report: rollback_*_at)
        assert entry["steps"]["rollback"]["started_at"] <= entry["steps"]["rollback"]["ended_at"]
        assert result["outcomes"][iid(n)] == {"final_status": "rolled_back", "reason": reason, "failed_step": "bake", "error": None}
    assert (by_id[iid(3)]["final_status"], by_id[iid(3)]["reason"]) == ("rolled_back", "patch_failed")
    # Tagged rolled_back after the wave's status tags said patched: a resumed run must not take them as done.
    assert steps.tags[-1] == ([iid(1), iid(2)], {"cms-patching:last-patch-status": "rolled_back"})
    assert result["summary"]["final_status"] == {"rolled_back": 3}


def test_the_stop_switch_in_the_bake_stops_the_run_and_keeps_the_wave():
    steps = FakeSteps()
    result = gated([instance(1)], steps, Gates("go", "stop"), gates=dict(GATES, bake_time=600))
    assert (result["verdict"], result["stopped_at"]) == ("stop", "bake")
    assert not [c for c in steps.calls if c[0] == "rollback"] and result["results"][0]["final_status"] == "patched"


def test_check_mode_reads_the_gate_and_never_bakes():
    steps, reads = FakeSteps(), Gates("go")
    result = gated([instance(1)], steps, reads, check_mode=True, gates=dict(GATES, bake_time=600))
    assert reads.reads == [[]] and result["bake"] is None and result["stopped_at"] is None


def test_without_gates_or_instances():
    steps = FakeSteps()
    result = gated([instance(1)], steps, gates=None)
    assert result["verdict"] == "go" and result["results"][0]["final_status"] == "patched"
    with pytest.raises(PatchingError, match="instances is empty"):
        gated([], FakeSteps(), Gates("go"))
