"""The site playbook end to end over a mixed fleet of about 60 (two accounts, two regions) with every simulator fault.

One full run serves many assertions: each faulty instance ends as the patching contract's fault table says, in the
report and in PLAY RECAP; every other instance is patched and compliant; and the safety invariants hold in AWS.
"""

import uuid

import pytest

from helpers import FAST, FAST_VARS, ROOT, read_report, recap, run_playbook, write_fleet_inventory

OTHER_ACCOUNT = "222222222222"
# (faults, expected final_status, expected reason); the reason of a skipped instance is its discovery reason.
TABLE = {
    "ok": ([], "patched", None),
    "unmanaged": (["ssm-unmanaged"], "skipped", "ssm_unmanaged"),
    "offline": (["ssm-offline"], "skipped", "ssm_offline"),
    "amifail": (["ami-fail"], "failed", "backup_failed"),
    "snaperr": (["snapshot-error"], "failed", "backup_failed"),
    "precheck": (["precheck-fail"], "failed", "precheck_failed"),
    "undeliv": (["undeliverable"], "failed", "undeliverable"),
    "delivto": (["delivery-timeout"], "failed", "delivery_timed_out"),
    "patchfail": (["patch-fail"], "rolled_back", "patch_failed"),
    "patchto": (["patch-timeout"], "rolled_back", "patch_timed_out"),
    "hang": (["reboot-hang"], "rolled_back", "reboot_timeout"),
    "restart": (["restart-fail"], "rolled_back", "service_restart_failed"),
    "health": (["health-fail"], "rolled_back", "health_check_failed"),
    "rbfail": (["health-fail", "rollback-fail"], "failed", "rollback_failed"),
}
ROLLED_BACK = {k for k, (_f, status, _r) in TABLE.items() if status == "rolled_back"} | {"rbfail"}


def group(kind, count=1, **extra):
    return dict(extra, count=count, name_prefix=kind, faults=TABLE[kind][0])


@pytest.fixture(scope="module")
def site_run(sim_url, tmp_path_factory):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    sim = Sim(sim_url)
    sim.configure(**FAST)
    tag = f"site-{uuid.uuid4().hex[:8]}"
    groups = [group("ok", 20), group("ok", 6, platform="windows", name_prefix="okwin")]
    groups += [group(kind) for kind in TABLE if kind != "ok"]
    groups += [group("patchfail", platform="windows", name_prefix="patchfailwin"), group("health", platform="windows", name_prefix="healthwin")]
    groups += [group("ok", 6, region="eu-west-1", name_prefix="okeu"), group("patchfail", region="eu-west-1", name_prefix="patchfaileu"),
               group("offline", region="eu-west-1", name_prefix="offlineeu")]
    groups += [group("ok", 6, account_id=OTHER_ACCOUNT, name_prefix="okacct"), group("amifail", account_id=OTHER_ACCOUNT, name_prefix="amifailacct"),
               group("health", account_id=OTHER_ACCOUNT, name_prefix="healthacct")]
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": groups})

    # An image this tool does not own, with a name like the tool's: it must survive untouched.
    ec2 = sim.client("ec2")
    victim = next(i for i in instances if i["name"] == "ok-001")
    foreign = ec2.create_image(InstanceId=victim["instance_id"], Name=f"cms-patching-{victim['instance_id']}-foreign")["ImageId"]

    workdir = tmp_path_factory.mktemp("site")
    inventory = write_fleet_inventory(workdir, tag, regions=["us-east-1", "eu-west-1"], accounts=[OTHER_ACCOUNT])
    run_id = f"site-{uuid.uuid4().hex[:8]}"
    # No canary of one here: Ansible ends a serial play when every host of a wave fails, whatever
    # max_fail_percentage says, and a faulty canary would hide the rest of the table.
    extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(workdir / "reports"),
                 cms_patching_max_fail_percentage=100, cms_patching_serial=["50%"], patching_agent_online_timeout=4,
                 patching_agent_check_interval=0.5,
                 patching_restart_services=["nginx"], patching_health_checks=["curl -fsS http://localhost/health"])
    sim.reset_stats()
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=inventory, extra_vars=extra)
    (workdir / "stdout.txt").write_text(proc.stdout + proc.stderr)
    report, entries = read_report(workdir / "reports", run_id)
    return {"sim": sim, "proc": proc, "instances": instances, "report": report, "entries": entries, "run_id": run_id,
            "foreign": foreign, "stats": sim.stats(), "workdir": workdir}


