"""`make demo`: start the simulator, seed a demo fleet, run the site playbook against it, print the report path."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "simulator"))

from awssim import server  # noqa: E402  pylint: disable=wrong-import-position
from awssim.fleet import seed  # noqa: E402  pylint: disable=wrong-import-position

DEMO_FLEET = {
    "region": "us-east-1",
    "tags": {"Project": "cms-patching-demo"},
    "groups": [
        {"count": 8, "name_prefix": "web", "platform": "linux", "patch_group": "web", "environment": "prod"},
        {"count": 6, "name_prefix": "app", "platform": "linux", "patch_group": "app", "environment": "staging", "missing": 5},
        {"count": 5, "name_prefix": "win", "platform": "windows", "patch_group": "app", "environment": "prod"},
        {"count": 2, "name_prefix": "db", "platform": "linux", "patch_group": "web", "environment": "prod", "extra_volumes": 1},
        {"count": 1, "name_prefix": "legacy", "platform": "linux", "patch_group": "web", "faults": ["ssm-offline"]},
        {"count": 1, "name_prefix": "flaky", "platform": "linux", "patch_group": "app", "faults": ["patch-fail"]},
        {"count": 1, "name_prefix": "frozen", "platform": "windows", "patch_group": "web",
         "tags": {"cms-patching:exclude": "true"}},
    ],
}


def last_wave_failure(fleet, url):
    """Swap the flaky instance's identity (its Name, patch group, environment and patch-fail fault) with the eligible
    instance the plan takes last, so every demo tells the same story.

    The wave plan takes hosts in instance-id order and the simulator's ids are random: a failing canary would end the
    night after one instance (Ansible ends the play when a whole batch fails), a failure in the middle would stop the
    waves after it. In the last wave it is patched, fails, and is rolled back from its AMI. The simulator reads these
    tags when the commands run.
    """
    import boto3  # pylint: disable=import-outside-toplevel
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url, aws_access_key_id="demo", aws_secret_access_key="demo")
    flaky = next(i["instance_id"] for i in fleet if i["name"].startswith("flaky"))
    last = max(i["instance_id"] for i in fleet if i["name"].split("-")[0] in ("web", "app", "win", "db", "flaky"))
    if last == flaky:
        return
    keys = ("Name", "Patch Group", "Environment", "sim:fault", "sim:missing")
    tags = {r["InstanceId"]: {t["Key"]: t["Value"] for t in r.get("Tags", []) if t["Key"] in keys}
            for res in ec2.describe_instances(InstanceIds=[flaky, last])["Reservations"] for r in res["Instances"]}
    for here, there in ((flaky, last), (last, flaky)):
        ec2.delete_tags(Resources=[here], Tags=[{"Key": k} for k in keys])
        ec2.create_tags(Resources=[here], Tags=[{"Key": k, "Value": v} for k, v in tags[there].items()])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIM_PORT", "5000")))
    args = parser.parse_args()
    durations = {"image_pending_s": 1, "command_s": 1, "reboot_s": 1, "replace_root_s": 1, "ping_interval_s": 1}
    sim = server.start("127.0.0.1", args.port, config=durations)
    try:
        env = dict(os.environ, AWS_ENDPOINT_URL=sim.url, AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
                   AWS_REGION="us-east-1", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_URL"):
            env.pop(name, None)
        fleet = seed(DEMO_FLEET, sim.url, access_key="demo", secret_key="demo")
        last_wave_failure(fleet, sim.url)
        print(f"simulator at {sim.url}: seeded {len(fleet)} demo instances")
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/patch.yml", "-i", "inventories/aws_ec2.yml",
               # The simulator's images and commands finish in a second: poll as often (real AWS keeps the defaults).
               "-e", json.dumps({"backup_poll_interval": 1, "patching_poll_interval": 1})]
        print("running:", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        reports = sorted((ROOT / "reports").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
        if reports:
            latest = reports[-1].parent
            report = json.loads((latest / "report.json").read_text())
            summary = report.get("summary", {})
            print(f"\nreport: {latest}/report.html (also report.json, report.csv)")
            print("summary:", ", ".join(f"{k}={v}" for k, v in summary.items() if v))
            if report.get("headline"):
                print("why:", report["headline"])  # one sentence: how the run ended and, if it stopped, why
        if rc == 2:
            # ansible-playbook's "some hosts failed": the demo fleet has instances that are meant to fail.
            print("some hosts failed, as the demo fleet intends (see the report for why)")
            return 0
        return rc
    finally:
        sim.stop()


if __name__ == "__main__":
    sys.exit(main())
