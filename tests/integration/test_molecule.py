"""The roles' molecule scenarios (extensions/molecule/), each run with `molecule test -s <name>` against the shared simulator.

Each test seeds its own small fleet (unique cms-test tag), writes an ec2_fleet inventory plus a settings file into a
directory the scenario links as its inventory (CMS_MOLECULE_INVENTORY), and gives molecule its own ephemeral directory,
so scenarios run in parallel. The scenario's verify checks the role's facts, report and AWS state; the test then reads
AWS back with boto3 and the simulator's accounting, independently of the scenario.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from helpers import FAST, FAST_VARS, ROOT, read_report, write_fleet_inventory

BIN = Path(sys.executable).parent

# name prefix -> (eligible, exact reasons); every scenario's fleet is built from these groups.
HEALTHY = {"count": 2, "name_prefix": "web"}
ONE_HEALTHY = dict(HEALTHY, count=1)
OFFLINE = {"count": 1, "name_prefix": "off", "faults": ["ssm-offline"]}
UNMANAGED = {"count": 1, "name_prefix": "unm", "faults": ["ssm-unmanaged"]}
EXCLUDED = {"count": 1, "name_prefix": "exc", "tags": {"cms-patching:exclude": "true"}}
ASG = {"count": 1, "name_prefix": "asg", "asg": "web-asg"}
REASONS = {"web": [], "off": ["ssm_offline"], "unm": ["ssm_unmanaged"], "exc": ["excluded_by_tag"], "asg": ["asg_member"]}


def run_scenario(sim, tmp_path, scenario, groups):
    """Seed the fleet, run `molecule test -s <scenario>` on it and return (instances, run_id, completed process)."""
    sim.configure(**FAST)
    tag = f"molecule-{scenario}-{uuid.uuid4().hex[:8]}"
    # Auto Scaling groups are per account and region in the shared simulator: a group name of this scenario's own.
    groups = [dict(g, asg=f"{g['asg']}-{tag}") if g.get("asg") else g for g in groups]
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": groups})
    sim.reset_stats()  # count only what molecule does
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    write_fleet_inventory(inventory, tag)
    run_id = f"molecule-{scenario}-{uuid.uuid4().hex[:8]}"
    # A YAML inventory next to the fleet one: its `all` vars reach every play (converge, prepare and verify).
    settings = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports"))
    (inventory / "settings.yml").write_text(yaml.safe_dump({"all": {"vars": settings}}))
    env = dict(sim.env, CMS_MOLECULE_INVENTORY=str(inventory), MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"),
               PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "molecule"), "test", "-s", scenario], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert f"{scenario} > verify: Executed: Successful" in output, output[-3000:]
    print(f"molecule test -s {scenario}: {time.monotonic() - started:.1f} s")
    return instances, run_id, output


def by_kind(instances):
    return {kind: [i["instance_id"] for i in instances if i["name"].startswith(kind)] for kind in REASONS}


def eligible_ids(instances):
    return sorted(i["instance_id"] for i in instances if not REASONS[i["name"][:3]])


def images_of(sim, instance_ids):
    images = sim.client("ec2").describe_images(Owners=["self"], Filters=[
        {"Name": "tag:cms-patching:source-instance", "Values": list(instance_ids)}])["Images"]
    return [i for i in images if i["State"] != "deregistered"]


def tags_of(sim, instance_ids):
    reservations = sim.client("ec2").describe_instances(InstanceIds=list(instance_ids))["Reservations"]
    return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for r in reservations for i in r["Instances"]}


def patch_commands(sim, run_id):
    commands = sim.client("ssm").get_paginator("list_commands").paginate().build_full_result()["Commands"]
    mine = [c for c in commands if c.get("Comment", "").startswith(f"cms-patching {run_id} patch ")]
    return [sorted(c["InstanceIds"]) for c in sorted(mine, key=lambda c: c["RequestedDateTime"])]


def test_scenarios_use_the_checkout_offline():
    """Every scenario runs against this checkout's collection, never a copy, and never asks Galaxy for anything."""
    scenarios = sorted(p.parent.name for p in (ROOT / "extensions" / "molecule").glob("*/molecule.yml"))
    assert scenarios == ["backup", "default", "discovery", "patching"]
    for name in scenarios:
        config = yaml.safe_load((ROOT / "extensions" / "molecule" / name / "molecule.yml").read_text())
        assert config["prerun"] is False and config["dependency"]["enabled"] is False, name
        scenario_dir = ROOT / "extensions" / "molecule" / name
        assert (scenario_dir / config["ansible"]["env"]["ANSIBLE_CONFIG"]).resolve() == ROOT / "ansible.cfg"
        first_path = config["ansible"]["env"]["ANSIBLE_COLLECTIONS_PATH"].split(":")[0]
        assert (scenario_dir / first_path / "ansible_collections" / "cms" / "patching").resolve() == ROOT
        assert config["provisioner"]["inventory"]["links"]["hosts"].startswith("${CMS_MOLECULE_INVENTORY")


