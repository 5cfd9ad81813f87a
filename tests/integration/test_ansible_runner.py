"""The site playbook run the way AWX runs it: ansible-runner on a private data directory.

Like AWX, each run gets `env/envvars` (what the AWS credential type injects, here aimed at the simulator),
`env/extravars` (AWX's meta variables, the survey answers tagged !unsafe, the template's own extra vars as written),
`env/cmdline` (the template's job tags), `inventory/hosts` (a script printing JSON, as AWX writes it) and a copy of
the project in `project/`. The tests read what AWX reads back: the job events and the `playbook_on_stats` event
(per-host counts, and the set_stats artifacts that AWX hands to the next workflow node), then check the run report.
The discovery phase keeps them fast.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROJECT_FILES = ("ansible.cfg", "galaxy.yml", "meta", "plugins", "roles", "playbooks", "inventories", "collections")
ELIGIBLE, SKIPPED = {"web": []}, {"offline": ["ssm_offline"], "excluded": ["excluded_by_tag"]}
GROUPS = [
    {"name_prefix": "web", "count": 4, "platform": "linux", "patch_group": "web"},
    {"name_prefix": "offline", "count": 1, "faults": ["ssm-offline"], "patch_group": "web"},
    {"name_prefix": "excluded", "count": 1, "tags": {"cms-patching:exclude": "true"}, "patch_group": "web"},
]


class Unsafe(str):
    """A launch-time value: AWX writes it with the !unsafe tag so Ansible never evaluates it."""


class _Dumper(yaml.SafeDumper):  # pylint: disable=too-many-ancestors
    pass


_Dumper.add_representer(Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


@pytest.fixture(scope="module")
def fleet(sim_url):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    sim = Sim(sim_url)
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": f"runner-{uuid.uuid4().hex[:8]}"}, "groups": GROUPS})
    assert len(instances) == 6
    return sim, instances


def config_template(name):
    class Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
        pass
    Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load((ROOT / "awx" / "controller_config.yml").read_text(), Loader=Loader)  # nosec - a SafeLoader subclass
    return next(t for t in config["controller_templates"] if t["name"] == name)


def copy_project(dest):
    """AWX copies the project into the private data directory; the collections/ symlink comes along."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)