def kind_of(instance):
    prefix = instance["name"].rsplit("-", 1)[0]
    return next(k for k in sorted(TABLE, key=len, reverse=True) if prefix.startswith(k))


def test_every_instance_ends_as_the_fault_table_says(site_run):
    assert site_run["proc"].returncode == 2, site_run["proc"].stdout[-3000:]  # some hosts failed, none unreachable
    for instance in site_run["instances"]:
        _faults, status, reason = TABLE[kind_of(instance)]
        entry = site_run["entries"][instance["instance_id"]]
        assert entry["final_status"] == status, (instance["name"], entry)
        if status == "skipped":
            assert reason in entry["discovery"]["reasons"], instance["name"]
        else:
            assert entry.get("reason") == reason, (instance["name"], entry)


def test_play_recap_fails_exactly_the_failed_and_rolled_back_hosts(site_run):
    stats = recap(site_run["proc"].stdout)
    for instance in site_run["instances"]:
        status = TABLE[kind_of(instance)][1]
        failed = stats[instance["instance_id"]]["failed"]
        assert failed == (1 if status in ("failed", "rolled_back") else 0), (instance["name"], stats[instance["instance_id"]])


def test_unaffected_instances_are_patched_and_compliant_in_aws(site_run):
    sim = site_run["sim"]
    for instance in site_run["instances"]:
        if kind_of(instance) != "ok":
            continue
        entry = site_run["entries"][instance["instance_id"]]
        assert entry["patch"]["compliance_after"]["missing"] == 0 and entry["patch"]["compliance_before"]["missing"] > 0
        assert entry["backup"]["verified"] is True and entry["validation"]["passed"] is True
        ssm = sim.client("ssm", instance["region"]) if instance["account_id"] != OTHER_ACCOUNT else None
        if ssm is not None:
            state = ssm.describe_instance_patch_states(InstanceIds=[instance["instance_id"]])["InstancePatchStates"][0]
            assert state["MissingCount"] == 0 and state["FailedCount"] == 0
        tags = {t["Key"]: t["Value"] for t in sim.client("ec2", instance["region"]).describe_tags(
            Filters=[{"Name": "resource-id", "Values": [instance["instance_id"]]}])["Tags"]} if ssm is not None else None
        if tags is not None:
            assert tags["cms-patching:last-patch-status"] == "patched" and tags["cms-patching:run-id"] == site_run["run_id"]


def test_rollback_happened_exactly_where_the_table_says(site_run):
    for instance in site_run["instances"]:
        entry = site_run["entries"][instance["instance_id"]]
        performed = (entry.get("rollback") or {}).get("performed", False)
        assert performed is (kind_of(instance) in ROLLED_BACK), instance["name"]


def test_no_instance_was_patched_without_a_verified_backup(site_run):
    sim = site_run["sim"]
    ec2, ssm = sim.client("ec2"), sim.client("ssm")
    patched_targets = set()
    for command in ssm.get_paginator("list_commands").paginate().build_full_result()["Commands"]:
        if command.get("Comment", "").startswith(f"cms-patching {site_run['run_id']} patch "):
            assert len(command["InstanceIds"]) <= 50
            patched_targets.update(command["InstanceIds"])
    verified = set()
    fleet_ids = [i["instance_id"] for i in site_run["instances"] if i["region"] == "us-east-1" and i["account_id"] != OTHER_ACCOUNT]
    for image in ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-patching:verified", "Values": ["true"]},
                                                               {"Name": "tag:cms-patching:source-instance", "Values": fleet_ids}])["Images"]:
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        assert tags["cms-patching:managed"] == "true"
        verified.add(tags["cms-patching:source-instance"])
    assert patched_targets, "no patch command found"
    assert patched_targets <= verified


