"""ssm_command_run's domain: scripts per platform, grouping into requests, platform resolution."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils.command_run import (
    group_requests, linux_script, resolve_platforms, targets_from_params, validate, windows_script,
)
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError
from ansible_collections.cms.patching.tests.unit.fakes.ssm import iid


def params(**kw):
    base = dict(step="restart", instance_ids=[], targets=[], commands=[], services=[], execution_timeout=60, delivery_timeout=600,
                max_concurrency="100%", max_errors="100%", output_s3_bucket_name=None, output_s3_key_prefix=None,
                cloudwatch_output=None, run_id=None, wait=True, poll_interval=1.0)
    base.update(kw)
    return base


def test_linux_script_stops_at_the_first_failure_and_checks_services():
    script = linux_script(["nginx"], ["curl -fsS http://localhost/"])
    assert script[0] == "set -e"
    assert script[1] == "systemctl restart 'nginx'"
    assert script[3] == "systemctl is-active 'nginx'"
    assert script[-1] == "curl -fsS http://localhost/"


def test_windows_script_checks_every_command_and_service():
    script = windows_script(["W3SVC"], ["Test-Path C:\\app", "iisreset /status"])
    assert script[0] == "$ErrorActionPreference = 'Stop'"
    assert "Restart-Service -Name 'W3SVC' -Force" in script
    assert script[-4:] == ["Test-Path C:\\app", "if (-not $?) { exit 1 }", "iisreset /status", "if (-not $?) { exit 1 }"]


def test_targets_fall_back_to_shared_commands_and_services():
    targets = targets_from_params(params(instance_ids=[iid(2)], services=["nginx"],
                                         targets=[{"instance_id": iid(1), "platform": "windows", "commands": ["x"], "services": None}]))
    assert targets == [dict(instance_id=iid(1), platform="windows", commands=["x"], services=["nginx"]),
                       dict(instance_id=iid(2), platform=None, commands=[], services=["nginx"])]


def test_identical_scripts_share_one_request_per_document():
    targets = [dict(instance_id=iid(n), platform="linux" if n < 70 else "windows", commands=["true"], services=[]) for n in range(75)]
    targets[0]["commands"] = ["false"]
    reqs = group_requests(targets, "health", params(execution_timeout=30))
    assert [(r.document, len(r.instance_ids)) for r in reqs] == [("AWS-RunShellScript", 1), ("AWS-RunShellScript", 69),
                                                                 ("AWS-RunPowerShellScript", 5)]
    assert all(r.strict_exit_code and r.step == "health" and r.parameters["executionTimeout"] == ["30"] for r in reqs)


def test_platform_from_ssm_and_unsendable_instances():
    targets = [dict(instance_id=iid(n), platform=None, commands=["true"], services=[]) for n in range(4)]
    targets[3]["platform"] = "windows"
    agents = {iid(0): {"platform_type": "Linux", "ping_status": "Online"}, iid(1): {"platform_type": "MacOS", "ping_status": "Online"},
              iid(3): {"platform_type": "Linux", "ping_status": "ConnectionLost"}}
    problems = resolve_platforms(targets, agents)
    assert targets[0]["platform"] == "linux" and targets[3]["platform"] == "windows"  # given wins
    assert "unsupported platform 'MacOS'" in problems[iid(1)] and "not registered" in problems[iid(2)]
    assert set(problems) == {iid(1), iid(2)}


@pytest.mark.parametrize("bad, message", [
    (dict(instance_ids=[]), "nothing to run on"),
    (dict(step="restart now"), "invalid step"),
    (dict(services=["a'b"]), "invalid service name"),
    (dict(services=[], commands=["  "]), "empty command"),
    (dict(targets=[{"instance_id": iid(1)}]), "duplicate instance id"),
])
def test_validate(bad, message):
    base = params(instance_ids=[iid(1)], services=["nginx"])
    base.update(bad)
    with pytest.raises(PatchingError, match=message):
        validate(base)
