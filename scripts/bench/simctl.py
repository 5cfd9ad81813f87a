"""The simulator as a benchmark needs it: a fresh process per scenario, a fleet, and per-key durations and accounting."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM_DIR = ROOT / "tests" / "simulator"
sys.path.insert(0, str(SIM_DIR))

from awssim.fleet import seed  # noqa: E402  pylint: disable=wrong-import-position,import-error

SECRET = "cms-bench-secret"
# Short but non-zero: every wait really polls at least once.
# SHORT also pings agents every second (AWS: 5 minutes), in step with its short commands and reboots.
SHORT = {"image_pending_s": 1, "command_s": 1, "reboot_s": 1, "replace_root_s": 1, "ping_interval_s": 1}
NIGHT = {"image_pending_s": 10, "command_s": 10, "reboot_s": 5, "replace_root_s": 5}


def fleet_spec(n, tag="cms-bench"):
    """A healthy, mixed fleet: half web (Linux), 30 % app (Linux), 20 % Windows app servers."""
    win = n // 5
    app = (n * 3) // 10
    web = n - win - app
    groups = [{"count": web, "name_prefix": "web", "platform": "linux", "patch_group": "web", "environment": "prod"},
              {"count": app, "name_prefix": "app", "platform": "linux", "patch_group": "app", "environment": "staging"},
              {"count": win, "name_prefix": "win", "platform": "windows", "patch_group": "app", "environment": "prod"}]
    return {"region": "us-east-1", "tags": {"cms-bench": tag}, "groups": [g for g in groups if g["count"] > 0]}


# The spread case of `make bench`: the same fleet over 3 regions and 2 accounts (the second through AssumeRole).
SPREAD_REGIONS = ("us-east-1", "eu-west-1", "us-west-2")
OTHER_ACCOUNT = "222222222222"
SPREAD_ACCOUNTS = (None, OTHER_ACCOUNT)   # None: the credentials' own account


def spread_spec(n, tag="cms-bench"):
    """fleet_spec's mix, each group split as evenly as it goes over every region x account partition."""
    parts = [(region, account) for region in SPREAD_REGIONS for account in SPREAD_ACCOUNTS]
    groups = []
    for group in fleet_spec(n, tag)["groups"]:
        for index, (region, account) in enumerate(parts):
            count = group["count"] // len(parts) + (1 if index < group["count"] % len(parts) else 0)
            if count:
                groups.append(dict(group, count=count, region=region, name_prefix=f"{group['name_prefix']}{index}",
                                   **({"account_id": account} if account else {})))
    return {"region": "us-east-1", "tags": {"cms-bench": tag}, "groups": groups}


def spread_inventory(path):
    """inventories/aws_ec2.yml with the spread case's regions and the second account's role; returns path."""
    path = Path(path)
    path.write_text(json.dumps({"plugin": "cms.patching.ec2_fleet", "regions": list(SPREAD_REGIONS),
                                "accounts": [{"role_arn": f"arn:aws:iam::{OTHER_ACCOUNT}:role/cms-patching"}],
                                "include_default_account": True}, indent=1), encoding="utf-8")
    return path


class Simulator:
    """One simulator process. Each measurement gets its own access key, so its calls are counted apart."""

    def __init__(self):
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, str(SIM_DIR / "sim.py"), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line.strip().rsplit(" ", 1)[-1]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _request(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}")

    def new_key(self, durations):
        key = "AKIABENCH" + uuid.uuid4().hex[:11].upper()
        self._request("/_sim/config", dict(durations, key=key))
        return key

    def stats(self, key):
        return self._request(f"/_sim/stats?key={key}")["calls"]

    def seed(self, n, tag="cms-bench", spread=False):
        spec = spread_spec(n, tag) if spread else fleet_spec(n, tag)
        return seed(spec, self.url, access_key="AKIABENCHSEED", secret_key=SECRET)

    def env(self, base, key):
        env = dict(base)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_URL"):
            env.pop(name, None)
        env.update(AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        return env
