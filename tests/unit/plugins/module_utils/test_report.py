"""The run report: how each instance ends (not_patched and its reason), the waves, the stop, and the files."""

import csv
import io
import re
from types import SimpleNamespace

import pytest

from ansible.executor.playbook_executor import PlaybookExecutor

from ansible_collections.cms.patching.plugins.module_utils import report as R

RUN = {"run_id": "run-1", "started_at": "2026-11-30T01:00:00Z"}
T0 = "2026-11-30T01:00:00Z"


def iid(n):
    return f"i-{n:017x}"


def eligible(n, **extra):
    return dict({"instance_id": iid(n), "name": f"web-{n}", "discovery": {"eligible": True, "reasons": []}}, **extra)


def backed_up(n, created="2026-11-30T01:00:05Z"):
    return R.entry_from_backup({"instance_id": iid(n), "image_id": f"ami-{n:017x}", "status": "created", "verified": True,
                                "created_at": created}, now="2026-11-30T01:02:00Z")


def steps(start, end, *names):
    return {name: {"started_at": start, "ended_at": end, "outcome": "success", "error": None} for name in names}


def wave_entry(n, status, reason=None, start="2026-11-30T01:03:00Z", end="2026-11-30T01:05:00Z"):
    return {"instance_id": iid(n), "final_status": status, "reason": reason, "steps": steps(start, end, "gate", "patch", "health")}


def wave_arg(numbers, all_numbers, serial, pct=10):
    return {"batch_hosts": [f"h{n}" for n in numbers], "play_hosts": [f"h{n}" for n in all_numbers],
            "instance_ids": [iid(n) for n in numbers], "serial": serial, "max_fail_percentage": pct}


def backup_phase(count):
    """A run's discovery and backup phases over `count` instances."""
    rep = R.merge_report(None, RUN, [eligible(n) for n in range(count)], "discovery", now=T0)
    return R.merge_report(rep, RUN, [backed_up(n) for n in range(count)], "backup", now=T0)


def by_id(rep):
    return {k[-2:].lstrip("0") or "0": v for k, v in rep["instances"].items()}


# ---------------------------------------------------------------- how Ansible cuts and stops a serial play


def ansible_batches(hosts, serial):
    """Ansible's own batching (PlaybookExecutor._get_serialized_batches) on a stand-in inventory and play."""
    inventory = SimpleNamespace(get_hosts=lambda pattern, order=None: list(hosts))
    play = SimpleNamespace(hosts="all", order=None, serial=serial)
    return PlaybookExecutor._get_serialized_batches(SimpleNamespace(_inventory=inventory), play)  # pylint: disable=protected-access


@pytest.mark.parametrize("count,serial", [(25, [1, "10%", "25%"]), (7, ["50%"]), (6, [2]), (3, []), (5, [1, "50%"]), (1000, [1, "10%", "25%"]),
                                          (4, ["1%"]), (9, [1, 3, 100]), (2, [5])])
def test_serial_sizes_are_the_batches_ansible_cuts(count, serial):
    hosts = [f"h{n}" for n in range(count)]
    assert R.serial_sizes(serial, count) == [len(b) for b in ansible_batches(hosts, serial)]


def test_the_batch_position_is_found_from_the_first_host_of_the_batch():
    hosts = [f"h{n}" for n in range(6)]
    assert R.batch_position(hosts, [1, 2, 3], ["h0"]) == (1, 1, 3)
    assert R.batch_position(hosts, [1, 2, 3], ["h2"]) == (2, 2, 3)  # h1 failed in an earlier play: not in ansible_play_batch
    assert R.batch_position(hosts, [1, 2, 3], ["h3", "h4", "h5"]) == (3, 3, 3)


@pytest.mark.parametrize("failed,size,pct,stops", [
    (1, 1, 100, True),   # a failed canary: Ansible ends the play when every host of a batch fails, whatever the percentage
    (2, 2, 100, True),
    (1, 2, 10, True),    # 50 % > 10 %
    (1, 3, 40, False),   # 33 % is not above 40 %
    (1, 10, 10, False),  # 10 % is not above 10 %
    (2, 10, 10, True),
    (0, 5, 0, False),
    (1, 5, 0, True),
    (1, 2, None, False),  # no max_fail_percentage: only a whole failed batch stops
    (2, 2, None, True),
])
def test_max_fail_stops_as_ansible_does(failed, size, pct, stops):
    assert R.max_fail_stops(failed, size, pct) is stops


