"""Retention selection and the ownership guard on every deletion."""

import pytest
from botocore.exceptions import ClientError

from ansible_collections.cms.patching.plugins.module_utils.backup.retention import prune_images, select_for_retention, sweep_orphaned_snapshots
from ansible_collections.cms.patching.tests.unit.fakes.ec2 import NOW, FakeEc2, record


def images(*specs):
    """specs: (hours_ago, verified, state) newest or oldest in any order; ids follow the order given."""
    return [record(image_id=f"ami-{n:08x}", hours_ago=h, verified=v, state=s, mappings=(("/dev/xvda", f"snap-{n:08x}"),))
            for n, (h, v, s) in enumerate(specs, start=1)]


def chosen(selection):
    return [(r["image_id"], why) for r, why in selection]


def test_count_keeps_newest_verified_counting_this_runs_new_backup():
    recs = images((1, True, "available"), (30, True, "available"), (60, True, "available"))
    assert chosen(select_for_retention(recs, set(), retention_count=2, now=NOW, newer_backups=1)) == [
        ("ami-00000003", "retention_count"), ("ami-00000002", "retention_count")]
    assert chosen(select_for_retention(recs, set(), retention_count=2, now=NOW)) == [("ami-00000003", "retention_count")]


def test_count_ignores_unverified_and_pending_images():
    recs = images((1, False, "available"), (2, False, "pending"), (30, True, "available"), (60, True, "available"))
    assert chosen(select_for_retention(recs, set(), retention_count=1, now=NOW, newer_backups=1)) == [
        ("ami-00000004", "retention_count"), ("ami-00000003", "retention_count")]


def test_reused_backup_and_newest_verified_are_both_kept_even_beyond_the_count():
    # this run reused ami-2; ami-1 is newer (another run's) and is what a rollback would pick: neither may go
    recs = images((1, True, "available"), (30, True, "available"), (60, True, "available"))
    assert chosen(select_for_retention(recs, {"ami-00000002"}, retention_count=1, now=NOW)) == [("ami-00000003", "retention_count")]


def test_days_removes_old_available_images_verified_or_not_but_never_pending():
    recs = images((1, True, "available"), (3 * 24, False, "available"), (4 * 24, True, "available"), (5 * 24, False, "pending"))
    assert chosen(select_for_retention(recs, set(), retention_days=2, now=NOW, newer_backups=1)) == [
        ("ami-00000003", "retention_days"), ("ami-00000002", "retention_days")]


def test_newest_verified_backup_survives_when_this_run_made_none():
    recs = images((10 * 24, True, "available"), (20 * 24, True, "available"))
    assert chosen(select_for_retention(recs, set(), retention_days=1, now=NOW)) == [("ami-00000002", "retention_days")]
    # with a fresh verified backup of this run, the old ones all go
    assert len(select_for_retention(recs, set(), retention_days=1, now=NOW, newer_backups=1)) == 2


def test_count_and_days_together_remove_what_either_rule_removes():
    recs = images((1, True, "available"), (2, True, "available"), (9 * 24, True, "available"))
    assert chosen(select_for_retention(recs, set(), retention_count=3, retention_days=7, now=NOW, newer_backups=1)) == [
        ("ami-00000003", "retention_count")]  # first reason found wins; it is beyond the count and too old
    assert chosen(select_for_retention(recs, set(), retention_count=5, retention_days=7, now=NOW, newer_backups=1)) == [
        ("ami-00000003", "retention_days")]


def test_failed_images_are_not_retentions_business():
    recs = images((1, True, "available"), (30, False, "failed"))
    assert select_for_retention(recs, set(), retention_count=1, retention_days=1, now=NOW) == []


def _ec2_with(image_specs):
    """A fake holding images and snapshots; image_specs: [(image_id, image_managed, [(snap_id, snap_managed)])]."""
    ec2 = FakeEc2()
    for image_id, managed, snaps in image_specs:
        ec2.images[image_id] = {"State": "available", "Tags": [], "Name": image_id, "instance": "i-1", "polls": 0,
                                "Blocks": [{"DeviceName": f"/dev/sd{chr(97 + n)}", "Ebs": {"SnapshotId": s}} for n, (s, _m) in enumerate(snaps)]}
        for snap_id, snap_managed in snaps:
            ec2.snapshots[snap_id] = {"State": "completed", "VolumeId": "vol-1",
                                      "Tags": [{"Key": "cms-patching:managed", "Value": "true"}] if snap_managed else []}
    return ec2


