"""Helpers to run the collection's modules and playbooks the way users do, against the simulator."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_module(name, args, env, check_mode=False, timeout=300):
    """Run plugins/modules/<name>.py directly (fast: no ansible-playbook start-up) and return its JSON result.

    The result dict gets `rc` and `stderr` added, so a test can assert both that it failed and how.
    """
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(payload, fh)
        path = fh.name
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "collections"), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"ansible_collections.cms.patching.plugins.modules.{name}", path],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )
    finally:
        os.unlink(path)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"failed": True, "msg": f"no JSON from module: {proc.stdout[-2000:]}"}
    result["rc"] = proc.returncode
    result["stderr"] = proc.stderr
    return result


def run_playbook(playbook, env, inventory=None, extra_vars=None, tags=None, limit=None, check=False, extra_args=(), timeout=900):
    """Run ansible-playbook from the repository root; returns the CompletedProcess (stdout+stderr text)."""
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / playbook)]
    if inventory:
        cmd += ["-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if tags:
        cmd += ["--tags", tags]
    if limit:
        cmd += ["--limit", limit]
    if check:
        cmd.append("--check")
    cmd += list(extra_args)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def write_fleet_inventory(directory, tag, regions=("us-east-1",), accounts=(), **options):
    """An ec2_fleet inventory limited to one test's fleet (tag cms-test=<tag>), as users write inventories/aws_ec2.yml."""
    import yaml  # pylint: disable=import-outside-toplevel

    config = {"plugin": "cms.patching.ec2_fleet", "regions": list(regions), "filters": {"tag:cms-test": tag}}
    if accounts:
        config["accounts"] = [{"role_arn": f"arn:aws:iam::{a}:role/cms-patching"} for a in accounts]
        config["include_default_account"] = True
    config.update(options)
    path = Path(directory) / "fleet.aws_ec2.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_report(report_dir, run_id):
    with open(Path(report_dir) / run_id / "report.json", encoding="utf-8") as fh:
        report = json.load(fh)
    return report, {e["instance_id"]: e for e in report["instances"]}


def recap(stdout):
    """PLAY RECAP counters per host: {host: {'ok': n, 'failed': n, ...}}."""
    import re  # pylint: disable=import-outside-toplevel

    stats = {}
    for line in stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            stats[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return stats


# Short simulated durations and polls: the whole state machine still runs, just fast.
# ping_interval_s: agents ping every 0.5 s instead of AWS's 5 minutes, so that the short agent_online_timeout and
# agent_check_interval the tests use stay well above the ping interval, as they must on AWS (simulator ssm.py).
FAST = {"image_pending_s": 0.3, "command_s": 0.3, "reboot_s": 0.3, "replace_root_s": 0.3, "ping_interval_s": 0.5}
FAST_VARS = {"backup_poll_interval": 0.3, "patching_poll_interval": 0.3, "patching_agent_online_timeout": 20}