# ---------------------------------------------------------------- final status and reason of every instance


def test_a_backup_phase_alone_still_ends_backed_up():
    rep = backup_phase(3)
    assert {e["final_status"] for e in rep["instances"].values()} == {"backed_up"}
    assert rep["stop"] is None and not rep["summary"]["not_patched"]
    assert rep["headline"] == "No patching phase ran (discovery, backup only): 3 backed_up."


def test_a_wave_over_max_fail_leaves_the_rest_not_patched_stopped_by_max_fail():
    rep = backup_phase(6)
    hosts = range(6)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], hosts, [1, 2]), now=T0)
    assert rep["stop"]["reason"] == "not_reached"  # between waves (or killed there): the rest not reached yet
    assert {by_id(rep)[str(n)]["reason"] for n in range(1, 6)} == {"not_reached"}
    rep = R.merge_report(rep, RUN, [wave_entry(1, "patched"), wave_entry(2, "rolled_back", "patch_failed")], "patching",
                         wave_arg([1, 2], hosts, [1, 2]), now=T0)
    entries = by_id(rep)
    assert [entries[str(n)]["final_status"] for n in range(6)] == ["patched", "patched", "rolled_back"] + ["not_patched"] * 3
    for n in range(3, 6):
        assert (entries[str(n)]["reason"], entries[str(n)]["stop_wave"], entries[str(n)]["derived"]) == ("stopped_by_max_fail", 2, True)
    assert rep["stop"] == {"reason": "stopped_by_max_fail", "wave": 2, "of": 4, "failed": 1, "batch_size": 2, "max_fail_percentage": 10,
                           "whole_batch_failed": False, "not_patched": 3}
    assert rep["headline"] == ("Stopped after wave 2 of 4: 1 of 2 hosts failed (50%), above max_fail_percentage 10%; "
                               "3 instances not patched (stopped_by_max_fail).")
    assert rep["summary"]["not_patched"] == 3 and rep["summary"]["backed_up"] == 0


def test_a_last_wave_over_max_fail_says_the_run_finished():
    # make demo's night: the failure is in the last wave, so Ansible's stop leaves nothing unpatched.
    rep = backup_phase(3)
    hosts = range(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], hosts, [1, 2]), now=T0)
    rep = R.merge_report(rep, RUN, [wave_entry(1, "patched"), wave_entry(2, "rolled_back", "patch_failed")], "patching",
                         wave_arg([1, 2], hosts, [1, 2]), now=T0)
    assert (rep["stop"]["reason"], rep["stop"]["wave"], rep["stop"]["of"], rep["stop"]["not_patched"]) == ("stopped_by_max_fail", 2, 2, 0)
    assert rep["headline"] == ("Finished: all 2 waves ran, and the last one broke max_fail_percentage (1 of 2 hosts failed, above 10%); "
                               "2 patched, 1 rolled back, 0 failed.")


def test_a_failed_canary_stops_the_play_whatever_max_fail_percentage_says():
    rep = backup_phase(4)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "failed", "precheck_failed")], "patching", wave_arg([0], range(4), [1, "50%"], 100), now=T0)
    assert rep["stop"]["whole_batch_failed"] and rep["stop"]["reason"] == "stopped_by_max_fail"
    assert "Stopped after wave 1 of 3 (the canary): every host of the wave failed (1 of 1), and Ansible ends the play when a whole " \
           "batch fails, whatever max_fail_percentage (100%) says; 3 instances not patched" in rep["headline"]
    assert {e["reason"] for e in rep["instances"].values() if e["final_status"] == "not_patched"} == {"stopped_by_max_fail"}


