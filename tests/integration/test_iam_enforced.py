"""docs/iam-policy.json enforced: the inventory and a full patch.yml (a patch failure and its rollback, failed backups
and their clean-up, a second account, the S3 report upload) give the same results under the policy as without it, and
every statement of the policy is needed by at least one call of that run.

The simulator authorises every call of the enforced key against the policy (/_sim/config iam_policy; assumed-role keys
follow their root key, so the other account's `cms-patching` role has the same policy, as docs/security.md says) and
records each authorised request context (/_sim/authz). Necessity is then checked offline: the recorded calls are
replayed through the simulator's evaluator without each statement in turn, so no extra playbook runs are needed.
"""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from awssim import iam
from helpers import FAST, FAST_VARS, ROOT, read_report, run_module, run_playbook, write_fleet_inventory
from integration.capacity_surface import capacity_wave
from integration.test_security import AWS_SIDE_ONLY, OTHER_ACCOUNT, POLICY, encrypted_volume

FLEET = [
    {"count": 2, "name_prefix": "ok"},
    {"count": 1, "name_prefix": "patchfail", "faults": ["patch-fail"]},
    {"count": 1, "name_prefix": "amifail", "faults": ["ami-fail"]},
    {"count": 1, "name_prefix": "snaperr", "faults": ["snapshot-error"]},
    {"count": 1, "name_prefix": "other", "account_id": OTHER_ACCOUNT, "region": "eu-west-1"},
    {"count": 1, "name_prefix": "stuck", "faults": ["agent-stuck"]},  # agent recovery: RebootInstances
]
EXPECTED = {"ok-001": "patched", "ok-002": "patched", "patchfail-001": "rolled_back", "amifail-001": "failed",
            "snaperr-001": "failed", "other-001": "patched", "stuck-001": "patched"}


def enforced_policy(bucket):
    return json.loads(POLICY.read_text().replace("REPORT-BUCKET", bucket))


def http_json(url):
    import urllib.request  # pylint: disable=import-outside-toplevel
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def site(sim_url, workdir, enforce):
    """Seed a fleet with a separate key, then list the inventory and run patch.yml with a fresh key (policy or not)."""
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    seeder, sim = Sim(sim_url), Sim(sim_url)
    tag = f"iam-{uuid.uuid4().hex[:8]}"
    instances = seeder.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": FLEET})
    bucket = f"cms-reports-{tag}"
    seeder.client("s3").create_bucket(Bucket=bucket)
    # The gates (issue 18): an alarm in OK gates each wave (cloudwatch:DescribeAlarms); the default stop switch is read.
    alarm = f"iam-gate-{tag}"
    seeder.client("cloudwatch").put_metric_alarm(AlarmName=alarm, MetricName="5xx", Namespace="App", Statistic="Sum", Period=60,
                                                 EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    seeder.client("cloudwatch").set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="baseline")
    encrypted_volume(seeder, next(i["instance_id"] for i in instances if i["name"] == "ok-002"), tag)  # pre-flight: kms:DescribeKey
    sim.configure(**FAST)
    policy = enforced_policy(bucket)
    if enforce:
        sim.configure(iam_policy=policy)
    workdir.mkdir()
    # No `regions`: the inventory asks ec2:DescribeRegions, as a user's inventory without regions does.
    listing_inventory = write_fleet_inventory(workdir, tag, regions=(), accounts=[OTHER_ACCOUNT])
    listing = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(listing_inventory), "--list"],
                             cwd=ROOT, env=sim.env, capture_output=True, text=True, timeout=300, check=False)
    hosts = json.loads(listing.stdout or "{}").get("_meta", {}).get("hostvars", {}) if listing.returncode == 0 else {}
    inventory = write_fleet_inventory(workdir, tag, regions=["us-east-1", "eu-west-1"], accounts=[OTHER_ACCOUNT])
    run_id = f"iam-{uuid.uuid4().hex[:8]}"
    extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(workdir / "reports"),
                 cms_patching_max_fail_percentage=100, cms_patching_serial=["100%"], cms_patching_report_s3_bucket=bucket,
                 cms_patching_alarms=[alarm])
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=extra)
    (workdir / "stdout.txt").write_text(proc.stdout + proc.stderr)
    # The operator's switch, set back to go (ssm:PutParameter on the default stop parameter: go changes no run).
    switch = run_playbook("playbooks/stop.yml", sim.env, extra_vars={"cms_patching_stop": False})
    assert switch.returncode == 0, switch.stdout[-2000:]
    # A command that outlives its execution_timeout is cancelled (ssm:CancelCommand), a path a healthy night may not reach.
    web = next(i["instance_id"] for i in instances if i["name"] == "ok-001")
    sim.configure(command_s=3)
    slow = run_module("ssm_command_run", {"step": "health", "instance_ids": [web], "commands": ["sleep 5"], "execution_timeout": 1,
                                          "poll_interval": 0.2, "region": "us-east-1"}, sim.env)
    sim.configure(command_s=FAST["command_s"])
    # The serving-capacity steps (issue 17): draining, standby, and putting back what a killed run left out.
    capacity = capacity_wave(seeder, sim, sim.env, tag)
    _report, entries = read_report(workdir / "reports", run_id)
    names = {i["instance_id"]: i["name"] for i in instances}
    return {"sim": sim, "policy": policy, "proc": proc, "listing": listing, "hosts": hosts, "slow": slow, "capacity": capacity,
            "final": {names[iid]: e["final_status"] for iid, e in entries.items() if iid in names},
            "authz": http_json(f"{sim_url}/_sim/authz?key={sim.key}") if enforce else None}


