"""Least privilege and secrets: docs/iam-policy.json against the AWS actions the tool really calls, no secret in any
output or report, report files not world-readable.

"Every action the tool calls" is measured on the tool's whole surface, run here with one fresh access key (the
simulator accounts per key, so parallel tests cannot blur it): the dynamic inventory, the site playbook over a fleet
with faults that exercise every path (backup clean-up, rollback, a second account, the S3 report upload), the
rollback and cleanup playbooks, a contended run lock and a command that outlives its timeout (CancelCommand).
The fleet is seeded with another key, so seeding calls (RunInstances, CreateBucket) are not counted. The surface runs
with the policy enforced by the simulator (/_sim/config iam_policy), so "authorised" also counts the actions AWS checks
inside a call (tag-on-create ec2:CreateTags, DeregisterImage's snapshot deletions).
"""

import json
import os
import stat
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from awssim import iam
from helpers import ROOT, run_module, run_playbook
from integration.capacity_surface import capacity_wave

POLICY = ROOT / "docs" / "iam-policy.json"


def encrypted_volume(seeder, instance_id, tag):
    """A volume encrypted with a customer-managed KMS key, attached to the instance (pre-flight reads the key)."""
    ec2 = seeder.client("ec2")
    key = seeder.client("kms").create_key(Description=tag)["KeyMetadata"]["Arn"]
    zone = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    volume = ec2.create_volume(AvailabilityZone=zone, Size=8, Encrypted=True, KmsKeyId=key)["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=instance_id, Device="/dev/sdf")


# Simulator accounting names -> the IAM action that authorises them (where they differ).
IAM_ACTION = {
    "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
}
OTHER_ACCOUNT = "222222222222"
# The one allowlist of statements no call of the tool needs, because only AWS's side uses them (docs/security.md,
# "Statements only AWS uses"). EBS uses the caller's KMS permissions for encrypted volumes while CreateImage and
# CreateReplaceRootVolumeTask run (EBS user guide, "Requirements for Amazon EBS encryption": kms:CreateGrant with
# kms:GrantIsForAWSResource, kms:Decrypt, kms:DescribeKey, kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*).
AWS_SIDE_ONLY = {
    "EbsKmsGrantsForEncryptedVolumes": "EBS creates grants on the volume's KMS key for the new snapshots and volumes",
    "EbsKmsUseForEncryptedVolumes": "EBS decrypts and re-encrypts data keys through EC2 (kms:ViaService)",
}


def policy_actions():
    """The actions the policy allows, except in the AWS_SIDE_ONLY statements."""
    actions = set()
    for statement in json.loads(POLICY.read_text())["Statement"]:
        if statement["Sid"] in AWS_SIDE_ONLY:
            continue
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in listed if "*" in a], f"wildcard action in {statement['Sid']}"
        actions.update(listed)
    return actions


