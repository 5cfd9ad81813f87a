"""Input validation, per-instance planning (reuse / adopt / create) and the whole workflow on an in-memory EC2."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils.backup import naming as N
from ansible_collections.cms.patching.plugins.module_utils.backup.run import creation_tags, plan_instance, run_backup
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.tests.unit.fakes.ec2 import NOW, FakeEc2, instance, record

VOLS = [("/dev/xvda", "vol-1")]


def params(**overrides):
    base = dict(instance_ids=["i-00000001"], name=N.DEFAULT_NAME, description=N.DEFAULT_DESCRIPTION, no_reboot=True, tags=None,
                run_id="run-1", create=True, wait=True, wait_timeout=60, poll_interval=0.01, max_concurrent=50,
                max_age_hours=None, retention_count=None, retention_days=None)
    base.update(overrides)
    return base


@pytest.mark.parametrize("overrides, message", [
    ({"instance_ids": []}, "instance_ids must name at least one instance"),
    ({"instance_ids": ["i-123"]}, "malformed instance id(s): i-123"),
    ({"instance_ids": ["i-00000001", "i-00000001"]}, "duplicate instance id(s): i-00000001"),
    ({"name": "x-{instance}"}, "name: unknown placeholder {instance}"),
    ({"description": "{nope}"}, "description: unknown placeholder {nope}"),
    ({"run_id": "bad id"}, "run_id 'bad id'"),
    ({"wait_timeout": -5}, "wait_timeout must be greater than 0, got -5"),
    ({"wait_timeout": 0}, "wait_timeout must be greater than 0, got 0"),
    ({"poll_interval": 0}, "poll_interval must be greater than 0"),
    ({"max_concurrent": 0}, "max_concurrent must be greater than 0"),
    ({"retention_count": 0}, "retention_count must be greater than 0, got 0"),
    ({"retention_days": 0}, "retention_days must be greater than 0, got 0"),
    ({"max_age_hours": -1.5}, "max_age_hours must be greater than 0, got -1.5"),
    ({"tags": {"cms-patching:verified": "true"}}, "tags: cms-patching:verified use a reserved prefix"),
    ({"tags": {"aws:foo": "x"}}, "tags: aws:foo use a reserved prefix"),
])
def test_bad_input_is_one_line_before_any_aws_call(overrides, message):
    ec2 = FakeEc2()
    with pytest.raises(PatchingError) as err:
        run_backup(ec2, params(**overrides))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert sum(ec2.calls.values()) == 0


def test_plan_reuses_verified_backup_of_same_run_even_if_old():
    recs = [record(image_id="ami-00000002", run_id="other", hours_ago=1), record(image_id="ami-00000001", run_id="run-1", hours_ago=50)]
    assert plan_instance(recs, "run-1", VOLS, now=NOW) == ("reuse", recs[1])


def test_plan_reuses_young_verified_backup_of_another_run_only_with_max_age():
    young = record(run_id="other", hours_ago=3)
    assert plan_instance([young], "run-1", VOLS, now=NOW)[0] == "create"
    assert plan_instance([young], "run-1", VOLS, max_age_hours=4, now=NOW) == ("reuse", young)
    assert plan_instance([young], "run-1", VOLS, max_age_hours=2, now=NOW)[0] == "create"


def test_plan_does_not_reuse_a_backup_missing_a_current_volume():
    young = record(run_id="other", hours_ago=1)
    assert plan_instance([young], "run-1", VOLS + [("/dev/sdf", "vol-2")], max_age_hours=4, now=NOW)[0] == "create"


def test_plan_adopts_unverified_image_of_same_run():
    for state in ("pending", "available"):
        rec = record(run_id="run-1", verified=False, state=state, hours_ago=30)
        assert plan_instance([rec], "run-1", VOLS, now=NOW) == ("adopt", rec)


@pytest.mark.parametrize("state", ["pending", "available"])
def test_plan_adopts_a_recent_unverified_image_of_another_run_but_not_a_stale_one(state):
    recent = record(run_id="killed", verified=False, state=state, hours_ago=0.5)
    stale = record(run_id="killed", verified=False, state=state, hours_ago=2)
    assert plan_instance([recent], "run-2", VOLS, wait_timeout=3600, now=NOW) == ("adopt", recent)
    assert plan_instance([stale], "run-2", VOLS, wait_timeout=3600, now=NOW)[0] == "create"


def test_plan_never_reuses_or_adopts_failed_images():
    failed = record(run_id="run-1", verified=False, state="failed")
    assert plan_instance([failed], "run-1", VOLS, now=NOW) == ("create", None)


def test_creation_tags_go_on_image_and_snapshots_with_ownership_last():
    specs = creation_tags("i-00000001", "run-1", "2024-05-01T12:00:00Z", {"Team": "ops", "n": 3})
    assert [s["ResourceType"] for s in specs] == ["image", "snapshot"]
    tags = {t["Key"]: t["Value"] for t in specs[0]["Tags"]}
    assert tags == {"Team": "ops", "n": "3", "cms-patching:managed": "true", "cms-patching:source-instance": "i-00000001",
                    "cms-patching:run-id": "run-1", "cms-patching:created-at": "2024-05-01T12:00:00Z"}


def fleet(n, **fake):
    ids = [f"i-{k:08x}" for k in range(1, n + 1)]
    ec2 = FakeEc2({i: instance(i, volumes=2, name=f"web{k}") for k, i in enumerate(ids)})
    ec2.polls_to_finish = 1
    for key, value in fake.items():
        setattr(ec2, key, value)
    return ec2, ids


def mutating(ec2):
    return {k: v for k, v in ec2.calls.items() if not k.startswith("describe")}


def test_unknown_instances_are_listed_in_one_line_before_anything_is_created():
    ec2, ids = fleet(2)
    with pytest.raises(PatchingError, match=r"^instance\(s\) not found \(or terminated\): i-0000000a, i-0000000b$"):
        run_backup(ec2, params(instance_ids=ids + ["i-0000000a", "i-0000000b"]))
    assert mutating(ec2) == {}


def test_workflow_creates_verifies_tags_once_and_cleans_up_failures():
    ec2, ids = fleet(6, fail_on={"i-00000002": "ami-fail", "i-00000004": "snapshot-error"})
    result = run_backup(ec2, params(instance_ids=ids))
    by_id = {b["instance_id"]: b for b in result["backups"]}
    assert [b["status"] for b in result["backups"]] == ["created", "failed", "created", "failed", "created", "created"]
    assert by_id["i-00000002"]["error"].endswith("is failed")
    assert by_id["i-00000002"]["state"] == by_id["i-00000004"]["state"] == "deregistered"
    assert "is in state error" in by_id["i-00000004"]["error"]
    assert all(b["verified"] and len(b["snapshot_ids"]) == 2 for b in result["backups"] if b["status"] == "created")
    assert ec2.calls["create_image"] == 6 and ec2.calls["create_tags"] == 1
    # failed images and their snapshots are gone, the good ones carry the verified tag on image and snapshots
    assert {p["instance_id"] for p in result["pruned"]} == {"i-00000002", "i-00000004"}
    assert {p["reason"] for p in result["pruned"]} == {"failed"}
    assert len(ec2.images) == 4 and len(ec2.snapshots) == 8
    assert all({"Key": "cms-patching:verified", "Value": "true"} in r["Tags"] for r in list(ec2.images.values()) + list(ec2.snapshots.values()))
    assert result["summary"] == {"total": 6, "created": 4, "failed": 2, "pruned_images": 2, "pruned_snapshots": 4}
    assert result["changed"] is True


def test_rerun_with_same_run_id_reuses_and_changes_nothing():
    ec2, ids = fleet(3)
    first = run_backup(ec2, params(instance_ids=ids))
    ec2.calls.clear()
    second = run_backup(ec2, params(instance_ids=ids))
    assert [b["status"] for b in second["backups"]] == ["reused"] * 3
    assert [b["image_id"] for b in second["backups"]] == [b["image_id"] for b in first["backups"]]
    assert second["changed"] is False and mutating(ec2) == {}


def test_no_wait_then_wait_adopts_instead_of_creating_twice():
    ec2, ids = fleet(3)
    ec2.polls_to_finish = 3
    first = run_backup(ec2, params(instance_ids=ids, wait=False))
    assert [(b["status"], b["verified"], b["state"]) for b in first["backups"]] == [("created", False, "pending")] * 3
    second = run_backup(ec2, params(instance_ids=ids))
    assert [(b["status"], b["verified"], b["adopted"]) for b in second["backups"]] == [("created", True, True)] * 3
    assert ec2.calls["create_image"] == 3 and len(ec2.images) == 3


def test_check_mode_reports_would_create_and_mutates_nothing():
    ec2, ids = fleet(3)
    result = run_backup(ec2, params(instance_ids=ids, retention_count=1), check_mode=True)
    assert [b["status"] for b in result["backups"]] == ["would_create"] * 3
    assert result["backups"][0]["name"].startswith("cms-patching-i-00000001-")
    assert result["changed"] is True and mutating(ec2) == {}


def test_retention_keeps_count_and_only_touches_owned_images():
    ec2, ids = fleet(1)
    for run in ("r1", "r2", "r3"):
        run_backup(ec2, params(instance_ids=ids, run_id=run))
    foreign = ec2.create_image(InstanceId=ids[0], Name="cms-patching-i-00000001-foreign", Description="", NoReboot=True,
                               TagSpecifications=[{"ResourceType": r, "Tags": [{"Key": "cms-patching:source-instance", "Value": ids[0]}]}
                                                  for r in ("image", "snapshot")])["ImageId"]
    result = run_backup(ec2, params(instance_ids=ids, run_id="r4", retention_count=2))
    assert [p["reason"] for p in result["pruned"]] == ["retention_count", "retention_count"]
    assert foreign in ec2.images and len(ec2.images) == 3
    assert result["summary"]["pruned_snapshots"] == 4


def test_create_false_applies_retention_only():
    ec2, ids = fleet(2)
    for run in ("r1", "r2"):
        run_backup(ec2, params(instance_ids=ids[:1], run_id=run))
    ec2.calls.clear()
    result = run_backup(ec2, params(instance_ids=ids, create=False, retention_count=1))
    assert [b["status"] for b in result["backups"]] == ["existing", "missing"]
    assert len(result["pruned"]) == 1 and ec2.calls["create_image"] == 0 and ec2.calls["describe_instances"] == 0


def test_retried_create_image_that_had_succeeded_adopts_its_own_image():
    ec2, ids = fleet(2)
    ec2.lost_responses = {ids[0]}
    result = run_backup(ec2, params(instance_ids=ids))
    assert [(b["status"], b["verified"]) for b in result["backups"]] == [("created", True)] * 2
    assert len(ec2.images) == 2


def test_name_taken_by_a_foreign_image_fails_that_instance_only():
    ec2, ids = fleet(2)
    taken = N.render_name("{instance_id}-x", N.placeholder_values(ids[0], None, "run-1", NOW))
    ec2.images["ami-0f0f0f0f"] = {"State": "available", "Tags": [], "Name": taken, "Blocks": [], "instance": ids[0], "polls": 0}
    result = run_backup(ec2, params(instance_ids=ids, name="{instance_id}-x"))
    assert [b["status"] for b in result["backups"]] == ["failed", "created"]
    assert result["backups"][0]["error"] == f"ec2:CreateImage failed for {ids[0]}: InvalidAMIName.Duplicate: AMI name {taken} is already in use"
    assert "ami-0f0f0f0f" in ec2.images and result["pruned"] == []