def test_prune_deletes_only_snapshots_carrying_the_ownership_tag():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True), ("snap-b", False)])])
    rec = record(image_id="ami-00000001", mappings=(("/dev/xvda", "snap-a"), ("/dev/sdf", "snap-b")))
    [entry] = prune_images(ec2, [(rec, "retention_count")])
    assert entry["snapshot_ids"] == ["snap-a"] and entry["kept_snapshot_ids"] == ["snap-b"] and entry["error"] is None
    assert "ami-00000001" not in ec2.images and set(ec2.snapshots) == {"snap-b"}
    assert ec2.calls["describe_snapshots"] == 1


def test_prune_refuses_images_without_ownership_tag():
    ec2 = _ec2_with([("ami-00000002", False, [("snap-c", True)])])
    assert prune_images(ec2, [(record(image_id="ami-00000002", managed=False, mappings=(("/dev/xvda", "snap-c"),)), "failed")]) == []
    assert "ami-00000002" in ec2.images and ec2.calls["deregister_image"] == 0


def test_prune_in_check_mode_reports_and_changes_nothing():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True)])])
    [entry] = prune_images(ec2, [(record(image_id="ami-00000001", mappings=(("/dev/xvda", "snap-a"),)), "retention_days")], check_mode=True)
    assert entry["snapshot_ids"] == ["snap-a"] and "ami-00000001" in ec2.images and "snap-a" in ec2.snapshots
    assert ec2.calls["deregister_image"] == 0 and ec2.calls["delete_snapshot"] == 0


def test_prune_batches_snapshot_lookup_over_many_images():
    specs = [(f"ami-{n:08x}", True, [(f"snap-{n:08x}", True)]) for n in range(1, 26)]
    ec2 = _ec2_with(specs)
    recs = [(record(image_id=i, mappings=(("/dev/xvda", s[0][0]),)), "retention_count") for i, _m, s in specs]
    assert len(prune_images(ec2, recs)) == 25
    # every snapshot is the tool's: DeregisterImage deletes them itself (DeleteAssociatedSnapshots), no DeleteSnapshot
    assert ec2.calls["describe_snapshots"] == 1 and ec2.calls["deregister_image"] == 25 and ec2.calls["delete_snapshot"] == 0
    assert not ec2.snapshots and not ec2.images


def _one(ec2, snaps):
    return [(record(image_id="ami-00000001", mappings=tuple((f"/dev/sd{chr(97 + n)}", sid) for n, sid in enumerate(snaps))), "retention_days")]


def test_prune_deletes_the_snapshots_with_the_image_when_all_are_the_tools():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True), ("snap-b", True)])])
    ec2.in_use_after_deregister = 99  # a DeleteSnapshot after a plain DeregisterImage would be refused
    [entry] = prune_images(ec2, _one(ec2, ["snap-a", "snap-b"]), sleep=lambda s: None)
    assert entry["error"] is None and entry["snapshot_ids"] == ["snap-a", "snap-b"]
    assert not ec2.snapshots and ec2.calls["deregister_image"] == 1 and ec2.calls["delete_snapshot"] == 0


def test_prune_falls_back_when_the_endpoint_refuses_delete_associated_snapshots():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True)])])
    ec2.delete_associated = False
    [entry] = prune_images(ec2, _one(ec2, ["snap-a"]), sleep=lambda s: None)
    assert entry["error"] is None and not ec2.snapshots and not ec2.images
    assert ec2.calls["deregister_image"] == 2 and ec2.calls["delete_snapshot"] == 1


def test_prune_retries_a_snapshot_still_in_use_by_its_deregistered_image():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True), ("snap-b", False)])])  # a foreign snapshot: no DeleteAssociatedSnapshots
    ec2.in_use_after_deregister = 2
    slept = []
    [entry] = prune_images(ec2, _one(ec2, ["snap-a", "snap-b"]), poll_interval=7, sleep=slept.append)
    assert entry["error"] is None and entry["snapshot_ids"] == ["snap-a"] and entry["kept_snapshot_ids"] == ["snap-b"]
    assert set(ec2.snapshots) == {"snap-b"} and slept == [7, 7]  # refused twice, deleted at the second poll
    assert ec2.calls["delete_snapshot"] == 3


def test_prune_reports_a_snapshot_in_use_too_long_and_leaves_it_for_the_sweep():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True), ("snap-b", False)])])
    ec2.in_use_after_deregister = 99
    slept = []
    [entry] = prune_images(ec2, _one(ec2, ["snap-a", "snap-b"]), poll_interval=5, sleep=slept.append)
    assert "snap-a: still in use after deregistering ami-00000001" in entry["error"] and "\n" not in entry["error"]
    assert "orphan sweep deletes it once no image uses it" in entry["error"]
    assert "ami-00000001" not in ec2.images and set(ec2.snapshots) == {"snap-a", "snap-b"} and slept == [5, 5, 5]


