"""ami_backup_verify's clean-up against the simulator's DeregisterImage/DeleteSnapshot race (EC2: a snapshot stays in use
by its image for a while after DeregisterImage): no tagged snapshot is left orphaned, no foreign one is touched."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from helpers import ROOT, run_module, run_playbook, write_fleet_inventory

OWN = {"cms-patching:managed": "true", "cms-patching:run-id": "run-old", "cms-patching:verified": "true"}


def _tags(values):
    return [{"Key": k, "Value": v} for k, v in values.items()]


def _image(ec2, instance_id, name, image_tags, snapshot_tags):
    specs = [{"ResourceType": "image", "Tags": _tags(image_tags)}] + ([{"ResourceType": "snapshot", "Tags": _tags(snapshot_tags)}] if snapshot_tags else [])
    image_id = ec2.create_image(InstanceId=instance_id, Name=name, NoReboot=True, TagSpecifications=specs)["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    return image_id, [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]


def _old_tool_image(ec2, instance_id, days=30, age=None):
    age = age or timedelta(days=days)
    created = (datetime.now(timezone.utc) - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = dict(OWN, **{"cms-patching:source-instance": instance_id, "cms-patching:created-at": created})
    return _image(ec2, instance_id, f"cms-patching-{instance_id}-old-{int(age.total_seconds())}", tags, tags)


def _existing(ec2, snapshot_ids):
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": snapshot_ids}])["Snapshots"]
    return sorted(s["SnapshotId"] for s in found)


def _retention(sim, ids, check_mode=False):
    result = run_module("ami_backup_verify", {"instance_ids": ids, "create": False, "retention_days": 7, "poll_interval": 0.5},
                        sim.env, check_mode=check_mode)
    assert result["rc"] == 0 and "Traceback" not in result["stderr"], result.get("msg")
    return result


def test_retention_leaves_no_snapshot_of_a_removed_image(sim):
    # A deregistered image's snapshots stay in use far longer than the module would wait: only deleting them together
    # with the image (DeregisterImage DeleteAssociatedSnapshots=True) removes them in this run.
    sim.configure(image_pending_s=0, deregister_s=60)
    ids = [i["instance_id"] for i in sim.seed({"groups": [{"count": 1, "extra_volumes": 1}]})]
    ec2 = sim.client("ec2")
    old, snaps = _old_tool_image(ec2, ids[0])
    newest, newest_snaps = _old_tool_image(ec2, ids[0], days=1)  # within retention: kept
    result = _retention(sim, ids)
    assert [(p["image_id"], p["reason"], p["error"]) for p in result["pruned"]] == [(old, "retention_days", None)]
    assert result["pruned"][0]["snapshot_ids"] == snaps and result["summary"]["pruned_snapshots"] == 2
    assert _existing(ec2, snaps) == [] and _existing(ec2, newest_snaps) == sorted(newest_snaps)
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [old, newest]}])["Images"]] == [newest]


def test_retention_sweeps_the_tools_orphaned_snapshots_and_never_foreign_ones(sim):
    sim.configure(image_pending_s=0, deregister_s=0)
    ids = [i["instance_id"] for i in sim.seed({"groups": [{"count": 1}]})]
    ec2 = sim.client("ec2")
    _kept, kept_snaps = _old_tool_image(ec2, ids[0], days=1)
    # An earlier run deregistered this image and was killed before it deleted the snapshot.
    gone, orphans = _old_tool_image(ec2, ids[0], days=2)
    ec2.deregister_image(ImageId=gone)
    # Someone else's image of the instance, also deregistered: its snapshot is not the tool's.
    foreign, foreign_snaps = _image(ec2, ids[0], "someone-elses", {"cms-patching:source-instance": ids[0]},
                                    {"cms-patching:source-instance": ids[0]})
    ec2.deregister_image(ImageId=foreign)

    preview = _retention(sim, ids, check_mode=True)
    assert [(p["reason"], p["snapshot_ids"]) for p in preview["pruned"]] == [("orphaned", orphans)]
    assert _existing(ec2, orphans) == orphans

    result = _retention(sim, ids)
    assert [(p["instance_id"], p["image_id"], p["reason"], p["snapshot_ids"], p["error"]) for p in result["pruned"]] == [
        (ids[0], None, "orphaned", orphans, None)]
    assert result["changed"] and result["summary"]["pruned_images"] == 0 and result["summary"]["pruned_snapshots"] == 1
    assert _existing(ec2, orphans) == [] and _existing(ec2, foreign_snaps) == foreign_snaps and _existing(ec2, kept_snaps) == kept_snaps


# ---------------------------------------------------------------- playbooks/cleanup.yml and the bake time

WRAPPERS = {
    # A playbook of the user's that imports the clean-up playbook with a variable (import_playbook vars).
    "import_playbook_var": """
