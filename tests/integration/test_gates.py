"""The gates of issue 18 end to end: CloudWatch alarms before a wave and during its bake, the operator's stop switch,
a missing alarm refused at settings, check mode. Every run ends with a report in which every instance of the fleet
has a final_status and a reason.

Timing is by events, never by the clock: a watcher thread sets an alarm (or the stop switch) once the run has sent its
first patch command (an AWS-RunPatchBaseline command in ListCommands), so the wave in flight is wave 1 and the next read
of the gates is its bake (or wave 2's gate).
"""

import os
import shutil
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpers import FAST, FAST_VARS, ROOT, read_report, recap, run_playbook, write_fleet_inventory


def alarm(sim, state="OK"):
    name = f"gate-{uuid.uuid4().hex[:8]}"
    cw = sim.client("cloudwatch")
    cw.put_metric_alarm(AlarmName=name, MetricName="5xx", Namespace="App", Statistic="Sum", Period=60, EvaluationPeriods=1,
                        Threshold=1, ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName=name, StateValue=state, StateReason="test baseline")
    return name


def patch_commands(sim, instances):
    """The AWS-RunPatchBaseline commands sent to this test's instances."""
    ssm = sim.client("ssm")
    found = {}
    for instance in instances:
        for command in ssm.list_commands(InstanceId=instance["instance_id"],
                                         Filters=[{"key": "DocumentName", "value": "AWS-RunPatchBaseline"}])["Commands"]:
            found[command["CommandId"]] = command
    return list(found.values())


class AfterFirstPatch(threading.Thread):
    """Runs action() once the run has sent its first patch command (AWS-RunPatchBaseline) to one of the test's instances:
    wave 1's canary. stop() ends the watch (a run that never patched)."""

    def __init__(self, sim, instances, action):
        super().__init__(daemon=True)
        self.sim, self.instances, self.action, self.done, self.fired = sim, instances, action, threading.Event(), False

    def run(self):
        while not self.done.is_set():
            if patch_commands(self.sim, self.instances):
                self.action()
                self.fired = True
                return
            self.done.wait(0.2)

    def stop(self):
        self.done.set()
        self.join(timeout=10)
        return self.fired


def after_first_patch(sim, instances, action):
    watcher = AfterFirstPatch(sim, instances, action)
    watcher.start()
    return watcher


def night(sim, tmp_path, count, extra):
    tag = f"gates-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": count, "name_prefix": "web"}]})
    inventory = write_fleet_inventory(tmp_path, tag)
    run_id = f"gates-{uuid.uuid4().hex[:8]}"
    variables = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                     cms_patching_serial=[1, "100%"], cms_patching_stop_parameter=f"/cms-test/{tag}/stop", **extra)
    return instances, run_id, variables, inventory


def run(sim, inventory, variables, check=False):
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=variables, check=check)
    return proc


def every_instance_explained(entries, instances):
    assert {i["instance_id"] for i in instances} <= set(entries)
    for instance in instances:
        entry = entries[instance["instance_id"]]
        assert entry.get("final_status"), entry
        if entry["final_status"] != "patched":
            assert entry.get("reason"), entry


def patch_status_tags(sim, ids):
    ec2 = sim.client("ec2")
    found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("cms-patching:last-patch-status")
            for r in found for i in r["Instances"]}


@pytest.fixture(name="fast_sim")
def fixture_fast_sim(sim):
    sim.configure(**FAST)
    return sim


def test_an_alarm_before_a_wave_stops_the_run(fast_sim, tmp_path):
    sim = fast_sim
    name = alarm(sim)
    instances, run_id, variables, inventory = night(sim, tmp_path, 4, {"cms_patching_alarms": [name]})
    sim.reset_stats()
    watcher = after_first_patch(sim, instances, lambda: sim.client("cloudwatch").set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="5xx up"))
    proc = run(sim, inventory, variables)
    assert watcher.stop(), proc.stdout[-3000:]
    # The job fails (its last play, after the report): an AWX workflow must not go on as if the night were done.
    assert proc.returncode == 2 and f"Stopped before wave 2: alarm {name} was in ALARM" in proc.stdout, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    every_instance_explained(entries, instances)
    statuses = sorted((e["final_status"], e.get("reason"), e.get("alarm_name")) for iid, e in entries.items())
    # Wave 1 (the canary) was patched before the alarm; wave 2 never started: its 3 instances are not patched.
    assert statuses == [("not_patched", "alarm", name)] * 3 + [("patched", None, None)], statuses
    assert {e.get("stop_wave") for e in entries.values() if e["final_status"] == "not_patched"} == {2}
    assert len(patch_commands(sim, instances)) == 1  # the canary's; nothing after the alarm
    # The stopped run gave back the locks of what it left (a new run may take those instances at once).
    assert "End the run here - a gate stopped it" in proc.stdout


