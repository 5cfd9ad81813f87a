"""AWX job slicing: slices of one run, started at the same time over disjoint hosts, never collide."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

from helpers import FAST, FAST_VARS, ROOT, write_fleet_inventory


def test_two_concurrent_slices_of_one_run(sim, tmp_path):
    sim.configure(**FAST)
    tag = f"slice-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 6}]})
    ids = sorted(i["instance_id"] for i in instances)
    halves = [ids[:3], ids[3:]]
    inventory = write_fleet_inventory(tmp_path, tag)
    run_id = f"sliced-{uuid.uuid4().hex[:8]}"
    procs = []
    for number, hosts in enumerate(halves, start=1):
        extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_slice=str(number), cms_patching_report_dir=str(tmp_path / "reports"),
                     cms_patching_serial=["100%"])
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "playbooks" / "patch.yml"), "-i", str(inventory),
               "--limit", ",".join(hosts), "-e", json.dumps(extra)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=sim.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]

    for number, hosts in enumerate(halves, start=1):
        report = json.loads((tmp_path / "reports" / run_id / f"slice-{number}" / "report.json").read_text())
        assert sorted(e["instance_id"] for e in report["instances"]) == hosts, "each slice reports only its own hosts"
        assert {e["final_status"] for e in report["instances"]} == {"patched"}
    assert not (tmp_path / "reports" / run_id / "report.json").exists()

    images = sim.client("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "tag:cms-patching:source-instance", "Values": ids}, {"Name": "tag:cms-patching:run-id", "Values": [run_id]}])["Images"]
    sources = sorted({t["Value"] for img in images for t in img["Tags"] if t["Key"] == "cms-patching:source-instance"})
    assert sources == ids and len(images) == len(ids), "exactly one AMI per instance"