def test_waves_under_the_threshold_go_on_and_a_finished_run_has_no_stop():
    rep = backup_phase(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(3), [1, 2], 50), now=T0)
    rep = R.merge_report(rep, RUN, [wave_entry(1, "patched"), wave_entry(2, "rolled_back", "health_check_failed")], "patching",
                         wave_arg([1, 2], range(3), [1, 2], 50), now=T0)
    assert rep["stop"] is None
    assert rep["headline"] == "Finished: all 2 waves ran; 2 patched, 1 rolled back, 0 failed."
    assert [w["counts"] for w in rep["waves"]] == [{"patched": 1}, {"patched": 1, "rolled_back": 1}]


def test_a_finished_run_leaves_instances_outside_its_waves_not_reached():
    rep = backup_phase(3)  # backed up all three, then patched with --limit to one
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], [0], [1]), now=T0)
    entries = by_id(rep)
    assert (entries["1"]["final_status"], entries["1"]["reason"]) == ("not_patched", "not_reached")
    assert rep["stop"] is None


def test_waves_a_job_leaves_to_another_job_leave_their_instances_not_reached():
    rep = backup_phase(4)  # the AWX canary job: cms_patching_waves [1]; the later batches run and record nothing
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(4), [1]), now=T0)
    for n in (1, 2, 3):
        rep = R.merge_report(rep, RUN, [], "patching", wave_arg([n], range(4), [1]), now=T0)
    assert [w["ran"] for w in rep["waves"]] == [True, False, False, False]
    assert rep["stop"] == {"reason": "not_reached", "wave": 1, "of": 4, "not_patched": 3}
    assert rep["headline"] == ("No wave after wave 1 of 4 ran, and no stop was recorded: the run was killed, is still running, or left "
                               "them to another job (cms_patching_waves); 3 instances not patched (not_reached).")


def test_a_run_killed_in_its_first_wave_leaves_every_instance_not_reached():
    rep = R.merge_report(backup_phase(2), RUN, [{"instance_id": iid(0), "final_status": "skipped", "reason": "locked_by_other_run"}],
                         "patching", now=T0)
    assert (by_id(rep)["1"]["final_status"], by_id(rep)["1"]["reason"]) == ("not_patched", "not_reached")
    assert rep["headline"] == ("No patching wave was recorded: the run was killed in its first wave, or is still running; "
                               "1 instance not patched (not_reached).")


def test_an_unreadable_gate_stops_with_its_own_reason_and_wave():
    rep = backup_phase(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(3), [1]), now=T0)
    held = [{"instance_id": iid(n), "final_status": "not_patched", "reason": "gate_unreadable", "stop_wave": 2} for n in (1, 2)]
    rep = R.merge_report(rep, RUN, held, "patching", wave_arg([1], range(3), [1]), now=T0)
    assert rep["headline"] == "Stopped before wave 2: the gates (alarms, stop switch) could not be read; 2 instances not patched (gate_unreadable)."


def test_an_explicit_reason_is_kept_and_deadline_passed_ends_not_patched():
    rep = backup_phase(3)
    late = [{"instance_id": iid(n), "reason": "deadline_passed"} for n in range(3)]
    rep = R.merge_report(rep, RUN, late[:1], "patching", wave_arg([0], range(3), [1, 2]), now=T0)
    assert {by_id(rep)[n]["reason"] for n in "12"} == {"not_reached"}  # not there yet: derived, and decided again below
    rep = R.merge_report(rep, RUN, late[1:], "patching", wave_arg([1, 2], range(3), [1, 2]), now=T0)
    assert {(e["final_status"], e["reason"], e.get("derived")) for e in rep["instances"].values()} == {("not_patched", "deadline_passed", None)}
    assert rep["stop"]["reason"] == "deadline_passed" and rep["stop"]["wave"] == 1
    assert rep["headline"] == "No wave started after cms_patching_not_after (from wave 1 on); 3 instances not patched (deadline_passed)."


@pytest.mark.parametrize("reason,words", [
    ("stopped_by_operator", "Stopped by the operator (stop parameter) before wave 2"),
    ("approval_denied", "Stopped after the canary: the approval was denied"),
    ("approval_timeout", "Stopped after the canary: the approval was not given in time"),
])
def test_a_gate_stop_is_the_reason_of_every_instance_left(reason, words):
    rep = backup_phase(5)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(5), [1, 2]), now=T0)
    gated = [{"instance_id": iid(n), "final_status": "not_patched", "reason": reason} for n in (1, 2)]
    rep = R.merge_report(rep, RUN, gated, "patching", wave_arg([1, 2], range(5), [1, 2]), now=T0)
    entries = by_id(rep)
    assert {entries[str(n)]["reason"] for n in range(1, 5)} == {reason}
    assert [entries[str(n)].get("derived") for n in range(1, 5)] == [None, None, True, True]
    assert rep["headline"].startswith(words) and rep["headline"].endswith(f"4 instances not patched ({reason}).")


