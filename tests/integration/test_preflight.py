"""ec2_preflight against the simulator: each pre-flight failure (disk-full, an old agent), a disabled KMS key (a
warning), an exhausted AMI quota (one line for the account), check mode and bad input."""

import random
import uuid

from helpers import FAST, run_module

POLL = 0.2


def seed(sim, groups, account_id=None):
    spec = {"region": "us-east-1", "tags": {"cms-test": f"preflight-{uuid.uuid4().hex[:8]}"},
            "groups": [dict(count=count, name_prefix=prefix, **extra) for prefix, (count, extra) in groups.items()]}
    if account_id:
        spec["account_id"] = account_id
    return {i["name"]: i["instance_id"] for i in sim.seed(spec)}


def encrypted_volume(sim, instance_id, disabled=False, client=None):
    """Attach a volume encrypted with a new customer-managed key to the instance (disabled afterwards if asked)."""
    ec2, kms = client("ec2") if client else sim.client("ec2"), client("kms") if client else sim.client("kms")
    key = kms.create_key(Description="preflight test")["KeyMetadata"]
    zone = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    vol = ec2.create_volume(AvailabilityZone=zone, Size=8, Encrypted=True, KmsKeyId=key["Arn"])["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId=instance_id, Device="/dev/sdf")
    if disabled:
        kms.disable_key(KeyId=key["KeyId"])
    return vol, key["Arn"]


def preflight(sim, ids, **extra):
    args = dict(instance_ids=ids, run_id="run-pf", poll_interval=POLL, command_timeout=60, region="us-east-1")
    return run_module("ec2_preflight", dict(args, **extra), sim.env)


def test_each_instance_failure_is_a_reason_code_and_a_disabled_key_a_warning(sim):
    sim.configure(**FAST)
    names = seed(sim, {"full": (1, {"faults": ["disk-full"]}), "old": (1, {"tags": {"sim:agent-version": "2.0.672.0"}}),
                       "ok": (2, {}), "win": (1, {"platform": "windows", "faults": ["disk-full"]})})
    full, old, ok1, ok2, win = (names[n] for n in ("full-001", "old-001", "ok-001", "ok-002", "win-001"))
    vol, key = encrypted_volume(sim, ok1, disabled=True)
    sim.reset_stats()
    result = preflight(sim, [full, old, ok1, ok2, win])
    assert result["rc"] == 0, result.get("msg")
    res = {r["instance_id"]: r for r in result["results"]}
    assert (res[full]["passed"], res[full]["reason"]) == (False, "preflight_disk")
    assert "only 12 MB free on /, need 1024" in res[full]["error"]
    assert (res[win]["reason"], "C:" in res[win]["error"]) == ("preflight_disk", True)
    assert (res[old]["passed"], res[old]["reason"], res[old]["agent_version"]) == (False, "preflight_agent_version", "2.0.672.0")
    assert "older than 2.0.834.0" in res[old]["error"]
    assert res[ok1]["passed"] and res[ok2]["passed"] and res[ok2]["warnings"] == []
    [warning] = res[ok1]["warnings"]
    assert warning["code"] == "preflight_kms_key" and vol in warning["message"] and "Disabled" in warning["message"] and key in warning["message"]
    assert sorted(result["failed_ids"]) == sorted([full, old, win])
    assert result["summary"] == {"total": 5, "passed": 2, "failed": 3, "warnings": 1}
    assert result["account"]["error"] is None and set(result["account"]["quotas"]) == {"amis", "snapshots"}
    assert result["changed"] is False
    # Reads and the free-space command only: one SendCommand per platform, nothing else mutating.
    assert sim.stats()["mutating"] == {"ssm:SendCommand": 2}, sim.stats()["mutating"]
    assert not sim.client("ec2").describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-test", "Values": ["x"]}])["Images"]


def test_a_version_compares_numerically():
    from ansible_collections.cms.patching.plugins.module_utils.preflight import agent_too_old  # pylint: disable=import-outside-toplevel
    assert agent_too_old("2.0.1000.0") is False  # as text "2.0.1000.0" < "2.0.834.0"
    assert agent_too_old("2.0.833.9") is True
    assert agent_too_old("2.0.834") is False and agent_too_old("junk") is True


def test_an_exhausted_ami_quota_is_one_line_for_the_account(sim):
    sim.configure(**FAST)
    account = str(random.randint(300000000000, 999999999999))  # a fresh account: no other test's images count in it
    role = f"arn:aws:iam::{account}:role/cms-patching"
    names = seed(sim, {"web": (3, {})}, account_id=account)
    ids = sorted(names.values())
    made = run_module("ami_backup_verify", {"instance_ids": ids[:1], "run_id": "run-pf-q", "poll_interval": 0.1, "role_arn": role,
                                            "region": "us-east-1"}, sim.env)
    assert made["rc"] == 0, made.get("msg")
    sim.configure(quota_amis=3)  # one image in use: room for 2, and 3 instances need 3
    result = preflight(sim, ids, role_arn=role, checks=["quota"])
    assert result["rc"] != 0
    assert result["msg"] == ("preflight_quota: us-east-1: AMIs quota (L-B665C33B) 3, 1 in use: room for 2, this run makes 3"), result["msg"]
    assert result["account"]["quotas"]["amis"] == {"quota_code": "L-B665C33B", "service_code": "ec2", "value": 3, "used": 1, "room": 2,
                                                   "planned": 3}
    assert result["account"]["quotas"]["snapshots"]["used"] == 1 and result["account"]["quotas"]["snapshots"]["planned"] == 3
    assert run_module("ec2_preflight", dict(instance_ids=ids[:2], role_arn=role, checks=["quota"], region="us-east-1"), sim.env)["rc"] == 0
    unchecked = run_module("ec2_preflight", dict(instance_ids=ids, role_arn=role, checks=["quota"], region="us-east-1",
                                                 fail_on_quota=False), sim.env)
    assert unchecked["rc"] == 0 and unchecked["account"]["error"].startswith("preflight_quota:")


def test_an_unreadable_quota_is_a_note_not_a_failure(sim):
    sim.configure(**FAST)
    ids = sorted(seed(sim, {"web": (1, {})}).values())
    sim.configure(iam_policy={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ec2:Describe*", "ssm:DescribeInstanceInformation"], "Resource": "*"}]})
    result = preflight(sim, ids, checks=["quota", "agent_version"])
    assert result["rc"] == 0, result.get("msg")
    assert result["account"]["error"] is None and result["account"]["quotas"] == {}
    assert len(result["account"]["notes"]) == 2 and all("not read, not checked" in n and "AccessDenied" in n for n in result["account"]["notes"])


def test_check_mode_sends_nothing_and_bad_input_is_one_line(sim):
    sim.configure(**FAST)
    ids = sorted(seed(sim, {"full": (1, {"faults": ["disk-full"]})}).values())
    sim.reset_stats()
    dry = run_module("ec2_preflight", dict(instance_ids=ids, region="us-east-1"), sim.env, check_mode=True)
    assert dry["rc"] == 0 and dry["results"][0]["passed"] and dry["results"][0]["disk"]["outcome"] == "not_run", dry
    assert sim.stats()["mutating"] == {}
    for args, text in ((dict(instance_ids=ids, min_agent_version="two"), "min_agent_version must be a dotted version"),
                       (dict(instance_ids=["i-nope"]), "i-nope"), (dict(instance_ids=ids, min_free_mb=0), "min_free_mb must be greater than 0")):
        bad = run_module("ec2_preflight", dict(args, region="us-east-1"), sim.env)
        assert bad["rc"] != 0 and text in bad["msg"] and "\n" not in bad["msg"] and "Traceback" not in bad["stderr"], bad
    assert sim.stats()["mutating"] == {}


# ---------------------------------------------------------------- the site playbook: pre-flight in the backup play

def site(sim, tmp_path, groups, run_id, account_id=None, **extra):
    from helpers import FAST_VARS, run_playbook, write_fleet_inventory  # pylint: disable=import-outside-toplevel
    tag = f"preflight-{uuid.uuid4().hex[:8]}"
    spec = {"region": "us-east-1", "tags": {"cms-test": tag},
            "groups": [dict(count=count, name_prefix=prefix, **more) for prefix, (count, more) in groups.items()]}
    if account_id:
        spec["account_id"] = account_id
    instances = {i["name"]: i["instance_id"] for i in sim.seed(spec)}
    inventory = write_fleet_inventory(tmp_path, tag, accounts=[account_id] if account_id else (),
                                      **({"include_default_account": False} if account_id else {}))
    return instances, lambda tags=None, check=False, **more: run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=dict(
        FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"), cms_patching_max_fail_percentage=100,
        cms_patching_serial=["100%"], **dict(extra, **more)), tags=tags, check=check)


def test_site_run_fails_preflight_instances_with_their_reason_and_makes_no_image_of_them(sim, tmp_path):
    from helpers import read_report, recap  # pylint: disable=import-outside-toplevel
    sim.configure(**FAST)
    run_id = f"pf-{uuid.uuid4().hex[:8]}"
    names, play = site(sim, tmp_path, {"ok": (2, {}), "full": (1, {"faults": ["disk-full"]}),
                                       "old": (1, {"tags": {"sim:agent-version": "2.0.672.0"}})}, run_id)
    ok1, ok2, full, old = names["ok-001"], names["ok-002"], names["full-001"], names["old-001"]
    encrypted_volume(sim, ok1, disabled=True)
    sim.reset_stats()
    proc = play()
    assert proc.returncode == 2, proc.stdout[-3000:]  # the two failed hosts
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert (entries[full]["final_status"], entries[full]["reason"]) == ("failed", "preflight_disk"), entries[full]
    assert "only 12 MB free" in entries[full]["preflight"]["error"]
    assert (entries[old]["final_status"], entries[old]["reason"]) == ("failed", "preflight_agent_version"), entries[old]
    for iid in (ok1, ok2):
        assert entries[iid]["final_status"] == "patched" and entries[iid]["preflight"]["passed"], entries[iid]
    assert [w["code"] for w in entries[ok1]["preflight"]["warnings"]] == ["preflight_kms_key"]
    # No image of the instances that failed pre-flight, one of each other.
    images = sim.client("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "tag:cms-patching:source-instance", "Values": [ok1, ok2, full, old]}])["Images"]
    assert sorted(t["Value"] for i in images for t in i["Tags"] if t["Key"] == "cms-patching:source-instance") == sorted([ok1, ok2])
    hosts = recap(proc.stdout)
    assert hosts[full]["failed"] == 1 and hosts[old]["failed"] == 1 and hosts[ok1]["failed"] == 0
    assert "preflight_disk: free-space check failed" in proc.stdout


def test_site_run_stops_with_one_line_when_the_ami_quota_has_no_room(sim, tmp_path):
    sim.configure(**FAST)
    account = str(random.randint(300000000000, 999999999999))
    run_id = f"pfq-{uuid.uuid4().hex[:8]}"
    _names, play = site(sim, tmp_path, {"web": (3, {})}, run_id, account_id=account)
    sim.configure(quota_amis=2)
    line = "preflight_quota: us-east-1: AMIs quota (L-B665C33B) 2, 0 in use: room for 2, this run makes 3"
    # Refused right after discovery's plan, before its first change: no plan tag, no lock, no free-space command, no
    # image. The same when the backup play runs discovery itself (--tags backup), and in a dry run.
    for tags, check in ((None, False), ("backup", False), (None, True)):
        sim.reset_stats()
        proc = play(tags=tags, check=check)
        assert proc.returncode != 0 and line in proc.stdout, (tags, check, proc.stdout[-3000:])
        assert "Traceback" not in proc.stdout and sim.stats()["mutating"] == {}, (tags, check, sim.stats()["mutating"])
        assert "servicequotas:GetServiceQuota" in sim.stats()["calls"]
    # Room for the three: the quotas are read once (in discovery), not again by the backup play's pre-flight.
    sim.configure(quota_amis=3)
    sim.reset_stats()
    proc = play()
    assert proc.returncode == 0, proc.stdout[-3000:]
    calls = sim.stats()["calls"]
    assert calls["ec2:CreateImage"] == 3 and calls["servicequotas:GetServiceQuota"] == 2, calls


def test_a_resumed_run_checks_again_an_instance_that_failed_preflight(sim, tmp_path):
    # The run id's first invocation: full-001 fails pre-flight (disk-full), ok-001 is patched. Someone frees the disk,
    # and the run is resumed (its backup job again): full-001 is checked again and backed up, no longer failed with its
    # old reason; ok-001, patched in this run, stays patched.
    from helpers import read_report  # pylint: disable=import-outside-toplevel
    sim.configure(**FAST)
    run_id = f"pfr-{uuid.uuid4().hex[:8]}"
    names, play = site(sim, tmp_path, {"ok": (1, {}), "full": (1, {"faults": ["disk-full"]})}, run_id)
    ok, full = names["ok-001"], names["full-001"]
    proc = play()
    assert proc.returncode == 2, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert (entries[full]["final_status"], entries[full]["reason"]) == ("failed", "preflight_disk"), entries[full]
    assert entries[ok]["final_status"] == "patched", entries[ok]

    sim.client("ec2").delete_tags(Resources=[full], Tags=[{"Key": "sim:fault"}])
    proc = play(tags="backup")
    assert proc.returncode == 0, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert entries[full]["preflight"]["passed"] and entries[full]["backup"]["verified"], entries[full]
    # Backed up and waiting for the run's patching phase, which ran before: not_patched (not_reached), no longer failed.
    assert (entries[full]["final_status"], entries[full].get("reason")) == ("not_patched", "not_reached"), entries[full]
    assert entries[ok]["final_status"] == "patched", entries[ok]

    proc = play(tags="patching")
    assert proc.returncode == 0, proc.stdout[-3000:]
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert (entries[full]["final_status"], entries[full].get("reason")) == ("patched", None), entries[full]


def test_bad_preflight_and_recovery_settings_stop_the_run_before_anything(sim, tmp_path):
    sim.configure(**FAST)
    _names, play = site(sim, tmp_path, {"web": (1, {})}, f"pfbad-{uuid.uuid4().hex[:8]}")
    for extra, text in (({"backup_preflight_checks": ["disk", "ram"]}, "invalid pre-flight settings"),
                        ({"patching_agent_recovery": ["reboot", "reboot"]}, "patching_agent_recovery must be a list of reboot and/or stop_start")):
        sim.reset_stats()
        proc = play(**extra)
        assert proc.returncode != 0 and text in proc.stdout, proc.stdout[-2000:]
        assert sim.stats()["mutating"] == {}