@pytest.fixture(scope="module")
def surface(sim_url, tmp_path_factory):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    seeder, sim = Sim(sim_url), Sim(sim_url)
    marker = uuid.uuid4().hex[:10]
    sim.secret = f"cmsSECRET{marker}xyz"  # recognisable: searched for in every output and report
    token = f"cmsTOKEN{marker}xyz"
    tag = f"sec-{marker}"
    work = tmp_path_factory.mktemp("security")
    instances = seeder.seed({"tags": {"cms-test": tag}, "region": "us-east-1", "groups": [
        {"count": 2, "name_prefix": "web"},
        {"count": 1, "name_prefix": "win", "platform": "windows"},
        {"count": 1, "name_prefix": "unhealthy", "faults": ["health-fail"]},
        {"count": 1, "name_prefix": "amifail", "faults": ["ami-fail"]},
        {"count": 1, "name_prefix": "snapfail", "faults": ["snapshot-error"]},
        {"count": 1, "name_prefix": "other", "account_id": OTHER_ACCOUNT, "region": "eu-west-1"},
        {"count": 1, "name_prefix": "dead", "faults": ["agent-dead"]},  # agent recovery: reboot, then stop and start
    ]})
    bucket = f"cms-reports-{marker}"
    seeder.client("s3").create_bucket(Bucket=bucket)
    # Pre-flight reads the key of an encrypted volume (kms:DescribeKey).
    encrypted_volume(seeder, next(i["instance_id"] for i in instances if i["name"] == "web-002"), tag)
    # The whole surface runs under the policy, enforced by the simulator (tests/integration/test_iam_enforced.py has the
    # comparison with an unenforced run and the necessity of each statement).
    policy = json.loads(POLICY.read_text().replace("REPORT-BUCKET", bucket))
    # Agents ping every 0.5 s (AWS: every few minutes), so the short patching_agent_online_timeout below finds only the
    # agent-dead instance silent.
    sim.configure(iam_policy=policy, ping_interval_s=0.5)
    inventory = work / "fleet.aws_ec2.yml"
    inventory.write_text(yaml.safe_dump({
        "plugin": "cms.patching.ec2_fleet", "regions": ["us-east-1", "eu-west-1"], "filters": {"tag:cms-test": tag},
        "accounts": [{"role_arn": f"arn:aws:iam::{OTHER_ACCOUNT}:role/cms-patching"}], "include_default_account": True}))
    env = dict(sim.env, AWS_SESSION_TOKEN=token)
    reports = work / "reports"
    # No canary of one: the plan takes hosts in (random) instance-id order, and Ansible ends the play when a whole batch
    # fails whatever max_fail_percentage says, so a failing canary (unhealthy) would leave the later waves' paths uncalled.
    common = {"cms_patching_report_dir": str(reports), "cms_patching_serial": [2, "50%"], "cms_patching_max_fail_percentage": 100,
              "patching_poll_interval": 0.2, "backup_poll_interval": 0.2, "cms_patching_report_s3_bucket": bucket,
              "patching_health_checks": ["echo healthy"], "patching_agent_recovery": ["reboot", "stop_start"],
              "patching_agent_online_timeout": 4, "patching_agent_check_interval": 0.5}
    outputs = []

    def play(playbook, run_id, **kwargs):
        proc = run_playbook(playbook, env, inventory=inventory, extra_vars=dict(common, cms_patching_run_id=run_id, **kwargs.pop("extra", {})),
                            extra_args=["-vvv"], **kwargs)
        outputs.append(proc.stdout + proc.stderr)
        return proc

    # The listing has no `regions`, so the inventory asks ec2:DescribeRegions as a user's inventory without regions does.
    listing_inventory = work / "listing.aws_ec2.yml"
    listing_inventory.write_text(yaml.safe_dump(dict(yaml.safe_load(inventory.read_text()), regions=[])))
    listing = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(listing_inventory), "--list", "-vvv"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    outputs.append(listing.stdout + listing.stderr)
    assert listing.returncode == 0, listing.stderr[-2000:]
    # The gates (issue 18): an alarm in OK gates each wave, so cloudwatch:DescribeAlarms is called under the policy.
    alarm = f"sec-gate-{marker}"
    seeder.client("cloudwatch").put_metric_alarm(AlarmName=alarm, MetricName="5xx", Namespace="App", Statistic="Sum", Period=60,
                                                 EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    seeder.client("cloudwatch").set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="baseline")
    site = play("playbooks/patch.yml", f"sec-{marker}", extra={"cms_patching_alarms": [alarm]})
    assert "rolled_back" in site.stdout, site.stdout[-3000:]
    web = next(i["instance_id"] for i in instances if i["name"] == "web-001")
    assert play("playbooks/rollback.yml", f"secrb-{marker}", limit=web).returncode == 0, outputs[-1][-3000:]
    assert play("playbooks/cleanup.yml", f"seccl-{marker}", extra={"backup_retention_count": 1}).returncode == 0, outputs[-1][-3000:]

    # Paths the roles may not reach in a healthy run: a contended lock and a command cancelled at its timeout.
    lock_args = {"instance_ids": [web], "region": "us-east-1"}
    for args in ({"run_id": "sec-a"}, {"run_id": "sec-b"}, {"run_id": "sec-a", "state": "released"}):
        assert run_module("ssm_instance_lock", dict(lock_args, **args), env)["rc"] == 0
    sim.configure(command_s=3)
    slow = run_module("ssm_command_run", {"step": "health", "instance_ids": [web], "commands": ["sleep 5"], "execution_timeout": 1,
                                          "poll_interval": 0.2, "region": "us-east-1"}, env)
    sim.configure(command_s=0.2)
    assert slow["results"][0]["status"] == "Cancelled" and slow["results"][0]["outcome"] == "timed_out", slow
    capacity = capacity_wave(seeder, sim, env, marker)  # the serving-capacity steps (issue 17)
    assert sorted(capacity.values()) == ["patched"] * 4, capacity
    s3_objects = [seeder.client("s3").get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
                  for o in seeder.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert s3_objects, "the reports were not uploaded"
    with urllib.request.urlopen(f"{sim_url}/_sim/authz?key={sim.key}", timeout=30) as resp:
        authz = json.loads(resp.read())
    # What AWS authorised: each call's checks, and the partial checks the policy allowed (the snapshots DeregisterImage
    # deletes with DeleteAssociatedSnapshots are authorised as ec2:DeleteSnapshot without a DeleteSnapshot call).
    authorised = {c["action"] for call in authz["calls"] for c in call["checks"] + call.get("partial", [])
                  if c not in iam.refused_partial(policy, call)}
    return {"sim": sim, "refused": [d["refused"] for d in authz["denied"]], "authorised": authorised, "secret": sim.secret,
            "token": token, "outputs": outputs, "reports": reports, "s3": s3_objects}


def test_every_called_action_is_allowed_and_every_allowed_action_is_called(surface):
    assert surface["refused"] == [], "calls refused under docs/iam-policy.json"
    called = {IAM_ACTION.get(name, name) for name in surface["sim"].stats()["calls"]}
    allowed = policy_actions()
    assert called - allowed == set(), "called but not allowed by docs/iam-policy.json"
    assert allowed - called - surface["authorised"] == set(), "allowed by docs/iam-policy.json but never called nor authorised"


def test_aws_side_statements_are_documented_and_scoped():
    statements = {s["Sid"]: s for s in json.loads(POLICY.read_text())["Statement"]}
    security = (ROOT / "docs" / "security.md").read_text()
    for sid in AWS_SIDE_ONLY:
        assert sid in statements and f"`{sid}`" in security, sid
        assert all(a.startswith("kms:") for a in (statements[sid]["Action"] if isinstance(statements[sid]["Action"], list) else [statements[sid]["Action"]]))
        assert statements[sid].get("Condition"), f"{sid} must be scoped by a condition"
    assert statements["EbsKmsGrantsForEncryptedVolumes"]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def test_tags_at_creation_are_allowed_only_while_creating():
    """Tags in TagSpecifications need ec2:CreateTags on the new resource with ec2:CreateAction (EC2 user guide, "Grant
    permission to tag resources during creation"): one statement per creating action, scoped to it."""
    statements = json.loads(POLICY.read_text())["Statement"]
    scoped = {s["Condition"]["StringEquals"]["ec2:CreateAction"]: s["Resource"] for s in statements
              if s["Action"] == "ec2:CreateTags" and "ec2:CreateAction" in json.dumps(s.get("Condition", {}))}
    assert scoped == {"CreateImage": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"],
                      "CreateReplaceRootVolumeTask": "arn:aws:ec2:*:*:replace-root-volume-task/*"}


def test_deletions_are_limited_to_the_tools_own_resources():
    statements = json.loads(POLICY.read_text())["Statement"]
    for action in ("ec2:DeregisterImage", "ec2:DeleteSnapshot"):
        granting = [s for s in statements if action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]
        assert granting and all(s["Condition"] == {"StringEquals": {"aws:ResourceTag/cms-patching:managed": "true"}} for s in granting)
    creating_tags = [s for s in statements if s["Action"] == "ec2:CreateTags" and "image/*" in json.dumps(s["Resource"])]
    assert creating_tags and all("Condition" in s for s in creating_tags)


def test_no_secret_reaches_output_reports_or_s3(surface):
    texts = list(surface["outputs"]) + list(surface["s3"])
    files = [p for p in surface["reports"].rglob("*") if p.is_file()]
    assert len([p for p in files if p.name.startswith("report.")]) >= 6  # site and rollback runs x json/csv/html (cleanup writes none)
    texts += [p.read_text(errors="replace") for p in files]
    assert sum(len(t) for t in surface["outputs"]) > 100_000  # -vvv really was verbose
    for secret in (surface["secret"], surface["token"]):
        leaks = [i for i, text in enumerate(texts) if secret in text]
        assert not leaks, f"secret found in output/report #{leaks}"


def test_report_files_are_not_world_readable(surface):
    paths = [surface["reports"]] + list(surface["reports"].rglob("*"))
    assert any(p.name == ".lock" for p in paths) and any(p.name == "report.json" for p in paths)
    for path in paths:
        if path == surface["reports"]:
            continue  # the parent is the user's choice; each run directory inside is the tool's
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {oct(mode)}"