def held_locks(sim):
    pages = sim.client("ssm").get_paginator("get_parameters_by_path").paginate(Path="/cms-patching/locks")
    return {p["Name"] for page in pages for p in page["Parameters"]}


def replace_root_tasks(sim, instance_id):
    return sim.client("ec2").describe_replace_root_volume_tasks(Filters=[{"Name": "instance-id", "Values": [instance_id]}])["ReplaceRootVolumeTasks"]


def test_an_alarm_during_the_bake_rolls_the_wave_back_and_stops_the_run(fast_sim, tmp_path):
    sim = fast_sim
    name = alarm(sim)
    instances, run_id, variables, inventory = night(sim, tmp_path, 3, {"cms_patching_alarms": [name], "cms_patching_bake_time": 30})
    sim.reset_stats()
    watcher = after_first_patch(sim, instances, lambda: sim.client("cloudwatch").set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="5xx up"))
    proc = run(sim, inventory, variables)
    assert watcher.stop(), proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    every_instance_explained(entries, instances)
    canary = [iid for iid, e in entries.items() if e["final_status"] == "rolled_back"]
    assert len(canary) == 1, entries
    entry = entries[canary[0]]
    assert (entry["reason"], entry["alarm_name"]) == ("alarm", name)
    assert entry["patch"]["outcome"] == "success" and entry["rollback"]["status"] == "succeeded"
    # Restored from its pre-patch AMI (the backup of this run), and tagged so that a resumed run does not take it as patched.
    tasks = replace_root_tasks(sim, canary[0])
    assert [t["TaskState"] for t in tasks] == ["succeeded"] and tasks[0]["ImageId"] == entry["backup"]["image_id"]
    assert patch_status_tags(sim, canary)[canary[0]] == "rolled_back"
    rest = {iid: e for iid, e in entries.items() if iid not in canary}
    assert {(e["final_status"], e["reason"], e["alarm_name"]) for e in rest.values()} == {("not_patched", "alarm", name)}
    assert len(patch_commands(sim, instances)) == 1  # the run stopped: wave 2 never started
    # The rolled-back canary fails in PLAY RECAP like any rolled-back host (Ansible then ends the play: the whole batch
    # failed); the others never failed, and their locks were given back first, so the next run may take them at once.
    stats = recap(proc.stdout)
    assert stats[canary[0]]["failed"] == 1 and all(stats[iid]["failed"] == 0 for iid in rest), proc.stdout[-3000:]
    assert not held_locks(sim) & {f"/cms-patching/locks/{i['instance_id']}" for i in instances}


def test_the_stop_switch_set_between_waves_lets_the_wave_finish_and_starts_no_other(fast_sim, tmp_path):
    sim = fast_sim
    instances, run_id, variables, inventory = night(sim, tmp_path, 4, {})
    stop = variables["cms_patching_stop_parameter"]
    sim.reset_stats()
    operator = {}

    def press_stop():
        operator["proc"] = run_playbook("playbooks/stop.yml", sim.env, extra_vars={"cms_patching_stop_parameter": stop})

    watcher = after_first_patch(sim, instances, press_stop)
    proc = run(sim, inventory, variables)
    assert watcher.stop(), proc.stdout[-3000:]
    assert operator["proc"].returncode == 0 and f"{stop} is now stop" in operator["proc"].stdout, operator["proc"].stdout[-2000:]
    assert proc.returncode == 2 and "Stopped by the operator (stop parameter) before wave 2" in proc.stdout, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    every_instance_explained(entries, instances)
    statuses = sorted((e["final_status"], e.get("reason")) for e in entries.values())
    assert statuses == [("not_patched", "stopped_by_operator")] * 3 + [("patched", None)], statuses
    assert len(patch_commands(sim, instances)) == 1
    # The stopped run gave back the locks of the instances it left: a new run may take them at once.
    assert not held_locks(sim) & {f"/cms-patching/locks/{i['instance_id']}" for i in instances}
    # Cleared, the switch says go again.
    cleared = run_playbook("playbooks/stop.yml", sim.env, extra_vars={"cms_patching_stop_parameter": stop, "cms_patching_stop": False})
    assert cleared.returncode == 0 and sim.client("ssm").get_parameter(Name=stop)["Parameter"]["Value"] == "go"


