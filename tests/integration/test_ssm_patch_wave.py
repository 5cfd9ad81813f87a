"""ssm_patch_wave against the simulator: one call runs a whole wave over two regions and two accounts."""

import uuid

import pytest

from helpers import FAST, run_module

OTHER_ACCOUNT = "222222222222"
OTHER_ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/cms-patching"
# (faults, backed up, expected final_status, reason)
KINDS = {
    "ok": ([], True, "patched", None),
    "pre": (["precheck-fail"], True, "failed", "precheck_failed"),
    "pf": (["patch-fail"], True, "rolled_back", "patch_failed"),
    "hl": (["health-fail"], True, "rolled_back", "health_check_failed"),
    "nobk": ([], False, "failed", "no_verified_backup"),
}


@pytest.fixture
def fleet(sim):
    sim.configure(**FAST)
    tag = f"wave-{uuid.uuid4().hex[:8]}"
    groups = [dict(count=2 if kind == "ok" else 1, name_prefix=kind, faults=faults) for kind, (faults, _b, _s, _r) in KINDS.items()]
    groups += [dict(count=2, name_prefix="okeu", region="eu-west-1"), dict(count=1, name_prefix="pfeu", region="eu-west-1", faults=["patch-fail"]),
               dict(count=2, name_prefix="okacct", account_id=OTHER_ACCOUNT), dict(count=1, name_prefix="hlacct", account_id=OTHER_ACCOUNT,
                                                                                   faults=["health-fail"])]
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": groups})
    for inst in instances:
        inst["kind"] = {"okeu": "ok", "pfeu": "pf", "okacct": "ok", "hlacct": "hl"}.get(prefix(inst), prefix(inst))
    for (region, account), members in partition(instances).items():
        ids = [i["instance_id"] for i in members if KINDS[i["kind"]][1]]
        args = {"instance_ids": ids, "run_id": "run-wave", "poll_interval": 0.1, "region": region}
        if account == OTHER_ACCOUNT:
            args["role_arn"] = OTHER_ROLE
        made = run_module("ami_backup_verify", args, sim.env)
        assert made["rc"] == 0, made.get("msg")
    return instances


def prefix(inst):
    return inst["name"].rsplit("-", 1)[0]


def partition(instances):
    parts = {}
    for inst in instances:
        parts.setdefault((inst["region"], inst["account_id"]), []).append(inst)
    return parts


def wave_args(instances, **kw):
    args = dict(run_id="run-wave", poll_interval=0.2, execution_timeout=60, agent_online_timeout=20, agent_check_interval=0.5,
                command_timeout=60, rollback_timeout=60, fail_on_no_success=True,
                instances=[dict(instance_id=i["instance_id"], region=i["region"], account_id=i["account_id"], platform="linux",
                                role_arn=OTHER_ROLE if i["account_id"] == OTHER_ACCOUNT else None,
                                precheck_commands=["test -d /"], restart_services=["nginx"],
                                health_checks=["curl -fsS http://localhost/health"]) for i in instances])
    args.update(kw)
    return args


def test_one_call_runs_the_whole_wave_in_every_partition(sim, fleet):
    sim.reset_stats()
    result = run_module("ssm_patch_wave", wave_args(fleet), sim.env)
    assert result["rc"] == 0, result.get("msg")
    assert result["changed"] is True
    by_id = {e["instance_id"]: e for e in result["results"]}
    assert [e["instance_id"] for e in result["results"]] == [i["instance_id"] for i in fleet]
    for inst in fleet:
        _faults, _backed, status, reason = KINDS[inst["kind"]]
        entry = by_id[inst["instance_id"]]
        assert (entry["final_status"], entry.get("reason")) == (status, reason), (inst["name"], entry)
        assert entry["rollback"]["performed"] is (status == "rolled_back"), inst["name"]
        assert result["outcomes"][inst["instance_id"]]["final_status"] == status
        assert all(s["started_at"] < s["ended_at"] for s in entry["steps"].values()), entry["steps"]
    assert sorted((p["region"], p["account_id"], p["instance_count"]) for p in result["partitions"]) == sorted(
        (region, account, len(members)) for (region, account), members in partition(fleet).items())
    assert len(result["partitions"]) == 3
    steps = result["summary"]["steps"]
    assert steps["gate"] == {"passed": 11, "failed": 1} and steps["precheck"] == {"passed": 10, "failed": 1}
    assert steps["patch"] == {"passed": 8, "failed": 2} and steps["health"] == {"passed": 6, "failed": 2}
    assert steps["rollback"] == {"passed": 4, "failed": 0}
    assert result["summary"]["final_status"] == {"patched": 6, "rolled_back": 4, "failed": 2}
    # Status tags in AWS (the default account's instances; the other account's are tagged through its role)
    for inst in fleet:
        if inst["account_id"] == OTHER_ACCOUNT:
            continue
        tags = {t["Key"]: t["Value"] for t in sim.client("ec2", inst["region"]).describe_tags(
            Filters=[{"Name": "resource-id", "Values": [inst["instance_id"]]}])["Tags"]}
        assert tags["cms-patching:last-patch-status"] == KINDS[inst["kind"]][2] and tags["cms-patching:run-id"] == "run-wave"
    calls = sim.stats()["calls"]
    # Batched as the single-step modules batch: one SendCommand per step, script and partition, one CreateTags per status.
    assert calls["ssm:SendCommand"] <= 3 * 4 and calls["ec2:CreateTags"] <= 3 * 3


def test_check_mode_sends_nothing(sim, fleet):
    sim.reset_stats()
    result = run_module("ssm_patch_wave", wave_args(fleet), sim.env, check_mode=True)
    assert result["rc"] == 0, result.get("msg")
    assert not sim.stats().get("mutating"), sim.stats()
    for entry in result["results"]:
        assert "final_status" not in entry
        backed = KINDS[next(i for i in fleet if i["instance_id"] == entry["instance_id"])["kind"]][1]
        assert ((entry["patch"] or {}).get("outcome") == "would_run") is backed


def test_no_success_fails_with_one_line_and_keeps_the_results(sim, fleet):
    failing = [i for i in fleet if i["kind"] in ("nobk", "pre")]
    result = run_module("ssm_patch_wave", wave_args(failing), sim.env)
    assert result["rc"] != 0 and result["failed"]
    assert result["msg"].startswith("no instance of the wave succeeded: ") and "\n" not in result["msg"]
    assert "failed/no_verified_backup" in result["msg"] and "failed/precheck_failed" in result["msg"]
    assert {e["instance_id"] for e in result["results"]} == {i["instance_id"] for i in failing}
    assert "Traceback" not in result["stderr"]
    opted_out = run_module("ssm_patch_wave", wave_args(failing, fail_on_no_success=False), sim.env)
    assert opted_out["rc"] == 0 and {e["final_status"] for e in opted_out["results"]} == {"failed"}


def test_bad_input_is_one_line_before_any_call(sim):
    sim.reset_stats()
    result = run_module("ssm_patch_wave", {"instances": [{"instance_id": "i-nope", "region": "us-east-1"}]}, sim.env)
    assert result["rc"] != 0 and "malformed instance id" in result["msg"] and "Traceback" not in result["stderr"]
    assert not sim.stats()["calls"]
