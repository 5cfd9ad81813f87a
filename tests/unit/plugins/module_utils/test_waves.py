"""The patching fault table as code: what each step result makes an instance end as."""

from datetime import datetime, timezone

import pytest

from ansible_collections.cms.patching.plugins.filter.waves import deadline_passed, left_out_hosts, patched_in_run, wave_instances
from ansible_collections.cms.patching.plugins.module_utils.waves import host_commands, needs_rollback, wave_entries

IID = "i-0123456789abcdef0"
GATE = [{"instance_id": IID, "image_id": "ami-0123456789abcdef0"}]
OK = [{"instance_id": IID, "outcome": "success"}]


def entries(precheck=None, patch=None, restart=None, health=None, rollback=None, gate=None, check_mode=False):
    return wave_entries([IID], GATE if gate is None else gate, precheck or [], patch or [], restart or [], health or [], rollback or [], check_mode)[0]


def res(outcome):
    return [{"instance_id": IID, "outcome": outcome}]


@pytest.mark.parametrize("step, outcome, reason, ran", [
    ("precheck", "failed", "precheck_failed", False),
    ("precheck", "undeliverable", "undeliverable", False),
    ("patch", "undeliverable", "undeliverable", False),
    ("patch", "delivery_timed_out", "delivery_timed_out", False),
    ("patch", "failed", "patch_failed", True),
    ("patch", "timed_out", "patch_timed_out", True),
    ("patch", "cancelled", "patch_timed_out", True),
    ("patch", "reboot_timeout", "reboot_timeout", True),
    ("patch", "noncompliant", "compliance_not_clean", True),
    ("restart", "failed", "service_restart_failed", True),
    ("health", "failed", "health_check_failed", True),
])
def test_first_failing_step_decides_reason_and_rollback(step, outcome, reason, ran):
    steps = {"precheck": OK, "patch": OK, "restart": OK, "health": OK}
    steps[step] = res(outcome)
    if step == "precheck":
        steps["patch"] = []
    entry = entries(**steps)
    assert entry["reason"] == reason and entry["final_status"] == "failed"
    todo = needs_rollback([IID], GATE, steps["precheck"], steps["patch"], steps["restart"], steps["health"])
    assert todo == ([{"instance_id": IID, "image_id": "ami-0123456789abcdef0"}] if ran else [])


def test_rollback_outcome_decides_the_final_status():
    failing = {"precheck": OK, "patch": res("failed"), "restart": [], "health": []}
    done = [{"instance_id": IID, "status": "succeeded", "image_id": "ami-0123456789abcdef0"}]
    assert entries(**failing, rollback=done)["final_status"] == "rolled_back"
    broken = entries(**failing, rollback=[{"instance_id": IID, "status": "failed", "error": "task failed"}])
    assert (broken["final_status"], broken["reason"], broken["failed_step"]) == ("failed", "rollback_failed", "patch_failed")


def test_success_and_pending_reboot_are_patched():
    assert entries(precheck=OK, patch=OK)["final_status"] == "patched"
    assert entries(precheck=OK, patch=res("pending_reboot"))["final_status"] == "patched"


def test_no_gate_entry_means_no_verified_backup():
    entry = entries(gate=[])
    assert (entry["final_status"], entry["reason"]) == ("failed", "no_verified_backup")


def test_check_mode_decides_nothing():
    entry = entries(precheck=res("would_run"), patch=res("would_run"), check_mode=True)
    assert "final_status" not in entry and "reason" not in entry


def test_wave_instances_take_host_vars_over_the_role_defaults():
    defaults = {"precheck_commands": {"linux": ["df"], "windows": ["Get-PSDrive"]}, "precheck_extra_commands": ["extra"],
                "restart_services": ["nginx"], "health_checks": ["curl"]}
    hostvars = {
        "web": {"instance_id": IID, "region": "eu-west-1", "account_id": 222222222222, "cms_patching_role_arn": "arn:aws:iam::222222222222:role/p",
                "cms_patching_discovery": {"platform": "windows", "tags": {"cms-patching:restart-services": "W3SVC, WAS"}},
                "patching_health_checks": [], "cms_patching_backup": {"status": "would_create"}},
        "i-00000000000000002": {"region": "us-east-1", "patching_restart_services": ["httpd"]},
        "nameless": {"region": "us-east-1"},
    }
    web, other = wave_instances(["web", "i-00000000000000002", "nameless"], hostvars, defaults)
    assert web == {"instance_id": IID, "region": "eu-west-1", "account_id": "222222222222", "role_arn": "arn:aws:iam::222222222222:role/p",
                   "external_id": "", "platform": "windows", "precheck_commands": ["Get-PSDrive", "extra"],
                   "restart_services": ["W3SVC", "WAS"], "health_checks": [], "backup_planned": True,
                   "target_groups": [], "asg_name": None, "asg_mode": "in_place", "capacity_tags": {}}
    assert (other["platform"], other["precheck_commands"], other["restart_services"], other["health_checks"], other["backup_planned"]) == (
        "linux", ["df", "extra"], ["httpd"], ["curl"], False)
    assert other["capacity_tags"] is None  # no discovery tags: the wave reads them itself


