"""Shared test fixtures: one simulator per test run, shared by every xdist worker.

The controlling pytest process starts the simulator before the workers are spawned and exports
CMS_SIM_URL; each test isolates itself with its own fake access key (the simulator accounts and
configures per key) and its own fleet tags, so tests can run in parallel against one endpoint.
"""

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = ROOT / "tests" / "simulator"
sys.path.insert(0, str(SIM_DIR))
sys.path.insert(0, str(ROOT / "tests"))

_SIM_PROC = None


def _start_simulator():
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(SIM_DIR / "sim.py"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def pytest_configure(config):
    global _SIM_PROC  # pylint: disable=global-statement
    is_worker = hasattr(config, "workerinput")
    if is_worker or os.environ.get("CMS_SIM_URL") or not (SIM_DIR / "sim.py").exists():
        return
    _SIM_PROC, url = _start_simulator()
    os.environ["CMS_SIM_URL"] = url


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    if _SIM_PROC is not None:
        _SIM_PROC.terminate()
        try:
            _SIM_PROC.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _SIM_PROC.kill()


@pytest.fixture(scope="session")
def sim_url():
    url = os.environ.get("CMS_SIM_URL")
    if not url:
        pytest.fail("no simulator: tests/simulator/sim.py did not start")
    return url


class Sim:
    """A test's private view of the shared simulator: its own credentials, stats and config."""

    def __init__(self, url, region="us-east-1"):
        self.url = url
        self.region = region
        self.key = "AKIA" + uuid.uuid4().hex[:16].upper()
        self.secret = "cms-test-secret"

    @property
    def env(self):
        """Environment for boto3, ansible-playbook and modules: everything aimed at the simulator."""
        env = dict(os.environ)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_URL"):
            env.pop(name, None)
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID=self.key,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_REGION=self.region,
            AWS_DEFAULT_REGION=self.region,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        )
        return env

    def client(self, service, region=None):
        import boto3  # pylint: disable=import-outside-toplevel
        return boto3.client(service, region_name=region or self.region, endpoint_url=self.url,
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret)

    def _request(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def stats(self):
        return self._request(f"/_sim/stats?key={self.key}")

    def reset_stats(self):
        return self._request(f"/_sim/stats/reset?key={self.key}", {})

    def configure(self, **settings):
        return self._request("/_sim/config", dict(settings, key=self.key))

    def seed(self, spec):
        from awssim.fleet import seed  # pylint: disable=import-outside-toplevel
        return seed(spec, self.url, access_key=self.key, secret_key=self.secret)


@pytest.fixture
def sim(sim_url):
    return Sim(sim_url)
