"""playbooks/rollback.yml restores from the newest verified pre-patch AMI; playbooks/cleanup.yml applies retention."""

import time
import uuid

from helpers import FAST, FAST_VARS, read_report, run_module, run_playbook, write_fleet_inventory


def seeded(sim, tmp_path, count=2):
    sim.configure(**FAST)
    tag = f"maint-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": count}]})
    return instances, write_fleet_inventory(tmp_path, tag)


def backup(sim, instance_ids, run_id):
    result = run_module("ami_backup_verify", {"instance_ids": instance_ids, "run_id": run_id, "poll_interval": 0.2, "region": "us-east-1"}, sim.env)
    assert result["rc"] == 0, result["msg"]
    # "Newest" is by the created-at tag, in whole seconds: the next backup must start in a later second (a Python 3.12
    # run once made two within one second, and the tie fell to the image id).
    time.sleep(1.02 - time.time() % 1)
    return {b["instance_id"]: b["image_id"] for b in result["backups"]}


def test_rollback_playbook_restores_the_newest_verified_backup(sim, tmp_path):
    instances, inventory = seeded(sim, tmp_path)
    ids = [i["instance_id"] for i in instances]
    backup(sim, ids, "older")
    newest = backup(sim, ids, "newer")
    target = ids[0]
    run_id = f"rb-{uuid.uuid4().hex[:8]}"
    proc = run_playbook("playbooks/rollback.yml", sim.env, inventory=inventory, limit=target,
                        extra_vars=dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports")))
    assert proc.returncode == 0, proc.stdout[-3000:]
    tasks = sim.client("ec2").describe_replace_root_volume_tasks(Filters=[{"Name": "instance-id", "Values": ids}])["ReplaceRootVolumeTasks"]
    assert [(t["InstanceId"], t["ImageId"], t["TaskState"]) for t in tasks] == [(target, newest[target], "succeeded")]
    assert tasks[0]["DeleteReplacedRootVolume"] is False
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert entries[target]["final_status"] == "rolled_back" and entries[target]["rollback"]["image_id"] == newest[target]


def test_rollback_playbook_fails_an_instance_without_backup(sim, tmp_path):
    instances, inventory = seeded(sim, tmp_path, count=1)
    proc = run_playbook("playbooks/rollback.yml", sim.env, inventory=inventory,
                        extra_vars=dict(FAST_VARS, cms_patching_report_dir=str(tmp_path / "reports")))
    assert proc.returncode == 2
    assert "no verified backup to restore from" in proc.stdout
    assert not sim.client("ec2").describe_replace_root_volume_tasks(
        Filters=[{"Name": "instance-id", "Values": [instances[0]["instance_id"]]}])["ReplaceRootVolumeTasks"]


def test_cleanup_playbook_keeps_the_newest_and_foreign_images(sim, tmp_path):
    instances, inventory = seeded(sim, tmp_path, count=1)
    iid = instances[0]["instance_id"]
    ec2 = sim.client("ec2")
    foreign = ec2.create_image(InstanceId=iid, Name=f"cms-patching-{iid}-handmade")["ImageId"]
    images = [backup(sim, [iid], f"r{n}")[iid] for n in range(3)]
    proc = run_playbook("playbooks/cleanup.yml", sim.env, inventory=inventory, extra_vars={"backup_retention_count": 1})
    assert proc.returncode == 0, proc.stdout[-3000:]
    alive = {i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "state", "Values": ["available", "pending"]}])["Images"]}
    assert images[-1] in alive and foreign in alive
    assert not alive & set(images[:-1])


def test_cleanup_playbook_refuses_to_run_without_a_rule(sim, tmp_path):
    _instances, inventory = seeded(sim, tmp_path, count=1)
    sim.reset_stats()
    proc = run_playbook("playbooks/cleanup.yml", sim.env, inventory=inventory)
    assert proc.returncode != 0 and "set backup_retention_count and/or backup_retention_days" in proc.stdout
    assert sim.stats()["mutating"] == {}
