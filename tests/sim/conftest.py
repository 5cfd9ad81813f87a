"""Fixtures for the simulator's own tests: one simulator per session (or the shared one in CMS_SIM_URL)."""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "simulator"))

from awssim import fleet, server  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="session", name="sim_url")
def fixture_sim_url():
    if os.environ.get("CMS_SIM_URL"):
        yield os.environ["CMS_SIM_URL"].rstrip("/")
        return
    handle = server.start()
    yield handle.url
    handle.stop()


def http(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


class Sim:
    """A test's private view of the simulator: its own access key, so stats and config are isolated."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = "AKIA" + uuid.uuid4().hex[:16].upper()
        self.session = boto3.session.Session(aws_access_key_id=self.key, aws_secret_access_key="testing")

    def client(self, service: str, region: str = "us-east-1", retries: int | None = None):
        cfg = Config(retries={"mode": "standard", "max_attempts": retries} if retries is not None else {"mode": "standard", "max_attempts": 10})
        return self.session.client(service, region_name=region, endpoint_url=self.url, config=cfg)

    def config(self, **values) -> None:
        http(f"{self.url}/_sim/config", "POST", dict(values, key=self.key))

    def stats(self) -> dict:
        return http(f"{self.url}/_sim/stats?key={self.key}")

    def seed(self, **group) -> list[dict]:
        region = group.pop("region", "us-east-1")
        return fleet.seed({"region": region, "groups": [dict({"count": 1}, **group)]}, self.url, self.key)

    def ids(self, **group) -> list[str]:
        return [i["instance_id"] for i in self.seed(**group)]


@pytest.fixture
def sim(sim_url):  # pylint: disable=redefined-outer-name
    return Sim(sim_url)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll until predicate() returns a truthy value; return it."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)
