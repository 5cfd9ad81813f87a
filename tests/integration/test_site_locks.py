"""Two runs never back up or patch the same instance together: the per-instance lock in SSM Parameter Store."""

import uuid

from helpers import FAST, FAST_VARS, read_report, recap, run_module, run_playbook, write_fleet_inventory


def test_an_instance_another_run_holds_is_skipped_and_locks_are_released(sim, tmp_path):
    sim.configure(**FAST)
    tag = f"lock-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 3}]})
    held = instances[0]["instance_id"]
    other = run_module("ssm_instance_lock", {"instance_ids": [held], "run_id": "other-run", "region": "us-east-1"}, sim.env)
    assert other["rc"] == 0 and other["acquired"] == [held], other

    run_id = f"locks-{uuid.uuid4().hex[:8]}"
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=write_fleet_inventory(tmp_path, tag),
                        extra_vars=dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                                        cms_patching_serial=["100%"]))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc.stdout)[held]["failed"] == 0, "skipping is not a failure"
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert (entries[held]["final_status"], entries[held]["reason"]) == ("skipped", "locked_by_other_run")
    assert {entries[i["instance_id"]]["final_status"] for i in instances[1:]} == {"patched"}

    ec2 = sim.client("ec2")
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-patching:run-id", "Values": [run_id]}])["Images"]
    assert held not in {t["Value"] for img in images for t in img["Tags"] if t["Key"] == "cms-patching:source-instance"}

    ssm = sim.client("ssm")
    names = [f"/cms-patching/locks/{i['instance_id']}" for i in instances]
    left = {p["Name"] for p in ssm.get_parameters(Names=names)["Parameters"]}
    assert left == {f"/cms-patching/locks/{held}"}, "this run released its locks and left the other run's alone"
