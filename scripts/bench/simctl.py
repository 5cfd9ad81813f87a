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

    def seed(self, n, tag="cms-bench"):
        return seed(fleet_spec(n, tag), self.url, access_key="AKIABENCHSEED", secret_key=SECRET)

    def env(self, base, key):
        env = dict(base)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_URL"):
            env.pop(name, None)
        env.update(AWS_ENDPOINT_URL=self.url, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        return env