def test_discovery_scenario(sim, tmp_path):
    instances, run_id, _output = run_scenario(sim, tmp_path, "discovery", [HEALTHY, OFFLINE, UNMANAGED, EXCLUDED, ASG])
    # Converge and verify together changed nothing in AWS but the wave plan's tag (cms-patching:wave) on the
    # eligible instances: one CreateTags per wave.
    stats = sim.stats()
    assert set(stats["mutating"]) <= {"ec2:CreateTags"}, stats["mutating"]
    wave_tags = {i: t.get("cms-patching:wave") for i, t in tags_of(sim, [i["instance_id"] for i in instances]).items()}
    assert {i for i, w in wave_tags.items() if w} == set(eligible_ids(instances))
    assert all(w.startswith(run_id + "/") for w in wave_tags.values() if w)
    _report, entries = read_report(tmp_path / "reports", run_id)
    assert len(entries) == len(instances)
    for instance in instances:
        entry = entries[instance["instance_id"]]
        expected = REASONS[instance["name"][:3]]
        assert entry["discovery"]["reasons"] == expected, (instance["name"], entry["discovery"])
        assert entry["final_status"] == ("skipped" if expected else "discovered")


def test_backup_scenario(sim, tmp_path):
    instances, run_id, _output = run_scenario(sim, tmp_path, "backup", [HEALTHY, OFFLINE, EXCLUDED])
    eligible = eligible_ids(instances)
    images = images_of(sim, [i["instance_id"] for i in instances])
    assert len(images) == len(eligible)
    for image in images:
        tags = {t["Key"]: t["Value"] for t in image["Tags"]}
        assert tags["cms-patching:source-instance"] in eligible and image["State"] == "available"
        assert tags["cms-patching:verified"] == "true" and tags["cms-patching:run-id"] == run_id
    calls = sim.stats()["calls"]
    assert calls["ec2:CreateImage"] == len(eligible)
    # The only command is the pre-flight free-space check (one per platform per account and region): nothing patched.
    assert calls["ssm:SendCommand"] == 1
    comments = [c["Comment"] for c in sim.client("ssm").list_commands()["Commands"] if run_id in c.get("Comment", "")]
    assert len(comments) == 1 and comments[0].split()[2] == "preflight", comments


def test_patching_scenario(sim, tmp_path):
    # Two hosts in two serial batches (canary, then the rest): one patched, one skipped. Bigger waves are the end-to-end
    # tests' job (test_site_phases); this keeps the scenario well under 40 s.
    instances, run_id, _output = run_scenario(sim, tmp_path, "patching", [ONE_HEALTHY, EXCLUDED])
    eligible = eligible_ids(instances)
    tags = tags_of(sim, [i["instance_id"] for i in instances])
    for instance_id, instance_tags in tags.items():
        if instance_id in eligible:
            assert instance_tags["cms-patching:last-patch-status"] == "patched", instance_tags
            assert instance_tags["cms-patching:run-id"] == run_id
        else:
            assert "cms-patching:last-patch-status" not in instance_tags
    # The prepare step's backups gate the patching: one image per eligible instance, and nothing patched twice.
    assert len(images_of(sim, eligible)) == len(eligible)
    # One patch command, for the eligible host's wave only: the skipped host's wave sends nothing.
    assert patch_commands(sim, run_id) == [eligible]


def test_default_scenario_runs_the_site_playbook(sim, tmp_path):
    instances, run_id, _output = run_scenario(sim, tmp_path, "default", [ONE_HEALTHY, OFFLINE])
    eligible = eligible_ids(instances)
    report, entries = read_report(tmp_path / "reports", run_id)
    assert report["phases"] == ["discovery", "backup", "patching"]
    assert sorted(i for i, e in entries.items() if e["final_status"] == "patched") == eligible
    assert [e["final_status"] for i, e in entries.items() if i not in eligible] == ["skipped"]
    assert len(images_of(sim, [i["instance_id"] for i in instances])) == len(eligible)
    assert {t["cms-patching:last-patch-status"] for i, t in tags_of(sim, eligible).items()} == {"patched"}


def test_scenario_without_inventory_fails_clearly(tmp_path):
    """Without CMS_MOLECULE_INVENTORY a scenario must not fall back to some other inventory (e.g. the whole account)."""
    env = dict(os.environ, MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1",
               PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), AWS_ENDPOINT_URL="http://127.0.0.1:9")
    env.pop("CMS_MOLECULE_INVENTORY", None)
    proc = subprocess.run([str(BIN / "molecule"), "converge", "-s", "discovery"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "CMS_MOLECULE_INVENTORY-is-not-set" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
