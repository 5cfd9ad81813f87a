"""scripts/lint_iam.py (make lint): parliament's findings on docs/iam-policy.json are all explained; a new one fails."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def lint(path):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "lint_iam.py"), str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_policy_has_no_unexplained_finding():
    proc = lint(ROOT / "docs" / "iam-policy.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 unexplained" in proc.stdout


def test_an_unexplained_finding_fails(tmp_path):
    policy = json.loads((ROOT / "docs" / "iam-policy.json").read_text())
    policy["Statement"].append({"Sid": "TooBroad", "Effect": "Allow", "Action": "ec2:ModifySnapshotAttribute", "Resource": "*"})
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    proc = lint(path)
    assert proc.returncode == 1
    assert "ec2:modifysnapshotattribute" in proc.stderr.lower()


def test_an_accepted_finding_that_is_gone_fails_so_the_list_cannot_go_stale(tmp_path):
    policy = json.loads((ROOT / "docs" / "iam-policy.json").read_text())
    policy["Statement"] = [s for s in policy["Statement"] if s["Action"] != "sts:AssumeRole"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    proc = lint(path)
    assert proc.returncode == 1
    assert "no longer reported, remove it: CREDENTIALS_EXPOSURE sts:assumerole" in proc.stderr