def test_a_missing_alarm_is_refused_at_settings_before_any_change(fast_sim, tmp_path):
    sim = fast_sim
    name = alarm(sim)
    _instances, _run_id, variables, inventory = night(sim, tmp_path, 1, {"cms_patching_alarms": [name, name + "-typo"]})
    sim.reset_stats()
    proc = run(sim, inventory, variables)
    assert proc.returncode != 0
    assert f"cms_patching_alarms: no CloudWatch alarm (metric or composite) named {name}-typo in us-east-1" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    calls = sim.stats()["calls"]
    assert not [c for c in calls if c.split(":")[1].startswith(("Create", "Put", "Send", "Delete", "Deregister"))], calls
    # Both settings at once: one line, before any call.
    both = dict(variables, cms_patching_alarms=[name], cms_patching_alarm_prefix="gate-")
    proc = run(sim, inventory, both)
    assert proc.returncode != 0 and "cms_patching_alarm_prefix cannot both be set" in proc.stdout


def test_check_mode_reads_the_gates_and_changes_nothing(fast_sim, tmp_path):
    sim = fast_sim
    name = alarm(sim, "ALARM")
    instances, run_id, variables, inventory = night(sim, tmp_path, 3, {"cms_patching_alarms": [name], "cms_patching_bake_time": 30})
    sim.reset_stats()
    proc = run(sim, inventory, variables, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    calls = sim.stats()["calls"]
    assert calls.get("cloudwatch:DescribeAlarms", 0) >= 2  # the settings play and wave 1's gate
    assert not [c for c in calls if c.split(":")[1].startswith(("Create", "Put", "Send", "Delete", "Deregister"))], calls
    _report, entries = read_report(tmp_path / "reports", run_id)
    every_instance_explained(entries, instances)
    assert {(e["final_status"], e["reason"], e["alarm_name"]) for e in entries.values()} == {("not_patched", "alarm", name)}


def test_the_canary_job_then_an_approval_that_timed_out(fast_sim, tmp_path):
    """The AWX workflow's canary job (cms_patching_waves [1]) patches wave 1 only; the approval's failure path runs the
    same run id with cms_patching_hold approval_not_given: the approval node's timeout (1 h) had passed since the canary
    ended (2 h ago), so the rest ends not_patched with approval_timeout."""
    sim = fast_sim
    instances, run_id, variables, inventory = night(sim, tmp_path, 3, {})
    canary = run(sim, inventory, dict(variables, cms_patching_waves=[1]))
    assert canary.returncode == 0, canary.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    # Left to another job: the report says not_reached (derived) until that job records them.
    assert sorted((e["final_status"], e.get("reason")) for e in entries.values()) == [("not_patched", "not_reached")] * 2 + [("patched", None)]
    sim.reset_stats()
    ended = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    denied = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, tags="patching",
                          extra_vars=dict(variables, cms_patching_hold="approval_not_given", cms_patching_approval_timeout=3600,
                                          cms_patching_canary_ended_at=ended))
    assert denied.returncode == 2 and "the approval was not given in time" in denied.stdout, denied.stdout[-3000:]  # the workflow ends failed
    _report, entries = read_report(tmp_path / "reports", run_id)
    every_instance_explained(entries, instances)
    assert sorted((e["final_status"], e.get("reason")) for e in entries.values()) == \
        [("not_patched", "approval_timeout")] * 2 + [("patched", "already_patched_in_run")]
    assert "ssm:SendCommand" not in sim.stats()["calls"]


def test_pause_after_canary_is_refused_without_a_terminal(fast_sim, tmp_path):
    sim = fast_sim
    _instances, _run_id, variables, inventory = night(sim, tmp_path, 1, {"cms_patching_pause_after_canary": True})
    sim.reset_stats()
    proc = run(sim, inventory, variables)
    assert proc.returncode != 0 and "cms_patching_pause_after_canary needs a terminal" in proc.stdout, proc.stdout[-2000:]
    assert not [c for c in sim.stats()["calls"] if c.split(":")[1].startswith(("Create", "Put", "Send"))]