def test_prune_keeps_a_snapshot_another_image_uses_without_an_error():
    # snap-shared also backs ami-00000002: DeregisterImage with DeleteAssociatedSnapshots skips it (ReturnCode skipped).
    ec2 = _ec2_with([("ami-00000001", True, [("snap-a", True), ("snap-shared", True)]), ("ami-00000002", True, [("snap-shared", True)])])
    slept = []
    [entry] = prune_images(ec2, _one(ec2, ["snap-a", "snap-shared"]), sleep=slept.append)
    assert entry["error"] is None, entry["error"]
    assert entry["snapshot_ids"] == ["snap-a"] and entry["kept_snapshot_ids"] == ["snap-shared"]
    assert "snap-shared" in entry["note"] and "another image" in entry["note"]
    assert set(ec2.snapshots) == {"snap-shared"} and "ami-00000002" in ec2.images
    assert ec2.calls["delete_snapshot"] == 0 and slept == []  # no DeleteSnapshot bound to be refused, no settling


def test_fake_refuses_to_delete_a_snapshot_an_image_uses():
    ec2 = _ec2_with([("ami-00000002", True, [("snap-shared", True)])])
    with pytest.raises(ClientError) as err:
        ec2.delete_snapshot(SnapshotId="snap-shared")
    assert err.value.response["Error"]["Code"] == "InvalidSnapshot.InUse" and "snap-shared" in ec2.snapshots


def _snapshot(ec2, snap_id, instance_id, managed=True, state="completed"):
    tags = [{"Key": "cms-patching:source-instance", "Value": instance_id}]
    tags += [{"Key": "cms-patching:managed", "Value": "true"}] if managed else []
    ec2.snapshots[snap_id] = {"State": state, "VolumeId": "vol-1", "Tags": tags}


def test_sweep_deletes_only_the_tools_finished_snapshots_that_no_image_uses():
    ec2 = _ec2_with([("ami-00000001", True, [("snap-used", True)])])
    _snapshot(ec2, "snap-used", "i-1")
    _snapshot(ec2, "snap-orphan", "i-1")
    _snapshot(ec2, "snap-error", "i-1", state="error")
    _snapshot(ec2, "snap-pending", "i-1", state="pending")  # an image still being created owns it
    _snapshot(ec2, "snap-foreign", "i-1", managed=False)
    _snapshot(ec2, "snap-elsewhere", "i-2")  # not an instance of this run
    before = set(ec2.snapshots)
    [preview] = sweep_orphaned_snapshots(ec2, ["i-1"], check_mode=True)
    assert set(ec2.snapshots) == before and ec2.calls["delete_snapshot"] == 0
    assert preview == {"instance_id": "i-1", "image_id": None, "name": None, "created_at": None, "reason": "orphaned",
                       "snapshot_ids": ["snap-error", "snap-orphan"], "kept_snapshot_ids": [], "error": None, "note": None}
    [entry] = sweep_orphaned_snapshots(ec2, ["i-1"])
    assert entry["snapshot_ids"] == ["snap-error", "snap-orphan"] and entry["error"] is None
    assert set(ec2.snapshots) == before - {"snap-error", "snap-orphan"}


def test_sweep_skips_a_snapshot_whose_image_is_still_settling():
    ec2 = _ec2_with([])
    _snapshot(ec2, "snap-orphan", "i-1")
    ec2.in_use = {"snap-orphan": ("ami-00000009", 1)}
    assert sweep_orphaned_snapshots(ec2, ["i-1"]) == [] and "snap-orphan" in ec2.snapshots
    assert [e["snapshot_ids"] for e in sweep_orphaned_snapshots(ec2, ["i-1"])] == [["snap-orphan"]]


def test_backups_younger_than_the_bake_time_are_never_pruned():
    # ami-1 (1 h old) and ami-2 (2 h) are inside a 3-hour bake: a rollback during the bake may need either of them.
    recs = images((1, True, "available"), (2, True, "available"), (30, True, "available"), (60, True, "available"))
    assert chosen(select_for_retention(recs, set(), retention_count=1, now=NOW, min_age_seconds=3 * 3600)) == [
        ("ami-00000004", "retention_count"), ("ami-00000003", "retention_count")]
    assert chosen(select_for_retention(recs, set(), retention_days=0, now=NOW, min_age_seconds=3 * 3600)) == [
        ("ami-00000004", "retention_days"), ("ami-00000003", "retention_days")]
    # No bake: the usual rules (ami-1 is still kept as the newest verified backup).
    assert [i for i, _why in chosen(select_for_retention(recs, set(), retention_count=1, now=NOW))] == [
        "ami-00000004", "ami-00000003", "ami-00000002"]
