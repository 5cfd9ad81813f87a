"""The bad-input table of docs/bad-inputs.md, run row by row: the doc IS the test's parameter table.

Each row must fail with its documented message on one line, a non-zero exit, no traceback and zero mutating AWS calls.
"""

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, run_module, run_playbook

DOC = ROOT / "docs" / "bad-inputs.md"
CREDENTIAL_KINDS = ("missing", "no-secret", "unknown-profile", "invalid")


def doc_rows():
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not re.match(r"^\| \d+ \|", line):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        number, where, given, message = cells
        rows.append(pytest.param(where, json.loads(given.strip("`")), message.strip("`"), id=f"{number}-{where.replace(' ', '-')}"))
    return rows


ROWS = doc_rows()


def test_the_table_covers_what_the_issue_asks():
    assert len(ROWS) >= 25
    wheres = {row.values[0].split()[0] for row in ROWS}
    assert wheres == {"module", "playbook", "inventory"}
    given = json.dumps([row.values[1] for row in ROWS])
    for needle in ("i-12", "$WEST", "us-nowhere-1", "maybe", "timeout\": 0", "timeout\": -", "aws:", "baseline_override",
                   "missing", "invalid", "/dev/null", "s3_bucket", "max_fail_percentage"):
        assert needle in given, needle


@pytest.fixture(scope="module")
def fleet(sim_url):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    seeder = Sim(sim_url)
    tag = f"bad-{uuid.uuid4().hex[:8]}"
    east = seeder.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": 2, "name_prefix": "east"}]})
    west = seeder.seed({"region": "eu-west-1", "tags": {"cms-test": tag}, "groups": [{"count": 1, "name_prefix": "west"}]})
    return {"east": east, "west": west[0]["instance_id"]}


def substitute(value, fleet):
    return json.loads(json.dumps(value).replace("$WEST", fleet["west"]))


def credentials_env(sim, kind):
    env = dict(sim.env)
    if kind == "missing":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(name)
        env.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    elif kind == "no-secret":
        env["AWS_SECRET_ACCESS_KEY"] = ""
    elif kind == "unknown-profile":
        env["AWS_PROFILE"] = "nosuchprofile"
    elif kind == "invalid":
        # The simulator refuses keys with this prefix as AWS refuses unknown keys; accounting still follows sim.key.
        sim.key = "AKIAINVALID" + sim.key[len("AKIAINVALID"):]
        env = dict(sim.env)
    return env


def matches(line, message, exact):
    if message.endswith("..."):
        return message[:-3] in line if not exact else line.startswith(message[:-3])
    return line == message if exact else message in line


@pytest.mark.parametrize("where, given, message", ROWS)
def test_bad_input(sim, fleet, tmp_path, where, given, message):
    given = substitute(given, fleet)
    message = message.replace("$WEST", fleet["west"])
    kind = given.pop("_credentials", None)
    assert kind in (None,) + CREDENTIAL_KINDS
    env = credentials_env(sim, kind) if kind else sim.env
    words = where.split()
    if words[0] == "module":
        result = run_module(words[1], given, env)
        assert result["rc"] != 0 and result.get("failed"), result
        assert matches(result["msg"], message, exact=True), result["msg"]
        assert "Traceback" not in result["stderr"] + result["msg"]
    elif words[0] == "playbook":
        output, rc = play(words, given, env, fleet, tmp_path)
        assert rc != 0, output[-3000:]
        assert any(matches(line, message, exact=False) for line in output.splitlines()), output[-4000:]
        assert "Traceback" not in output
    else:
        output, rc = inventory(given, env, tmp_path)
        assert rc != 0, output[-3000:]
        assert any(matches(line, message, exact=False) for line in output.splitlines()), output[-3000:]
        assert "Traceback" not in output
    assert not sim.stats()["mutating"], sim.stats()


def play(words, extra, env, fleet, tmp_path):
    hosts = {i["instance_id"]: {"instance_id": i["instance_id"], "region": i["region"], "account_id": i["account_id"]}
             for i in fleet["east"]}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    tags = words[3] if len(words) > 3 and words[2] == "--tags" else None
    extra = dict({"cms_patching_run_id": "badinput", "cms_patching_report_dir": str(tmp_path / "reports")}, **extra)
    proc = run_playbook(f"playbooks/{words[1]}", env, inventory=inventory, extra_vars=extra, tags=tags, timeout=300)
    return proc.stdout + proc.stderr, proc.returncode


def inventory(extra, env, tmp_path):
    config = dict({"plugin": "cms.patching.ec2_fleet", "regions": ["us-east-1"]}, **extra)
    path = tmp_path / "bad.aws_ec2.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(path), "--list"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc.stdout + proc.stderr, proc.returncode
