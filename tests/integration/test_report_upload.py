"""The report directory is uploaded to S3 after every phase when cms_patching_report_s3_bucket is set."""

import uuid

from helpers import FAST, FAST_VARS, run_playbook, write_fleet_inventory


def test_reports_are_uploaded_under_the_run_id(sim, tmp_path):
    sim.configure(**FAST)
    tag = f"s3-{uuid.uuid4().hex[:8]}"
    sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 2}]})
    bucket = f"cms-reports-{uuid.uuid4().hex[:8]}"
    s3 = sim.client("s3")
    s3.create_bucket(Bucket=bucket)
    run_id = f"s3-{uuid.uuid4().hex[:8]}"
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=write_fleet_inventory(tmp_path, tag), tags="discovery",
                        extra_vars=dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"),
                                        cms_patching_report_s3_bucket=bucket))
    assert proc.returncode == 0, proc.stdout[-3000:]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"{run_id}/report.csv", f"{run_id}/report.html", f"{run_id}/report.json"]
    local = (tmp_path / "reports" / run_id / "report.json").read_bytes()
    assert s3.get_object(Bucket=bucket, Key=f"{run_id}/report.json")["Body"].read() == local


def test_a_missing_bucket_fails_before_any_change(sim, tmp_path):
    tag = f"s3-{uuid.uuid4().hex[:8]}"
    sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 1}]})
    sim.reset_stats()
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=write_fleet_inventory(tmp_path, tag),
                        extra_vars=dict(FAST_VARS, cms_patching_report_dir=str(tmp_path / "reports"), cms_patching_report_s3_bucket="no-such-bucket-here"))
    assert proc.returncode != 0
    assert "cms_patching_report_s3_bucket 'no-such-bucket-here' does not exist" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sim.stats()["mutating"] == {}