def test_an_alarm_before_a_wave_names_the_alarm_in_its_own_field():
    rep = backup_phase(4)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(4), [1]), now=T0)
    gated = [{"instance_id": iid(1), "final_status": "not_patched", "reason": "alarm", "alarm_name": "web-5xx, p99"}]
    rep = R.merge_report(rep, RUN, gated, "patching", wave_arg([1], range(4), [1]), now=T0)
    entries = by_id(rep)
    assert {(entries[str(n)]["reason"], entries[str(n)]["alarm_name"]) for n in (1, 2, 3)} == {("alarm", "web-5xx, p99")}
    assert rep["headline"] == "Stopped before wave 2: alarm web-5xx, p99 was in ALARM; 3 instances not patched (alarm)."
    rows = list(csv.DictReader(io.StringIO(R.render_csv(rep))))
    assert len(rows) == 4 and {r["alarm_name"] for r in rows if r["final_status"] == "not_patched"} == {"web-5xx, p99"}
    assert {r["reasons"] for r in rows if r["final_status"] == "not_patched"} == {"alarm"}


def test_an_alarm_during_the_bake_is_a_rolled_back_wave():
    rep = backup_phase(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(3), [1]), now=T0)
    rep = R.merge_report(rep, RUN, [{"instance_id": iid(0), "final_status": "rolled_back", "reason": "alarm", "alarm_name": "errors"}],
                         "patching", now=T0)
    assert rep["headline"] == "Stopped by alarm errors during the bake of wave 1: the wave was rolled back; 2 instances not patched (alarm)."
    assert rep["waves"][0]["counts"] == {"rolled_back": 1}


def test_an_unhealthy_target_during_the_bake_is_a_rolled_back_wave_with_its_target_group():
    rep = backup_phase(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(3), [1]), now=T0)
    rep = R.merge_report(rep, RUN, [{"instance_id": iid(0), "final_status": "rolled_back", "reason": "bake_unhealthy", "target_group": "web"}],
                         "patching", now=T0)
    assert rep["headline"] == "Stopped during the bake of wave 1: a target in target group web turned unhealthy, and the wave was " \
                              "rolled back; 2 instances not patched (bake_unhealthy)."
    assert (rep["stop"]["reason"], rep["stop"]["target_group"], rep["stop"]["during_bake"]) == ("bake_unhealthy", "web", True)
    assert {(e["final_status"], e["reason"], e["target_group"]) for e in by_id(rep).values()} == {
        ("rolled_back", "bake_unhealthy", "web"), ("not_patched", "bake_unhealthy", "web")}


def test_capacity_asg_and_preflight_reasons_are_kept():
    rep = R.merge_report(None, RUN, [eligible(0), dict(eligible(1), discovery={"eligible": False, "reasons": ["capacity_budget"]}),
                                     eligible(2), eligible(3)], "discovery", now=T0)
    rep = R.merge_report(rep, RUN, [backed_up(0), backed_up(2), {"instance_id": iid(3), "reason": "preflight_disk"}], "backup", now=T0)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched"), {"instance_id": iid(2), "final_status": "not_patched", "reason": "asg_min_size"}],
                         "patching", wave_arg([0, 2], [0, 2], ["100%"]), now=T0)
    entries = by_id(rep)
    assert (entries["1"]["final_status"], R.failure_reason(entries["1"])) == ("skipped", ["capacity_budget"])
    assert (entries["2"]["final_status"], entries["2"]["reason"]) == ("not_patched", "asg_min_size")
    assert (entries["3"]["final_status"], entries["3"]["reason"]) == ("not_patched", "preflight_disk")


