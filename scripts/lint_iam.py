"""Lint docs/iam-policy.json with parliament (with its community auditors); every finding is fixed or explained here.

Exit status 1 on a finding that is not in ACCEPTED, and on an ACCEPTED entry that no longer matches any finding (so the
list cannot go stale). Usage: python scripts/lint_iam.py [policy.json]
"""
from __future__ import annotations

import sys
from pathlib import Path

POLICY = Path(__file__).resolve().parent.parent / "docs" / "iam-policy.json"

# (parliament issue, action or statement detail) -> why the finding is accepted (docs/security.md says the same).
ACCEPTED = {
    ("CREDENTIALS_EXPOSURE", "sts:assumerole"):
        "other accounts are reached through AssumeRole, only into roles named cms-patching",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "s3:putobjectacl"):
        "amazon.aws.s3_object sets the uploaded report's ACL (private by default); only on REPORT-BUCKET",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "kms:creategrant"):
        "EBS creates grants for encrypted volumes; allowed only with kms:GrantIsForAWSResource (AWS services' grants)",
    ("RESOURCE_STAR", "cloudwatch:DescribeAlarms"):
        "read-only; the gate reads the alarms the operator names (or a name prefix), whichever they are, in one call per "
        "100 names, so the policy cannot list them in advance",
    ("RESOURCE_MISMATCH", "ssm:SendCommand"):
        "AWS-owned SSM documents have no account in their ARN (arn:aws:ssm:*::document/AWS-...); parliament's "
        "format check expects one",
}


def finding_keys(finding) -> list[tuple[str, str]]:
    """One key per action a finding names (parliament reports several actions in one finding)."""
    detail, location = finding.detail, finding.location
    if isinstance(location, dict) and "actions" in location:
        return [(finding.issue, a) for a in location["actions"]]
    if isinstance(detail, list):
        return [(finding.issue, d.get("action", str(d)) if isinstance(d, dict) else str(d)) for d in detail]
    return [(finding.issue, str(detail))]


def main(argv: list[str]) -> int:
    try:
        from parliament import analyze_policy_string  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("lint_iam: parliament is not installed (it is in requirements-dev.txt: make setup)", file=sys.stderr)
        return 1
    path = Path(argv[1]) if len(argv) > 1 else POLICY
    policy = analyze_policy_string(path.read_text(), include_community_auditors=True)
    seen, failures = set(), []
    for finding in policy.findings:
        for key in finding_keys(finding):
            seen.add(key)
            if key in ACCEPTED:
                print(f"accepted  {key[0]} {key[1]}: {ACCEPTED[key]}")
            else:
                failures.append(f"{path}: {finding.issue} {key[1]} at {finding.location}")
    stale = sorted(set(ACCEPTED) - seen)
    failures += [f"scripts/lint_iam.py: accepted finding no longer reported, remove it: {k[0]} {k[1]}" for k in stale]
    for line in failures[:20]:
        print(line, file=sys.stderr)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more", file=sys.stderr)
    print(f"lint_iam: {path.name}: {len(policy.findings)} finding(s), {len(failures)} unexplained")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
