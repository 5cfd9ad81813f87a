"""`make demo-gates`: the run's gates against the simulator - an alarm that fires during the canary's bake rolls the
canary back and stops the run, then an operator presses the stop switch (playbooks/stop.yml) between two waves.

For each run it prints the report path and one line on why the run stopped. The alarm and the switch are set on cue, once the
canary's patch command (AWS-RunPatchBaseline) shows in ListCommands, so the demo always shows the same story however
fast the machine is.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "simulator"))

from awssim import server  # noqa: E402  pylint: disable=wrong-import-position
from awssim.fleet import seed  # noqa: E402  pylint: disable=wrong-import-position

# Not "demo": Ansible masks the secret key's value wherever it appears in a result (an alarm named demo-... included).
KEY = "AKIDGATESDEMO"
SECRET = "gates-demo-secret"
ALARM = "demo-web-5xx"
STOP = "/cms-patching/demo/stop"
FLEET = {"region": "us-east-1", "tags": {"Project": "cms-patching-gates-demo"},
         "groups": [{"count": 8, "name_prefix": "web", "platform": "linux", "patch_group": "web", "environment": "prod"}]}
# The simulator's images and commands finish in a second: poll as often (real AWS keeps the defaults).
FAST = {"backup_poll_interval": 1, "patching_poll_interval": 1, "cms_patching_serial": [1, "50%"],
        "cms_patching_stop_parameter": STOP}


class OnCanaryPatch(threading.Thread):
    """Calls action() once the run has sent its canary's patch command (an AWS-RunPatchBaseline command after `since`)."""

    def __init__(self, ssm, since, action):
        super().__init__(daemon=True)
        self.ssm, self.since, self.action, self.done = ssm, since, action, threading.Event()

    def run(self):
        while not self.done.is_set():
            commands = self.ssm.list_commands(Filters=[{"key": "DocumentName", "value": "AWS-RunPatchBaseline"}])["Commands"]
            if [c for c in commands if c["CommandId"] not in self.since]:
                self.action()
                return
            self.done.wait(0.2)

    def stop(self):
        self.done.set()
        self.join(timeout=30)


def why(report):
    """One line: why the run stopped, from the instances' reasons (the report's own headline when it has one)."""
    if report.get("headline"):
        return report["headline"]
    entries = report["instances"] if isinstance(report["instances"], list) else list(report["instances"].values())
    rolled = [e for e in entries if e.get("final_status") == "rolled_back" and e.get("reason") == "alarm"]
    held = [e for e in entries if e.get("reason") in ("alarm", "stopped_by_operator") and e not in rolled]
    if rolled:
        return (f"alarm {rolled[0]['alarm_name']} fired during the bake of wave {held[0].get('stop_wave') if held else '?'}: "
                f"{len(rolled)} instance(s) rolled back to their pre-patch AMI, {len(held)} not patched")
    if held:
        return f"the operator's stop switch stopped the run before wave {held[0].get('stop_wave')}: {len(held)} instance(s) not patched"
    return "the run was not stopped"


def night(env, ssm, run_id, extra, cue):
    before = {c["CommandId"] for c in ssm.list_commands(Filters=[{"key": "DocumentName", "value": "AWS-RunPatchBaseline"}])["Commands"]}
    watcher = OnCanaryPatch(ssm, before, cue)
    watcher.start()
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/patch.yml", "-i", "inventories/aws_ec2.yml",
           "-e", json.dumps(dict(FAST, cms_patching_run_id=run_id, **extra))]
    print("running:", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    watcher.stop()
    directory = ROOT / "reports" / run_id
    report = json.loads((directory / "report.json").read_text())
    print(f"\nreport: {directory}/report.html (also report.json, report.csv)")
    print("summary:", ", ".join(f"{k}={v}" for k, v in report.get("summary", {}).items() if v))
    print("why the run stopped:", why(report), flush=True)
    return rc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIM_PORT", "5000")))
    args = parser.parse_args()
    durations = {"image_pending_s": 1, "command_s": 1, "reboot_s": 1, "replace_root_s": 1, "ping_interval_s": 1}
    sim = server.start("127.0.0.1", args.port, config=durations)
    try:
        env = dict(os.environ, AWS_ENDPOINT_URL=sim.url, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_REGION="us-east-1", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_URL"):
            env.pop(name, None)
        fleet = seed(FLEET, sim.url, access_key=KEY, secret_key=SECRET)
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=sim.url, aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=sim.url, aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        cloudwatch.put_metric_alarm(AlarmName=ALARM, MetricName="HTTPCode_Target_5XX_Count", Namespace="AWS/ApplicationELB",
                                    Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold")
        cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="demo: healthy before the night")
        print(f"simulator at {sim.url}: seeded {len(fleet)} web instances and the CloudWatch alarm {ALARM} (OK)")

        print(f"\n== 1. {ALARM} fires during the canary's 20-second bake (set on cue once the canary's patch is sent)", flush=True)
        night(env, ssm, f"demo-alarm-{uuid.uuid4().hex[:6]}", {"cms_patching_alarms": [ALARM], "cms_patching_bake_time": 20},
              lambda: cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="demo: 5xx errors after the patch"))

        cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="demo: fixed")
        print(f"\n== 2. The operator runs playbooks/stop.yml while the canary wave is in flight ({ALARM} is OK again)", flush=True)

        def press_stop():
            subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/stop.yml",
                            "-e", json.dumps({"cms_patching_stop_parameter": STOP})], cwd=ROOT, env=env, check=True)
        night(env, ssm, f"demo-stop-{uuid.uuid4().hex[:6]}", {"cms_patching_alarms": [ALARM]}, press_stop)
        return 0  # the rolled-back canary fails its host in run 1, as intended
    finally:
        sim.stop()


if __name__ == "__main__":
    sys.exit(main())