def test_a_resumed_run_decides_again_and_a_patch_clears_the_derived_reason():
    rep = backup_phase(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "failed", "precheck_failed")], "patching", wave_arg([0], range(3), [1]), now=T0)
    assert by_id(rep)["1"]["reason"] == "stopped_by_max_fail"
    resumed = dict(RUN, started_at="2026-11-30T03:00:00Z")
    rep = R.merge_report(rep, resumed, [wave_entry(1, "patched")], "patching", wave_arg([1], [1, 2], [1]), now=T0)
    entries = by_id(rep)
    assert entries["1"]["final_status"] == "patched" and "reason" not in entries["1"] and "stop_wave" not in entries["1"]
    assert (entries["2"]["reason"], entries["2"]["final_status"]) == ("not_reached", "not_patched")  # this invocation's wave 1 of 2
    assert [(w["invocation"], w["number"]) for w in rep["waves"]] == [(RUN["started_at"], 1), (resumed["started_at"], 1)]


def test_a_dry_run_decides_nothing():
    rep = R.merge_report(None, dict(RUN, check_mode=True), [eligible(0), eligible(1)], "discovery", now=T0)
    rep = R.merge_report(rep, dict(RUN, check_mode=True), [{"instance_id": iid(0), "patch": {"outcome": "would_run"}}], "patching",
                         wave_arg([0], [0, 1], [1]), now=T0)
    assert {e["final_status"] for e in rep["instances"].values()} == {"discovered"}
    assert rep["headline"].startswith("A dry run")


# ---------------------------------------------------------------- steps, waves and files


def test_backup_step_times_merge_with_the_waves_steps():
    rep = backup_phase(1)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], [0], [1]), now=T0)
    entry = rep["instances"][iid(0)]
    assert sorted(entry["steps"]) == ["backup", "gate", "health", "patch"]
    assert entry["steps"]["backup"] == {"outcome": "created", "error": None, "started_at": "2026-11-30T01:00:05Z", "ended_at": "2026-11-30T01:02:00Z"}
    assert entry["wave"] == 1
    wave = rep["waves"][0]
    assert (wave["started_at"], wave["ended_at"]) == ("2026-11-30T01:03:00Z", "2026-11-30T01:05:00Z")  # the wave's steps, not the backup


def test_a_reused_backup_has_an_outcome_and_no_times():
    entry = R.entry_from_backup({"instance_id": iid(0), "status": "reused", "verified": True, "created_at": "2026-11-29T01:00:00Z"}, now=T0)
    assert entry["steps"] == {"backup": {"outcome": "reused", "error": None}}
    assert "steps" not in R.entry_from_backup({"instance_id": iid(0), "status": "would_create"}, now=T0)


def test_csv_has_the_new_columns_and_one_row_per_instance():
    rep = backup_phase(2)
    rep = R.merge_report(rep, RUN, [dict(wave_entry(0, "patched"), zone="us-east-1a")], "patching", wave_arg([0], [0, 1], [1]), now=T0)
    rows = list(csv.DictReader(io.StringIO(R.render_csv(rep))))
    assert list(rows[0]) == list(R.CSV_FIELDS)
    patched = next(r for r in rows if r["final_status"] == "patched")
    assert (patched["wave"], patched["zone"], patched["patch_started_at"], patched["backup_ended_at"]) == (
        "1", "us-east-1a", "2026-11-30T01:03:00Z", "2026-11-30T01:02:00Z")
    assert rows[0]["final_status"] == "not_patched"  # failures and what was left first


def references_outside(text):
    """What in an HTML file would load something from outside it (what the browser test checks statically)."""
    found = re.findall(r"https?:", text, re.I) + re.findall(r"@import", text, re.I)
    found += [u for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text, re.I) if not u.startswith("data:")]
    found += [v for v in re.findall(r"\b(?:src|href|xlink:href|srcset|action|data)\s*=\s*['\"]?([^'\" >]*)", text, re.I)
              if not v.startswith(("#", "data:"))]
    found += re.findall(r"<(?:script|link|iframe|object|embed|img)\b", text, re.I)
    return found


