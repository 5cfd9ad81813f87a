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
