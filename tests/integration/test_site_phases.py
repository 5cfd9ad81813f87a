"""The site playbook as operators and AWX run it: phases as separate jobs, dry runs, --limit, waves and the backup gate."""

import time
import uuid

import yaml

from helpers import FAST, FAST_VARS, read_report, recap, run_playbook, write_fleet_inventory


def fleet(sim, tmp_path, groups, **inventory_options):
    sim.configure(**FAST)
    tag = f"phases-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": groups})
    return instances, write_fleet_inventory(tmp_path, tag, **inventory_options)


def run(sim, tmp_path, inventory, run_id, **kwargs):
    extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                 cms_patching_max_fail_percentage=100)
    extra.update(kwargs.pop("extra", {}))
    return run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=extra, **kwargs)


def patch_commands(sim, run_id):
    """The patch commands of a run, oldest first: [(requested time, [instance ids])]."""
    commands = sim.client("ssm").get_paginator("list_commands").paginate().build_full_result()["Commands"]
    mine = [c for c in commands if c.get("Comment", "").startswith(f"cms-patching {run_id} patch ")]
    return [(c["RequestedDateTime"], sorted(c["InstanceIds"])) for c in sorted(mine, key=lambda c: c["RequestedDateTime"])]


def images_of(sim, instance_ids):
    images = sim.client("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "tag:cms-patching:source-instance", "Values": list(instance_ids)}])["Images"]
    return [i for i in images if i["State"] != "deregistered"]


def test_phases_run_as_separate_jobs_give_one_report(sim, tmp_path):
    instances, inventory = fleet(sim, tmp_path, [{"count": 3, "name_prefix": "web"}, {"count": 1, "name_prefix": "off", "faults": ["ssm-offline"]}])
    run_id = f"jobs-{uuid.uuid4().hex[:8]}"
    for tag in ("discovery", "backup", "patching"):
        proc = run(sim, tmp_path, inventory, run_id, tags=tag)
        assert proc.returncode == 0, (tag, proc.stdout[-3000:])
        # Each job gives every host its PLAY RECAP line (AWX host summary row), also where no discovery play ran.
        assert {i["instance_id"] for i in instances} <= set(recap(proc.stdout)), tag
        assert "fork_memory" not in proc.stderr, proc.stderr[-3000:]  # named only in the warning of a failing callback
    report, entries = read_report(tmp_path / "reports", run_id)
    assert report["phases"] == ["discovery", "backup", "patching"]
    for instance in instances:
        entry = entries[instance["instance_id"]]
        if instance["name"].startswith("off"):
            assert entry["final_status"] == "skipped" and entry["discovery"]["reasons"] == ["ssm_offline"]
            assert not images_of(sim, [instance["instance_id"]])
        else:
            assert entry["final_status"] == "patched" and entry["backup"]["verified"] and entry["patch"]["outcome"] == "success"
    # One image per backed-up instance, even though discovery ran again in the later jobs.
    assert len(images_of(sim, [i["instance_id"] for i in instances])) == 3


def test_every_host_has_a_recap_line_when_the_backup_play_is_skipped(sim, tmp_path):
    # Discovery's per-host check runs once when the backup play follows (its gate gives each host the line). With
    # --skip-tags backup the canary fails the backup gate and the later waves never start, so discovery must give it.
    instances, inventory = fleet(sim, tmp_path, [{"count": 3, "name_prefix": "nb"}])
    run_id = f"nobackup-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, inventory, run_id, extra={"cms_patching_max_fail_percentage": 0}, extra_args=("--skip-tags", "backup"))
    assert proc.returncode != 0, proc.stdout[-3000:]
    lines = recap(proc.stdout)
    assert {i["instance_id"] for i in instances} <= set(lines), proc.stdout[-3000:]
    assert sum(lines[i["instance_id"]]["failed"] for i in instances) == 1  # the canary; the rollout stopped there
    assert patch_commands(sim, run_id) == []  # no backup, no patch


def test_skipping_the_patching_play_gives_the_locks_back(sim, tmp_path):
    # The backup play keeps its locks for a patching play of the same invocation; with --skip-tags patching none comes,
    # and a patching job under another run id must not find them held for the lock's whole TTL.
    instances, inventory = fleet(sim, tmp_path, [{"count": 2, "name_prefix": "sp"}])
    proc = run(sim, tmp_path, inventory, f"nopatch-{uuid.uuid4().hex[:8]}", extra_args=("--skip-tags", "patching"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    names = [f"/cms-patching/locks/{i['instance_id']}" for i in instances]
    assert not sim.client("ssm").get_parameters(Names=names)["Parameters"]


def test_patching_job_the_next_day_finds_backups_in_aws(sim, tmp_path):
    instances, inventory = fleet(sim, tmp_path, [{"count": 2, "name_prefix": "app"}])
    assert run(sim, tmp_path, inventory, "monday-" + uuid.uuid4().hex[:6], tags="backup").returncode == 0
    tuesday = "tuesday-" + uuid.uuid4().hex[:6]
    proc = run(sim, tmp_path, inventory, tuesday, tags="patching")
    assert proc.returncode == 0, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", tuesday)
    assert {e["final_status"] for e in entries.values()} == {"patched"}
    assert sorted(i for _t, ids in patch_commands(sim, tuesday) for i in ids) == sorted(i["instance_id"] for i in instances)


def test_check_mode_is_a_dry_run_with_zero_mutating_calls(sim, tmp_path):
    excluded = {"count": 1, "name_prefix": "ex", "tags": {"cms-patching:exclude": "true"}}
    instances, inventory = fleet(sim, tmp_path, [{"count": 3, "name_prefix": "db"}, excluded])
    sim.reset_stats()
    run_id = f"dry-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, inventory, run_id, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    stats = sim.stats()
    assert stats["mutating"] == {}, stats["mutating"]
    assert stats["calls"]["ec2:DescribeInstances"] >= 1
    report, entries = read_report(tmp_path / "reports", run_id)
    planned = [e for e in entries.values() if e["final_status"] != "skipped"]
    assert len(planned) == 3 and all(e["backup"]["status"] == "would_create" and e["patch"]["outcome"] == "would_run" for e in planned)
    # A dry run decides nothing: what it would patch stays discovered (not not_patched), and the report says it was a dry run.
    assert {e["final_status"] for e in planned} == {"discovered"} and report["check_mode"] is True and report["stop"] is None
    assert not images_of(sim, [i["instance_id"] for i in instances])


def test_limit_touches_only_the_limited_hosts(sim, tmp_path):
    instances, inventory = fleet(sim, tmp_path, [{"count": 4, "name_prefix": "lim"}])
    chosen = sorted(i["instance_id"] for i in instances[:2])
    run_id = f"limit-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, inventory, run_id, limit=",".join(chosen))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(recap(proc.stdout)) == chosen
    assert sorted(i for _t, ids in patch_commands(sim, run_id) for i in ids) == chosen
    assert sorted(img["Tags"] and {t["Key"]: t["Value"] for t in img["Tags"]}["cms-patching:source-instance"]
                  for img in images_of(sim, [i["instance_id"] for i in instances])) == chosen


def static_inventory(tmp_path, instances):
    """A YAML inventory in a chosen order (wave membership follows inventory order)."""
    hosts = {i["instance_id"]: {"instance_id": i["instance_id"], "region": i["region"], "account_id": i["account_id"]} for i in instances}
    path = tmp_path / "ordered.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
    return path


def test_canary_first_then_larger_waves(sim, tmp_path):
    instances, _inventory = fleet(sim, tmp_path, [{"count": 6, "name_prefix": "wave"}])
    run_id = f"waves-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, static_inventory(tmp_path, instances), run_id, extra={"cms_patching_serial": [1, "50%"]})
    assert proc.returncode == 0, proc.stdout[-3000:]
    waves = patch_commands(sim, run_id)
    assert [len(ids) for _t, ids in waves] == [1, 3, 2]
    assert waves[0][1] == [instances[0]["instance_id"]]


def test_max_fail_percentage_stops_the_later_waves(sim, tmp_path):
    ok = {"count": 1, "name_prefix": "ok"}
    instances, _inventory = fleet(sim, tmp_path, [ok, {"count": 1, "name_prefix": "bad", "faults": ["patch-fail"]}, dict(ok, count=4)])
    ordered = sorted(instances, key=lambda i: i["name"].startswith("ok") and i["name"] != "ok-001")  # ok-001, bad-001, then the rest
    run_id = f"stop-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, static_inventory(tmp_path, ordered), run_id,
               extra={"cms_patching_serial": [2], "cms_patching_max_fail_percentage": 10})
    assert proc.returncode == 2
    report, entries = read_report(tmp_path / "reports", run_id)
    first, rest = ordered[:2], ordered[2:]
    assert entries[first[0]["instance_id"]]["final_status"] == "patched"
    assert entries[first[1]["instance_id"]]["final_status"] == "rolled_back"
    # Schema 2: the rest end not_patched with the reason the play stopped for (they were `backed_up` with no word why).
    assert {(entries[i["instance_id"]]["final_status"], entries[i["instance_id"]]["reason"]) for i in rest} == {("not_patched", "stopped_by_max_fail")}
    assert report["stop"] == {"reason": "stopped_by_max_fail", "wave": 1, "of": 3, "failed": 1, "batch_size": 2, "max_fail_percentage": 10,
                              "whole_batch_failed": False, "not_patched": 4}
    assert len(patch_commands(sim, run_id)) == 1


def test_backup_gate_refuses_missing_and_stale_backups(sim, tmp_path):
    instances, inventory = fleet(sim, tmp_path, [{"count": 2, "name_prefix": "gate"}])
    never = f"nobackup-{uuid.uuid4().hex[:6]}"
    one_wave = {"cms_patching_serial": ["100%"]}  # a failed canary would end the play before the second host
    proc = run(sim, tmp_path, inventory, never, tags="patching", extra=one_wave)
    assert proc.returncode == 2
    _report, entries = read_report(tmp_path / "reports", never)
    assert {(e["final_status"], e["reason"]) for e in entries.values()} == {("failed", "no_verified_backup")}
    assert not patch_commands(sim, never)

    assert run(sim, tmp_path, inventory, f"backup-{uuid.uuid4().hex[:6]}", tags="backup").returncode == 0
    time.sleep(2)
    stale = f"stale-{uuid.uuid4().hex[:6]}"
    proc = run(sim, tmp_path, inventory, stale, tags="patching", extra=dict(one_wave, patching_max_backup_age_hours=0.0003))  # about 1 s
    assert proc.returncode == 2
    _report, entries = read_report(tmp_path / "reports", stale)
    assert {e["reason"] for e in entries.values()} == {"no_verified_backup"}
    assert not patch_commands(sim, stale)
    assert all(recap(proc.stdout)[i["instance_id"]]["failed"] == 1 for i in instances)


def test_a_wave_over_fifty_instances_is_split_into_batches_of_fifty(sim, tmp_path):
    instances, inventory = fleet(sim, tmp_path, [{"count": 55, "name_prefix": "big"}])
    run_id = f"big-{uuid.uuid4().hex[:8]}"
    sim.reset_stats()
    proc = run(sim, tmp_path, inventory, run_id, tags="patching", extra={"patching_require_backup": False, "cms_patching_serial": ["100%"]})
    assert proc.returncode == 0, proc.stdout[-3000:]
    waves = patch_commands(sim, run_id)
    assert sorted(len(ids) for _t, ids in waves) == [5, 50]
    calls = sim.stats()["calls"]
    # pre-check + patch + no restart/health configured: 2 commands per 50 instances, polled together (ListCommands).
    assert calls["ssm:SendCommand"] == 4
    assert calls.get("ssm:GetCommandInvocation", 0) == 0
    # The run lock costs one PutParameter per instance (SSM has no batched compare-and-set); the rest is batched.
    assert calls["ssm:PutParameter"] == len(instances)
    # Polls depend on timing; the exact budget is asserted by test_bench_smoke.py. Discovery reads every target group of
    # the region (issue 17), and other tests' groups in the shared simulator count: test_bench_smoke asserts that term.
    topology = sum(n for action, n in calls.items() if action.startswith("elasticloadbalancing:"))
    assert (sum(calls.values()) - calls["ssm:PutParameter"] - topology) / len(instances) < 1.5


def test_no_wave_starts_after_the_deadline(sim, tmp_path):
    instances, inventory = fleet(sim, tmp_path, [{"count": 2, "name_prefix": "late"}])
    run_id = f"late-{uuid.uuid4().hex[:8]}"
    proc = run(sim, tmp_path, inventory, run_id, extra={"cms_patching_not_after": "2020-01-01T00:00:00Z"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    # Schema 2: backed up and never patched in a run whose patching phase ran is not_patched (it was backed_up).
    assert {(e["final_status"], e.get("reason")) for e in entries.values()} == {("not_patched", "deadline_passed")}
    assert not patch_commands(sim, run_id)
    assert len(entries) == len(instances)