@pytest.fixture(scope="module")
def runs(sim_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("iam")
    # The same night with and without the policy, one after the other (under `pytest -n 2` another worker runs too).
    return {"enforced": site(sim_url, work / "enforced", True), "free": site(sim_url, work / "free", False)}


def test_inventory_lists_the_fleet_under_the_policy(runs):
    enforced, free = runs["enforced"], runs["free"]
    assert enforced["listing"].returncode == 0, enforced["listing"].stderr[-2000:]
    assert len(enforced["hosts"]) == len(EXPECTED) == len(free["hosts"])
    assert any(c["call"] == "ec2:DescribeRegions" for c in enforced["authz"]["calls"])


def test_patch_run_gives_the_same_results_with_and_without_the_policy(runs):
    enforced, free = runs["enforced"], runs["free"]
    assert enforced["final"] == free["final"] == EXPECTED, (enforced["proc"].stdout[-3000:], free["final"])
    assert [d["refused"] for d in enforced["authz"]["denied"]] == []
    assert enforced["slow"]["results"][0]["outcome"] == "timed_out", enforced["slow"]
    assert enforced["slow"]["results"][0]["status"] == "Cancelled", enforced["slow"]


def test_capacity_steps_give_the_same_results_with_and_without_the_policy(runs):
    enforced, free = runs["enforced"], runs["free"]
    assert sorted(enforced["capacity"].values()) == sorted(free["capacity"].values()) == ["patched"] * 4, (enforced["capacity"], free["capacity"])
    called = {c["call"] for c in enforced["authz"]["calls"]}
    assert {"elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:RegisterTargets", "autoscaling:EnterStandby",
            "autoscaling:ExitStandby", "ec2:DeleteTags"} <= called


def test_every_recorded_call_is_allowed_by_the_policy(runs):
    policy, calls = runs["enforced"]["policy"], runs["enforced"]["authz"]["calls"]
    assert len(calls) > 50
    refused = [c for c in calls if iam.authorize_call(policy, c)[0] != iam.ALLOW]
    assert refused == []


def test_every_statement_is_necessary(runs):
    """Without any one statement, at least one call of the run is refused; statements that only AWS's side uses (the
    KMS grants EBS makes for encrypted volumes) are the documented exceptions, and no recorded call needs them."""
    policy, calls = runs["enforced"]["policy"], runs["enforced"]["authz"]["calls"]
    sids = [s["Sid"] for s in policy["Statement"]]
    assert set(AWS_SIDE_ONLY) <= set(sids)
    unneeded, needed_allowlisted = [], []
    for index, sid in enumerate(sids):
        reduced = iam.without_statement(policy, index)
        refused = [c["call"] for c in calls if iam.authorize_call(reduced, c)[0] != iam.ALLOW]
        if sid in AWS_SIDE_ONLY:
            if refused:
                needed_allowlisted.append((sid, refused[:3]))
        elif not refused:
            unneeded.append(sid)
    assert unneeded == [], "statements no call of the run needs"
    assert needed_allowlisted == [], "allowlisted as AWS-side only, yet a recorded call needs them"


def test_a_denied_call_ends_with_one_line_naming_the_action(sim_url, tmp_path):
    """Under the policy without TagRootVolumeTasksWhenCreated (the statement issue 15 added), a rollback is refused by
    AWS on tagging the task: the module's error is one line that names ec2:CreateTags. Without ReadFleetImagesAndSnapshots,
    a backup cannot even start and says ec2:DescribeInstances."""
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    seeder, sim = Sim(sim_url), Sim(sim_url)
    iid = seeder.seed({"region": "us-east-1", "groups": [{"count": 1, "name_prefix": "deny"}]})[0]["instance_id"]
    ec2 = seeder.client("ec2")
    seeder.configure(image_pending_s=0)
    tags = [{"Key": "cms-patching:managed", "Value": "true"}, {"Key": "cms-patching:source-instance", "Value": iid}]
    image = ec2.create_image(InstanceId=iid, Name=f"deny-{iid}", TagSpecifications=[{"ResourceType": "image", "Tags": tags}])["ImageId"]
    full = enforced_policy("unused-bucket")
    sids = [s["Sid"] for s in full["Statement"]]
    sim.configure(iam_policy=iam.without_statement(full, sids.index("TagRootVolumeTasksWhenCreated")))
    result = run_module("ec2_root_restore", {"instances": [{"instance_id": iid, "image_id": image}], "region": "us-east-1",
                                             "poll_interval": 0.2}, sim.env)
    error = result["results"][0]["error"]
    assert result["results"][0]["status"] == "failed" and "\n" not in error
    assert error.startswith(f"ec2:CreateReplaceRootVolumeTask failed for {iid}: UnauthorizedOperation: ")
    assert "is not authorized to perform: ec2:CreateTags on resource: arn:aws:ec2:us-east-1:123456789012:replace-root-volume-task/*" in error
    assert "Traceback" not in result["stderr"]

    sim.configure(iam_policy=iam.without_statement(full, sids.index("ReadFleetImagesAndSnapshots")))
    result = run_module("ami_backup_verify", {"instance_ids": [iid], "region": "us-east-1", "run_id": "deny-1", "poll_interval": 0.2}, sim.env)
    assert result.get("failed") and "\n" not in result["msg"], result
    assert "is not authorized to perform: ec2:DescribeInstances" in result["msg"], result["msg"]
    assert "Traceback" not in result["stderr"]
    assert ec2.describe_images(Filters=[{"Name": "tag:cms-patching:run-id", "Values": ["deny-1"]}])["Images"] == []  # nothing changed