- ansible.builtin.import_playbook: {root}/playbooks/cleanup.yml
  vars:
    cms_patching_bake_time: 7200
""",
    # A playbook of the user's that runs the backup role's retention entry point with the variable as a role variable.
    "role_var": """
- name: Clean up
  hosts: all
  gather_facts: false
  connection: local
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: Retention
      ansible.builtin.import_role:
        name: cms.patching.backup
        tasks_from: retention
      vars:
        cms_patching_bake_time: 7200
""",
}


def _fleet(sim, tmp_path):
    sim.configure(image_pending_s=0, deregister_s=0)
    tag = f"bake-{uuid.uuid4().hex[:8]}"
    [instance] = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 1}]})
    return instance["instance_id"], write_fleet_inventory(tmp_path, tag)


@pytest.mark.parametrize("route", ["extra_var", "import_playbook_var", "role_var", "not_given"])
def test_cleanup_never_removes_a_backup_younger_than_the_bake_time(sim, tmp_path, route):
    # Three verified backups: 5 minutes, 1 hour and 30 days old. retention_count=1 keeps the newest; a 2-hour bake
    # (cms_patching_bake_time=7200, however the clean-up job is given it) also keeps the 1-hour-old one.
    iid, inventory = _fleet(sim, tmp_path)
    ec2 = sim.client("ec2")
    old, _snaps = _old_tool_image(ec2, iid, days=30)
    young, _snaps = _old_tool_image(ec2, iid, age=timedelta(hours=1))
    newest, _snaps = _old_tool_image(ec2, iid, age=timedelta(minutes=5))
    extra = {"backup_retention_count": 1, "backup_poll_interval": 0.3}
    playbook = "playbooks/cleanup.yml"
    if route == "extra_var":  # an AWX survey answer or extra variable of the clean-up job
        extra["cms_patching_bake_time"] = 7200
    elif route in WRAPPERS:
        playbook = tmp_path / f"{route}.yml"
        playbook.write_text(WRAPPERS[route].format(root=ROOT))
    proc = run_playbook(str(playbook), sim.env, inventory=inventory, extra_vars=extra)
    assert proc.returncode == 0, proc.stdout[-3000:]
    alive = {i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [old, young, newest]}])["Images"]}
    assert alive == ({newest} if route == "not_given" else {newest, young}), route


@pytest.mark.parametrize("value", [-1, "2h"])
def test_cleanup_refuses_a_bad_bake_time_with_one_line_before_any_change(sim, tmp_path, value):
    iid, inventory = _fleet(sim, tmp_path)
    _old_tool_image(sim.client("ec2"), iid, age=timedelta(hours=1))
    sim.reset_stats()
    proc = run_playbook("playbooks/cleanup.yml", sim.env, inventory=inventory,
                        extra_vars={"backup_retention_count": 1, "cms_patching_bake_time": value})
    assert proc.returncode != 0 and "cms_patching_bake_time" in proc.stdout and "Traceback" not in proc.stdout, proc.stdout[-2000:]
    assert sim.stats()["mutating"] == {}