def test_html_names_the_stop_lists_failures_first_and_draws_one_bar_per_wave():
    rep = backup_phase(6)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched", start="2026-11-30T01:03:00Z", end="2026-11-30T01:04:00Z")], "patching",
                         wave_arg([0], range(6), [1, 2]), now=T0)
    rep = R.merge_report(rep, RUN, [wave_entry(1, "patched", start="2026-11-30T01:04:10Z", end="2026-11-30T01:06:00Z"),
                                    wave_entry(2, "rolled_back", "patch_failed", start="2026-11-30T01:04:10Z", end="2026-11-30T01:07:00Z")],
                         "patching", wave_arg([1, 2], range(6), [1, 2]), now=T0)
    page = R.render_html(rep)
    assert f'<p id="summary" class="stopped" data-stop-reason="stopped_by_max_fail">{rep["headline"]}</p>' in page
    assert page.index('id="failures"') < page.index('id="not-patched"') < page.index('id="timeline"') < page.index('id="instances"')
    assert re.search(r'<ul id="failures"><li><b>' + iid(2) + r"</b> web-2: rolled_back \(patch_failed\)</li></ul>", page)
    assert len(re.findall(r'<rect class="wave-bar', page)) == 2
    assert len(re.findall(r'<rect class="phase-bar step-backup', page)) == 1
    assert page.index(f"<td>{iid(2)}</td>") < page.index(f"<td>{iid(3)}</td>") < page.index(f"<td>{iid(0)}</td>")
    assert references_outside(page) == []


def test_the_static_check_finds_outside_references():
    page = ('<link href="x.css"><img src="a.png"><style>@import "b.css"; p{background:url(c.png)} q{background:url(data:image/png;base64,AA)}'
            '</style><a href="#top">top</a><a href="https://example.org">x</a>')
    assert references_outside(page) == ["https:", "@import", "c.png", "x.css", "a.png", "https://example.org", "<link", "<img"]


def test_html_escapes_what_instances_carry():
    rep = backup_phase(1)
    rep["instances"][iid(0)]["name"] = '<script>alert(1)</script>'
    rep = R.merge_report(rep, RUN, [], "patching", now=T0)
    page = R.render_html(rep)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_agent_recovery_attempts_get_their_own_row_in_the_timeline():
    rep = backup_phase(1)
    entry = dict(wave_entry(0, "patched"), patch={"outcome": "success", "recovery": [
        {"action": "reboot", "started_at": "2026-11-30T01:03:30Z", "ended_at": "2026-11-30T01:04:00Z", "result": "recovered"}]})
    rep = R.merge_report(rep, RUN, [entry], "patching", wave_arg([0], [0], [1]), now=T0)
    rows = [r for r in R.timeline_rows(rep) if r[1] == "agent recovery"]
    assert len(rows) == 1 and rows[0][5] == "wave 1 agent recovery: 1 attempt (reboot recovered)"
    assert 'class="step-bar step-recovery"' in R.render_html(rep)


def test_a_real_run_after_a_dry_run_of_the_same_id_decides_again():
    rep = R.merge_report(backup_phase(2), dict(RUN, check_mode=True), [], "patching", wave_arg([0], [0, 1], [1]), now=T0)
    assert rep["check_mode"] is True and {e["final_status"] for e in rep["instances"].values()} == {"backed_up"}
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], [0, 1], [1]), now=T0)
    assert "check_mode" not in rep and by_id(rep)["1"]["final_status"] == "not_patched"


def test_csv_names_the_target_group_of_a_bake_unhealthy_rollback():
    rep = backup_phase(3)
    rep = R.merge_report(rep, RUN, [wave_entry(0, "patched")], "patching", wave_arg([0], range(3), [1]), now=T0)
    rep = R.merge_report(rep, RUN, [{"instance_id": iid(0), "final_status": "rolled_back", "reason": "bake_unhealthy", "target_group": "web"}],
                         "patching", now=T0)
    rows = list(csv.DictReader(io.StringIO(R.render_csv(rep))))
    assert list(rows[0]) == list(R.CSV_FIELDS) and "target_group" in R.CSV_FIELDS
    assert sorted((r["final_status"], r["reasons"], r["target_group"], r["alarm_name"]) for r in rows) == [
        ("not_patched", "bake_unhealthy", "web", ""), ("not_patched", "bake_unhealthy", "web", ""), ("rolled_back", "bake_unhealthy", "web", "")]