@pytest.mark.skipif(not shutil.which("script"), reason="util-linux `script` (a pseudo-terminal for the run) is not installed")
def test_require_terminal_tells_a_terminal_from_none(tmp_path):
    """The pause's guard: with stdin a terminal (util-linux `script` gives the run a pseudo-terminal) it passes, without
    one it fails with its one line - the rule ansible.builtin.pause uses to skip its prompt."""
    playbook = tmp_path / "tty.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                        "    - cms.patching.require_terminal: {msg: no terminal here}\n      register: t\n"
                        "    - ansible.builtin.debug: {msg: \"interactive={{ t.interactive }}\"}\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    playbook_bin = str(Path(sys.executable).parent / "ansible-playbook")
    bare = subprocess.run([playbook_bin, str(playbook)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)
    assert bare.returncode != 0 and "no terminal here" in bare.stdout
    tty = subprocess.run(["script", "-qec", f"{playbook_bin} {playbook}", "/dev/null"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120, check=False)
    assert tty.returncode == 0 and "interactive=True" in tty.stdout, tty.stdout[-2000:]


class KeepCrashingAfterThePatch(threading.Thread):
    """An instance that keeps crashing once patched: when wave 1 has tagged its instances `patched` (the wave's last
    write, right before its bake), reboots the first of them every `every` seconds - each EC2 reboot makes its target
    `unhealthy` until it is back and has passed its health checks again (simulator elbv2.py) - until its rollback starts
    (a replace-root-volume task) or stop(). Repeated, so that the bake's first read sees it however late it comes."""

    def __init__(self, sim, ids, run_id, every):
        super().__init__(daemon=True)
        self.sim, self.ids, self.run_id, self.every = sim, ids, run_id, every
        self.done, self.rebooted = threading.Event(), None

    def patched(self):
        found = self.sim.client("ec2").describe_instances(InstanceIds=self.ids)["Reservations"]
        tagged = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for r in found for i in r["Instances"]}
        return sorted(iid for iid, tags in tagged.items()
                      if tags.get("cms-patching:last-patch-status") == "patched" and tags.get("cms-patching:run-id") == self.run_id)

    def run(self):
        while not self.done.is_set() and self.rebooted is None:
            patched = self.patched()
            if patched:
                self.rebooted = patched[0]
            else:
                self.done.wait(0.1)
        while not self.done.is_set() and not replace_root_tasks(self.sim, self.rebooted):
            self.sim.client("ec2").reboot_instances(InstanceIds=[self.rebooted])
            self.done.wait(self.every)

    def stop(self):
        self.done.set()
        self.join(timeout=10)
        return self.rebooted


def test_a_target_that_turns_unhealthy_during_the_bake_rolls_the_wave_back_and_stops_the_run(sim, tmp_path):
    # health_s 1 s after each reboot of reboot_s 0.3 s: rebooted every 1 s, the target stays unhealthy; drain_s: the
    # wave's deregistration does not wait the target group's 300 s delay.
    sim.configure(**dict(FAST, health_s=1, drain_s=0.3))
    tag = f"gates-{uuid.uuid4().hex[:8]}"
    web = f"web-{tag}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 4, "name_prefix": "web", "target_groups": [web]}]})
    ids = sorted(i["instance_id"] for i in instances)
    arn = sim.client("elbv2").describe_target_groups(Names=[web])["TargetGroups"][0]["TargetGroupArn"]
    pause = threading.Event()
    for _attempt in range(100):  # seeded targets start `initial`: discovery's plan counts only healthy ones
        found = sim.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        if sorted(d["Target"]["Id"] for d in found if d["TargetHealth"]["State"] == "healthy") == ids:
            break
        pause.wait(0.1)
    else:
        pytest.fail(f"the seeded targets never became healthy: {found}")
    run_id = f"gates-{uuid.uuid4().hex[:8]}"
    # Waves of 2 (cms_patching_min_healthy_percent 50 lets 2 of the 4 targets out at once): wave 1, then wave 2.
    variables = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                     cms_patching_serial=[2, "100%"], cms_patching_stop_parameter=f"/cms-test/{tag}/stop", cms_patching_bake_time=10)
    crasher = KeepCrashingAfterThePatch(sim, ids, run_id, every=1)
    crasher.start()
    proc = run(sim, write_fleet_inventory(tmp_path, tag), variables)
    rebooted = crasher.stop()
    assert rebooted, proc.stdout[-3000:]
    report, entries = read_report(tmp_path / "reports", run_id)
    every_instance_explained(entries, instances)
    wave1 = [iid for iid in ids if patch_commands(sim, [{"instance_id": iid}])]
    # Only wave 1 was patched (the run stopped at its bake), and the crashing instance was one of it.
    assert len(wave1) == 2 and rebooted in wave1, (wave1, rebooted)
    for iid in wave1:  # every instance the wave patched, not only the unhealthy one, is restored from its pre-patch AMI
        entry = entries[iid]
        assert (entry["final_status"], entry["reason"], entry["target_group"]) == ("rolled_back", "bake_unhealthy", web), entry
        assert entry["patch"]["outcome"] == "success" and entry["rollback"]["status"] == "succeeded", entry
        assert [t["ImageId"] for t in replace_root_tasks(sim, iid)] == [entry["backup"]["image_id"]]
    assert patch_status_tags(sim, wave1) == {iid: "rolled_back" for iid in wave1}
    later = [iid for iid in ids if iid not in wave1]
    assert {(entries[iid]["final_status"], entries[iid]["reason"], entries[iid]["target_group"]) for iid in later} == {
        ("not_patched", "bake_unhealthy", web)}
    assert (report["stop"]["reason"], report["stop"]["target_group"], report["stop"]["during_bake"]) == ("bake_unhealthy", web, True)