def private_data_dir(base, sim, instances, template_vars, launch_vars, meta_vars, tags, report_dir=None):
    pdd = base / "pdd"
    (pdd / "env").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    copy_project(pdd / "project")
    env = sim.env
    envvars = {
        # The AWS credential type injects the keys; AWS_ENDPOINT_URL (AWX_TASK_ENV in AWX) points boto3 at the simulator.
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "JOB_ID": str(meta_vars["awx_job_id"]), "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }  # and no region: AWX's AWS credential sets none
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    # /runner in the EE is this directory: the template's /runner/... report path maps into it.
    extravars = dict(template_vars, cms_patching_report_dir=str(report_dir or template_vars["cms_patching_report_dir"]).replace("/runner/", f"{pdd}/"))
    extravars.update({k: Unsafe(v) if isinstance(v, str) else v for k, v in {**meta_vars, **launch_vars}.items()})
    (pdd / "env" / "extravars").write_text(yaml.dump(extravars, Dumper=_Dumper))
    (pdd / "env" / "cmdline").write_text(f"-u root -t {tags}")
    write_awx_inventory_script(pdd / "inventory" / "hosts", instances)
    return pdd


def write_awx_inventory_script(path, instances):
    """The inventory as AWX writes it for a job: an executable script that prints JSON, AWX's host variables included."""
    data = {"all": {"children": ["ungrouped"]}, "ungrouped": {"hosts": [i["instance_id"] for i in instances]},
            "_meta": {"hostvars": {i["instance_id"]: {"instance_id": i["instance_id"], "region": i["region"],
                                                      "account_id": i["account_id"], "remote_tower_enabled": "true"}
                                   for i in instances}}}
    path.write_text("#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n" % json.dumps(data))
    path.chmod(0o700)


def run_like_awx(pdd, ident, playbook="playbooks/patch.yml"):
    # Nothing of the test's own environment leaks in: AWS settings come from env/envvars only.
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ.get("HOME", str(pdd)), "LANG": "C.UTF-8"}
    proc = subprocess.run([str(BIN / "ansible-runner"), "run", str(pdd), "-p", playbook, "--ident", ident],
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    artifacts = pdd / "artifacts" / ident
    events = [json.loads(p.read_text()) for p in sorted((artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-")[0]))]
    return proc, artifacts, events


def stats_of(events):
    stats = [e for e in events if e["event"] == "playbook_on_stats"]
    assert len(stats) == 1
    return stats[0]["event_data"]


def expected_reasons(name):
    prefix = name.rsplit("-", 1)[0]
    return {**ELIGIBLE, **SKIPPED}[prefix]


def test_discovery_job_through_ansible_runner(fleet, tmp_path):
    sim, instances = fleet
    template = config_template("cms-patching 1 discovery")
    run_id = f"awx-run-{uuid.uuid4().hex[:8]}"
    pdd = private_data_dir(tmp_path, sim, instances, template["extra_vars"],
                           launch_vars={"cms_patching_run_id": run_id, "discovery_patch_groups": ["web"]},
                           meta_vars={"awx_job_id": 4242, "awx_job_template_name": template["name"], "awx_job_launch_type": "manual"},
                           tags=template["job_tags"])
    sim.reset_stats()
    proc, artifacts, events = run_like_awx(pdd, "4242")
    stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else proc.stdout
    assert proc.returncode == 0, stdout[-4000:] + proc.stderr[-2000:]
    assert (artifacts / "rc").read_text().strip() == "0" and (artifacts / "status").read_text().strip() == "successful"

    ids = {i["instance_id"] for i in instances}
    stats = stats_of(events)
    # PLAY RECAP as AWX stores it per host: every instance ok, none failed or unreachable; an ineligible host is not
    # failed, and the report below gives its reasons.
    assert stats["failures"] == {} and stats["dark"] == {}
    # localhost is the settings-check play that runs before the phases.
    assert set(stats["ok"]) == ids | {"localhost"} and all(stats["ok"][h] > 0 for h in ids)
    # --tags discovery: besides the settings check (tagged always), the other plays run nothing but their
    # always-tagged argument checks.
    ran = [e["event_data"] for e in events if e["event"].startswith("runner_on_")]
    assert {d["play"] for d in ran if d["play"].startswith("Discovery")} and all(
        d["play"].startswith(("Discovery", "Check the run settings")) or d["task"].startswith("Validating arguments") for d in ran)
    # AWX's host summaries come from this event; they must agree with the per-host job events.
    for kind, event in (("ok", "runner_on_ok"), ("skipped", "runner_on_skipped")):
        counted = {}
        for e in events:
            if e["event"] == event:
                counted[e["event_data"]["host"]] = counted.get(e["event_data"]["host"], 0) + 1
        assert counted == stats[kind], kind

    # set_stats: what AWX hands to the next workflow node as extra vars.
    artifact = stats["artifact_data"]
    assert artifact["cms_patching_run_id"] == run_id
    assert artifact["cms_patching_summary"]["skipped"] == 2 and artifact["cms_patching_summary"]["discovered"] == 4

    report_dir = pdd / "cms-patching-reports" / run_id
    report = json.loads((report_dir / "report.json").read_text())
    assert str(report["awx_job_id"]) == "4242" and report["caller_arn"].startswith("arn:aws:")
    entries = {e["instance_id"]: e for e in report["instances"]}
    assert set(entries) == ids
    for name, iid in {i["name"]: i["instance_id"] for i in instances}.items():
        assert entries[iid]["discovery"]["reasons"] == expected_reasons(name), name
        assert entries[iid]["final_status"] == ("skipped" if expected_reasons(name) else "discovered"), name
    assert (report_dir / "report.csv").is_file() and (report_dir / "report.html").is_file()
    # Discovery changes nothing in AWS but the wave plan's tag on the eligible instances (one CreateTags per wave).
    assert set(sim.stats()["mutating"]) <= {"ec2:CreateTags"}
    assert sorted(i for w in report["plan"] for i in w["instance_ids"]) == sorted(i for i, e in entries.items() if e["discovery"]["eligible"])


def test_two_slices_of_the_sliced_template_share_a_run_and_write_apart(fleet, tmp_path):
    """Two AWX slices at once, each with its own part of the inventory and its own job id, and the template's
    cms_patching_slice / cms_patching_run_id Jinja evaluated per job. The discovery tag keeps it short: the slice
    and run-id handling is the same for every phase."""
    sim, instances = fleet
    template = config_template("cms-patching 3 patching (sliced)")
    parts = [instances[0::2], instances[1::2]]
    shared = tmp_path / "shared-reports"  # one report root for both (shared storage), so only the slice directories keep them apart
    results = {}

    def run_slice(number, part):
        job_id = 500 + number
        pdd = private_data_dir(tmp_path / f"slice{number}", sim, part, template["extra_vars"], launch_vars={},
                               meta_vars={"awx_job_id": job_id, "awx_workflow_job_id": 500, "awx_job_launch_type": "workflow"},
                               tags="discovery", report_dir=shared)
        results[number] = (pdd, *run_like_awx(pdd, str(job_id)))

    threads = [threading.Thread(target=run_slice, args=(n + 1, part)) for n, part in enumerate(parts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for number, part in enumerate(parts, start=1):
        _pdd, proc, _artifacts, events = results[number]
        assert proc.returncode == 0, proc.stdout[-4000:]
        ids = {i["instance_id"] for i in part}
        stats = stats_of(events)
        assert stats["failures"] == {} and set(stats["ok"]) == ids | {"localhost"}
        assert stats["artifact_data"]["cms_patching_run_id"] == "awx-500"
        run_dir = shared / "awx-500"
        report = json.loads((run_dir / f"slice-{500 + number}" / "report.json").read_text())
        assert {e["instance_id"] for e in report["instances"]} == ids
        assert not (run_dir / "report.json").exists()  # a slice writes only its own directory
    assert sorted(p.name for p in (shared / "awx-500").iterdir()) == ["slice-501", "slice-502"]


def test_without_jinja_in_extra_vars_a_sliced_job_stops_before_any_aws_call(fleet, sim, tmp_path):
    """Under ALLOW_JINJA_IN_EXTRA_VARS=never AWX tags even the template's own extra vars !unsafe: the slice and run
    id stay literal Jinja, and the run-id check must stop the job before it touches AWS (docs/awx.md)."""
    _fleet_sim, instances = fleet
    template = config_template("cms-patching 3 patching (sliced)")
    literal = {k: Unsafe(v) for k, v in template["extra_vars"].items()}
    pdd = private_data_dir(tmp_path, sim, instances[:1], literal, launch_vars={},
                           meta_vars={"awx_job_id": 601, "awx_workflow_job_id": 600}, tags=template["job_tags"])
    sim.reset_stats()
    proc, _artifacts, events = run_like_awx(pdd, "601")
    assert proc.returncode != 0
    failed = [e["event_data"]["task"] for e in events if e["event"] == "runner_on_failed"]
    assert failed == ["Check the run id before any change (the rule every module applies)"], failed
    assert not sim.stats()["calls"]
