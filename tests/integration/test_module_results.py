"""Module results a direct caller can trust, against the simulator: a call in which no instance succeeded fails with
one line summing up the per-instance results (which stay in the result), fail_on_no_success: false opts out, and an
instance id EC2 does not know is not_found, not an SSM registration problem."""

import uuid

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, image_pending_s=0.2, ping_interval_s=0.5)  # short agent pings: see helpers.FAST
UNKNOWN = "i-0123456789abcdef0"  # well-formed, but no simulated account has it
UNKNOWN_ERROR = f"instance {UNKNOWN} not found: EC2 in us-east-1 does not know it (wrong region or account, or a typo)"


def seed(sim, groups):
    spec = {"region": "us-east-1", "tags": {"cms-test": f"mr-{uuid.uuid4().hex[:8]}"},
            "groups": [dict(count=n, name_prefix=p, faults=f) for p, (n, f) in groups.items()]}
    return [i["instance_id"] for i in sim.seed(spec)]


def patch_args(ids, **kw):
    return dict(dict(instance_ids=ids, run_id="run-mr", poll_interval=0.2, agent_online_timeout=3, execution_timeout=60,
                     agent_check_interval=0.5), **kw)


def test_ssm_patch_run_with_only_an_unknown_id_fails_as_not_found(sim):
    sim.reset_stats()
    result = run_module("ssm_patch_run", patch_args([UNKNOWN]), sim.env)
    assert result["rc"] != 0 and result["failed"] is True
    assert result["msg"] == f"no instance succeeded: 1 not_found ({UNKNOWN}); first error: {UNKNOWN_ERROR}"
    assert "Traceback" not in result["stderr"]
    assert [(r["outcome"], r["error"], r["command_id"]) for r in result["results"]] == [("not_found", UNKNOWN_ERROR, None)]
    assert result["changed"] is False and sim.stats()["mutating"] == {}


def test_fail_on_no_success_false_returns_the_results_without_failing(sim):
    result = run_module("ssm_patch_run", patch_args([UNKNOWN], fail_on_no_success=False), sim.env)
    assert result["rc"] == 0 and not result.get("failed"), result.get("msg")
    assert [r["outcome"] for r in result["results"]] == ["not_found"]


def test_unknown_unmanaged_and_good_instances_each_get_their_own_outcome_and_the_call_succeeds(sim):
    sim.configure(**FAST)
    ok, unmanaged = seed(sim, {"ok": (1, []), "um": (1, ["ssm-unmanaged"])})
    result = run_module("ssm_patch_run", patch_args([ok, unmanaged, UNKNOWN], operation="Scan"), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert [r["outcome"] for r in result["results"]] == ["success", "undeliverable", "not_found"]
    assert "SSM agent not registered" in result["results"][1]["error"]
    checked = run_module("ssm_patch_run", patch_args([ok, UNKNOWN]), sim.env, check_mode=True)
    assert checked["rc"] == 0 and [r["outcome"] for r in checked["results"]] == ["would_run", "not_found"]


def test_ssm_command_run_without_success_sums_up_each_outcome(sim):
    (unmanaged,) = seed(sim, {"um": (1, ["ssm-unmanaged"])})
    sim.reset_stats()
    result = run_module("ssm_command_run", dict(step="health", instance_ids=[UNKNOWN, unmanaged], commands=["true"], poll_interval=0.2),
                        sim.env)
    assert result["rc"] != 0 and result["msg"] == (f"no instance succeeded: 1 not_found ({UNKNOWN}), 1 undeliverable ({unmanaged}); "
                                                   f"first error: {UNKNOWN_ERROR}")
    assert [r["outcome"] for r in result["results"]] == ["not_found", "undeliverable"] and sim.stats()["mutating"] == {}


def test_ec2_root_restore_where_every_restore_is_refused_fails(sim):
    (stopped,) = seed(sim, {"st": (1, [])})
    sim.client("ec2").stop_instances(InstanceIds=[stopped])
    instances = [dict(instance_id=stopped, image_id="ami-0123456789abcdef0"), dict(instance_id=UNKNOWN, image_id="ami-0123456789abcdef0")]
    result = run_module("ec2_root_restore", dict(instances=instances, poll_interval=0.2), sim.env)
    assert result["rc"] != 0
    assert result["msg"].startswith(f"no instance succeeded: 2 failed ({stopped}, {UNKNOWN}); first error: instance {stopped} is ")
    assert [r["status"] for r in result["results"]] == ["failed", "failed"]
    opted_out = run_module("ec2_root_restore", dict(instances=instances, poll_interval=0.2, fail_on_no_success=False), sim.env)
    assert opted_out["rc"] == 0 and [r["status"] for r in opted_out["results"]] == ["failed", "failed"]


def test_ami_backup_verify_where_every_backup_failed_fails(sim):
    sim.configure(**FAST)
    ids = seed(sim, {"amifail": (2, ["ami-fail"])})
    result = run_module("ami_backup_verify", dict(instance_ids=ids, poll_interval=0.1, run_id="run-mr"), sim.env)
    assert result["rc"] != 0
    assert result["msg"].startswith(f"no instance succeeded: 2 failed ({ids[0]}, {ids[1]}); first error: image ")
    assert [b["status"] for b in result["backups"]] == ["failed", "failed"] and result["changed"] is True