def test_wave_instances_pass_discovery_topology_and_the_asg_mode():
    tg = {"arn": "arn:aws:elasticloadbalancing:us-east-1:111111111111:targetgroup/web/0123456789abcdef", "name": "web", "port": 8080,
          "state": "healthy", "reason": None, "deregistration_delay": 30}
    discovery = {"platform": "linux", "zone": "us-east-1a", "target_groups": [tg], "asg_name": "web-asg",
                 "asg": {"min_size": 1, "max_size": 6, "desired_capacity": 6, "lifecycle_state": "InService"},
                 "tags": {"cms-patching:drained": "web:8080", "cms-patching:standby": "web-asg", "Name": "w1"}}
    hostvars = {"a": {"instance_id": IID, "region": "us-east-1", "cms_patching_discovery": discovery},
                "b": {"instance_id": "i-00000000000000002", "region": "us-east-1", "cms_patching_discovery": dict(discovery, asg_name=None)}}
    a, b = wave_instances(["a", "b"], hostvars, {}, "standby")
    assert a["target_groups"] == [{k: v for k, v in tg.items() if v is not None}]
    assert (a["asg_name"], a["asg_mode"], b["asg_mode"]) == ("web-asg", "standby", "in_place")
    # Discovery saw a killed run's tags: the wave reads them afresh (None); the other host's are known to be absent ({})
    assert a["capacity_tags"] is None
    clean = dict(discovery, tags={"Name": "w1"})
    assert wave_instances(["c"], {"c": {"instance_id": IID, "cms_patching_discovery": clean}}, {})[0]["capacity_tags"] == {}
    assert left_out_hosts(["a", "b", "c", "d"], dict(hostvars, c={"cms_patching_discovery": clean}, d={})) == ["a", "b"]
    assert wave_instances(["a"], hostvars, {}, "in_place")[0]["asg_mode"] == "in_place"
    assert wave_instances(["a"], hostvars, {})[0]["asg_mode"] == "in_place"  # skip (default): discovery left only non-members


def test_deadline():
    now = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
    assert deadline_passed("2026-11-27T05:59:00Z", now) and not deadline_passed("2026-11-27T06:01:00+00:00", now)
    assert not deadline_passed("", now)
    with pytest.raises(Exception, match="not an ISO time"):
        deadline_passed("tomorrow", now)


def test_patched_in_run_needs_both_tags():
    hostvars = {
        "a": {"cms_patching_discovery": {"tags": {"cms-patching:run-id": "r1", "cms-patching:last-patch-status": "patched"}}},
        "b": {"cms_patching_discovery": {"tags": {"cms-patching:run-id": "r0", "cms-patching:last-patch-status": "patched"}}},
        "c": {"cms_patching_discovery": {"tags": {"cms-patching:run-id": "r1", "cms-patching:last-patch-status": "rolled_back"}}},
    }
    assert patched_in_run(["a", "b", "c"], hostvars, "r1") == ["a"]


def test_host_commands_prefer_host_vars_then_tag_then_defaults():
    defaults = {"restart_services": ["nginx"], "health_checks": ["true"], "precheck_commands": {"linux": ["df"], "windows": ["Get-PSDrive"]}}
    assert host_commands("restart", "linux", {"patching_restart_services": ["httpd"]}, defaults) == ([], ["httpd"])
    tagged = {"cms_patching_discovery": {"tags": {"cms-patching:restart-services": "a, b"}}}
    assert host_commands("restart", "linux", tagged, defaults) == ([], ["a", "b"])
    assert host_commands("restart", "linux", {}, defaults) == ([], ["nginx"])
    assert host_commands("precheck", "windows", {}, defaults) == (["Get-PSDrive"], [])
    assert host_commands("health", "linux", {"patching_health_checks": []}, defaults) == ([], [])
