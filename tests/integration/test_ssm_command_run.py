"""ssm_command_run against the simulator: pre-checks, service restarts and health checks per step, per platform."""

import uuid

import pytest

from helpers import run_module

FAST = dict(command_s=0.3, reboot_s=0.3, replace_root_s=0.3, ping_interval_s=0.5)  # short agent pings: see helpers.FAST


@pytest.fixture
def fleet(sim):
    sim.configure(**FAST)
    spec = {"region": "us-east-1", "tags": {"cms-test": f"cmd-{uuid.uuid4().hex[:8]}"}, "groups": [
        {"count": 52, "name_prefix": "lin"},
        {"count": 2, "name_prefix": "win", "platform": "windows"},
        {"count": 2, "name_prefix": "pre", "faults": ["precheck-fail"]},
        {"count": 2, "name_prefix": "rst", "faults": ["restart-fail"], "platform": "windows"},
        {"count": 2, "name_prefix": "hlt", "faults": ["health-fail"]},
    ]}
    return sim.seed(spec)


def group_of(inst):
    return inst["name"].rsplit("-", 1)[0]


def run(sim, **kw):
    args = dict(run_id="run-cmd", poll_interval=0.2, execution_timeout=60)
    args.update(kw)
    return run_module("ssm_command_run", args, sim.env)


@pytest.mark.parametrize("step, extra, failing, changed", [
    ("precheck", {"commands": ["test $(df --output=avail -m / | tail -1) -gt 500"]}, "pre", False),
    ("restart", {"services": ["nginx"]}, "rst", True),
    ("health", {"commands": ["curl -fsS http://localhost/health"]}, "hlt", False),
])
def test_each_step_fails_exactly_its_faulty_instances(sim, fleet, step, extra, failing, changed):
    ids = [i["instance_id"] for i in fleet]
    sim.reset_stats()
    result = run(sim, step=step, instance_ids=ids, **extra)
    assert result["rc"] == 0, result.get("msg")
    assert result["changed"] is changed
    by_id = {r["instance_id"]: r for r in result["results"]}
    for inst in fleet:
        res = by_id[inst["instance_id"]]
        expected = "failed" if group_of(inst) == failing else "success"
        assert res["outcome"] == expected, (inst["name"], res)
        assert res["step"] == step
        assert res["platform"] == inst["platform"]
        assert res["document"] == ("AWS-RunPowerShellScript" if inst["platform"] == "windows" else "AWS-RunShellScript")
        if expected == "failed":
            assert res["error"] and res["status"] == "Failed" and res["status_details"] == "Failed"
            assert f"simulated {step}-fail" in res["output_excerpt"]
    assert result["summary"]["failed"] == 2 and result["summary"]["success"] == len(fleet) - 2
    # 56 Linux ids = 2 commands, 4 Windows ids = 1 command; platforms read in ceil(60/50) = 2 calls
    calls = sim.stats()["calls"]
    assert calls["ssm:SendCommand"] == 3 and sim.stats()["mutating"] == {"ssm:SendCommand": 3}
    assert calls["ssm:DescribeInstanceInformation"] == 2
    assert sorted(c["instance_count"] for c in result["commands"]) == [4, 6, 50]
    ssm = sim.client("ssm")
    for cmd in result["commands"]:
        sent = ssm.list_commands(CommandId=cmd["command_id"])["Commands"][0]
        assert sent["Comment"] == cmd["comment"] and sent["Comment"].startswith(f"cms-patching run-cmd {step} ")
        assert sent["MaxErrors"] == "100%"


def test_scripts_per_platform_and_groups_by_commands(sim, fleet):
    lin = [i for i in fleet if group_of(i) == "lin"][:3]
    win = [i for i in fleet if group_of(i) == "win"]
    targets = [
        {"instance_id": lin[0]["instance_id"], "platform": "linux", "commands": ["echo a"]},
        {"instance_id": lin[1]["instance_id"], "commands": ["echo a"]},  # platform read from SSM, same group as lin[0]
        {"instance_id": lin[2]["instance_id"], "commands": ["echo b"], "services": ["sshd"]},
        {"instance_id": win[0]["instance_id"], "services": ["W3SVC"]},
    ]
    sim.reset_stats()
    result = run(sim, step="custom-check", targets=targets)
    assert result["rc"] == 0, result.get("msg")
    assert result["summary"] == {"total": 4, "success": 4}
    assert sim.stats()["calls"]["ssm:SendCommand"] == 3
    ssm = sim.client("ssm")
    params = {}
    for cmd in result["commands"]:
        sent = ssm.list_commands(CommandId=cmd["command_id"])["Commands"][0]
        params[tuple(sent["InstanceIds"])] = (sent["DocumentName"], sent["Parameters"]["commands"], sent["Comment"].rsplit(" ", 1)[0])
    assert params[(lin[0]["instance_id"], lin[1]["instance_id"])] == ("AWS-RunShellScript", ["set -e", "echo a"], "cms-patching run-cmd custom-check")
    script = params[(lin[2]["instance_id"],)][1]
    assert script[0] == "set -e" and "systemctl restart 'sshd'" in script and "systemctl is-active 'sshd'" in script and script[-1] == "echo b"
    doc, script = params[(win[0]["instance_id"],)][:2]
    assert doc == "AWS-RunPowerShellScript" and "Restart-Service -Name 'W3SVC' -Force" in script
    assert any("Get-Service -Name 'W3SVC'" in line and "exit 1" in line for line in script)


def test_check_mode_sends_nothing_and_unmanaged_is_not_sent(sim):
    sim.configure(**FAST)
    fleet = sim.seed({"region": "us-east-1", "groups": [{"count": 2, "name_prefix": "ok"},
                                                        {"count": 1, "name_prefix": "um", "faults": ["ssm-unmanaged"]}]})
    ids = [i["instance_id"] for i in fleet]
    sim.reset_stats()
    result = run_module("ssm_command_run", dict(step="restart", instance_ids=ids, services=["nginx"], poll_interval=0.2), sim.env, check_mode=True)
    assert result["rc"] == 0, result.get("msg")
    assert [r["outcome"] for r in result["results"]] == ["would_run", "would_run", "undeliverable"]
    assert result["changed"] is True and sim.stats()["mutating"] == {}
    result = run(sim, step="health", instance_ids=ids, commands=["true"])
    assert [r["outcome"] for r in result["results"]] == ["success", "success", "undeliverable"]
    assert sim.stats()["mutating"] == {"ssm:SendCommand": 1}


@pytest.mark.parametrize("bad, message", [
    (dict(step="Pre Check"), "invalid step"),
    (dict(services=["nginx; rm -rf /"]), "invalid service name"),
    (dict(execution_timeout=0), "execution_timeout must be greater than 0"),
    (dict(poll_interval=-1), "poll_interval must be greater than 0"),
    (dict(instance_ids=["i-1"]), "malformed instance id"),
    (dict(services=[], commands=[]), "no commands and no services"),
    (dict(targets=[{"instance_id": "i-0123456789abcdef0", "platform": "macos"}]), "platform"),
    (dict(max_errors="lots"), "invalid max_errors"),
])
def test_bad_input_is_one_line_and_calls_nothing(sim, bad, message):
    args = dict(step="restart", instance_ids=["i-0123456789abcdef1"], services=["nginx"])
    args.update(bad)
    sim.reset_stats()
    result = run_module("ssm_command_run", args, sim.env)
    assert result["rc"] != 0 and message in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in result["stderr"]
    assert sim.stats()["calls"] == {}