def test_no_orphans_and_foreign_image_untouched(site_run):
    ec2 = site_run["sim"].client("ec2")
    foreign = ec2.describe_images(ImageIds=[site_run["foreign"]])["Images"][0]
    assert foreign["State"] == "available"
    snaps = [m["Ebs"]["SnapshotId"] for m in foreign["BlockDeviceMappings"] if "Ebs" in m]
    assert ec2.describe_snapshots(SnapshotIds=snaps)["Snapshots"]
    failed_sources = {i["instance_id"] for i in site_run["instances"] if kind_of(i) in ("amifail", "snaperr") and i["region"] == "us-east-1"
                      and i["account_id"] != OTHER_ACCOUNT}
    owned = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:cms-patching:managed", "Values": ["true"]}])["Images"]
    left = [i for i in owned if {t["Key"]: t["Value"] for t in i["Tags"]}.get("cms-patching:source-instance") in failed_sources]
    assert not left, "failed backups must be deregistered"
    orphans = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": "tag:cms-patching:source-instance", "Values": sorted(failed_sources)}])["Snapshots"]
    assert not orphans


def test_report_files_and_summary(site_run):
    report = site_run["report"]
    assert report["phases"] == ["discovery", "backup", "patching"]
    assert report["summary"]["total"] == len(site_run["instances"])
    assert report["summary"]["patched"] == sum(1 for i in site_run["instances"] if kind_of(i) == "ok")
    assert "CMS.PATCHING SUMMARY" in site_run["proc"].stdout
    assert not (ROOT / "reports" / site_run["run_id"]).exists(), "the report belongs in cms_patching_report_dir"
    csv_rows = (site_run["workdir"] / "reports" / site_run["run_id"] / "report.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(site_run["instances"]) + 1


def test_api_calls_stay_batched(site_run):
    calls = site_run["stats"]["calls"]
    n = len(site_run["instances"])
    backed_up = sum(1 for i in site_run["instances"] if TABLE[kind_of(i)][1] != "skipped")
    assert calls["ec2:CreateImage"] == backed_up
    assert calls.get("ec2:CreateTags", 0) < n / 2
    assert calls["ssm:SendCommand"] < n


def test_html_report_lists_every_instance_failures_first(site_run):
    from html.parser import HTMLParser  # pylint: disable=import-outside-toplevel

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self._cells, self._in_td, self.external = [], None, False, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "tr":
                self._cells = []
            elif tag == "td":
                self._in_td = True
                self._cells.append("")
            for key in ("src", "href"):
                if attrs.get(key):
                    self.external.append(attrs[key])

        def handle_endtag(self, tag):
            if tag == "td":
                self._in_td = False
            elif tag == "tr" and self._cells:
                self.rows.append(self._cells)
                self._cells = None

        def handle_data(self, data):
            if self._in_td:
                self._cells[-1] += data

    parser = Rows()
    parser.feed((site_run["workdir"] / "reports" / site_run["run_id"] / "report.html").read_text())
    assert not parser.external, "the HTML report must be self-contained"
    ids = [row[0] for row in parser.rows]
    assert sorted(ids) == sorted(i["instance_id"] for i in site_run["instances"])
    statuses = [row[5] for row in parser.rows]
    first_ok = next(n for n, s in enumerate(statuses) if s not in ("failed", "rolled_back"))
    assert all(s not in ("failed", "rolled_back") for s in statuses[first_ok:]), "failures come first"


def test_every_host_has_a_recap_line_and_no_lock_is_left(site_run):
    # Every host has its PLAY RECAP line (AWX host summary row), and no lock of the run is left behind: not for
    # the failed backups (released by the backup play), nor for the patched, failed or rolled-back instances.
    stats = recap(site_run["proc"].stdout)
    assert {i["instance_id"] for i in site_run["instances"]} <= set(stats)
    for region in ("us-east-1", "eu-west-1"):
        ssm = site_run["sim"].client("ssm", region)
        ids = [i["instance_id"] for i in site_run["instances"] if i["region"] == region and i["account_id"] != OTHER_ACCOUNT]
        for start in range(0, len(ids), 10):
            names = [f"/cms-patching/locks/{i}" for i in ids[start:start + 10]]
            assert not ssm.get_parameters(Names=names)["Parameters"], region
