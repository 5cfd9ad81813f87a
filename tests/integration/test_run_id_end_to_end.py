"""One run-id rule: the longest run id the settings play accepts works to the end; one character more changes nothing."""

import uuid

from helpers import FAST, FAST_VARS, read_report, run_playbook, write_fleet_inventory

from ansible_collections.cms.patching.plugins.module_utils.run_id import MAX_LENGTH


def _run(sim, tmp_path, run_id):
    sim.configure(**FAST)
    tag = f"runid-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag},
                          "groups": [{"count": 2, "name_prefix": "ok"}, {"count": 1, "name_prefix": "bad", "faults": ["patch-fail"]}]})
    sim.reset_stats()  # the seeding's RunInstances are not the run's
    extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                 cms_patching_max_fail_percentage=100, cms_patching_serial=["100%"])
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=write_fleet_inventory(tmp_path, tag), extra_vars=extra)
    return instances, proc


def test_a_run_id_of_the_maximum_length_works_to_the_end(sim, tmp_path):
    run_id = ("r" + uuid.uuid4().hex * 2)[:MAX_LENGTH]
    instances, proc = _run(sim, tmp_path, run_id)
    assert proc.returncode != 0  # the patch-fail host fails; the run itself went through every phase
    _report, entries = read_report(tmp_path / "reports", run_id)
    final = {i["instance_id"]: entries[i["instance_id"]]["final_status"] for i in instances}
    assert final == {i["instance_id"]: "rolled_back" if i["name"].startswith("bad") else "patched" for i in instances}, final
    ssm = sim.client("ssm")
    comments = [c["Comment"] for c in ssm.get_paginator("list_commands").paginate().build_full_result()["Commands"]]
    assert any(c.startswith(f"cms-patching {run_id} patch") for c in comments), comments
    images = sim.client("ec2").describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-patching:run-id", "Values": [run_id]}])["Images"]
    assert len(images) == 3 and all(run_id in i["Name"] for i in images)


def test_a_run_id_one_character_longer_is_refused_before_any_change(sim, tmp_path):
    run_id = "r" * (MAX_LENGTH + 1)
    _instances, proc = _run(sim, tmp_path, run_id)
    assert proc.returncode != 0
    assert f"invalid cms_patching_run_id '{run_id}'" in proc.stdout + proc.stderr
    assert not sim.stats()["mutating"], sim.stats()
