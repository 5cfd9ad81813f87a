"""A patch night outlives its assumed-role sessions: the results must not change.

Two identical two-account fleets run the site playbook side by side, one with sessions of AWS's default length and one
whose sessions the simulator ends after STS_SESSION_S seconds (sts_session_s), shorter than every SSM command
(command_s) and every AMI wait (image_pending_s). The instances of the second account are reached only through
AssumeRole, in the inventory and in every module. Per instance (by name) both runs must end alike: healthy instances
patched with patch outcome success, a patch-fail instance rolled back.

botocore refreshes assume-role credentials 10 to 15 minutes before they expire; for sessions of seconds this test
shortens those windows to 5 s and 4 s (tests/integration/short_sessions/sitecustomize.py, on PYTHONPATH for these
runs only), so an 8-s session is renewed about 3 s after it starts, with 4 to 5 s to spare however loaded the machine.
"""

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import FAST, FAST_VARS, read_report, run_module, run_playbook, write_fleet_inventory

OTHER_ACCOUNT = "222222222222"
STS_SESSION_S = 8
# Every command and every image wait lasts longer than a session, so sessions end (and are renewed) within them.
DURATIONS = dict(FAST, command_s=11, image_pending_s=10)
GROUPS = [
    {"count": 2, "name_prefix": "ok"},
    {"count": 1, "name_prefix": "patchfail", "faults": ["patch-fail"]},
    {"count": 2, "name_prefix": "okacct", "account_id": OTHER_ACCOUNT},
    {"count": 1, "name_prefix": "patchfailacct", "account_id": OTHER_ACCOUNT, "faults": ["patch-fail"]},
]
SHORT_SESSIONS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "short_sessions")


def site_run(sim, workdir, label, sts_session_s):
    tag = f"sts-{label}-{uuid.uuid4().hex[:6]}"
    sim.configure(**DURATIONS)
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": GROUPS})
    sim.configure(sts_session_s=sts_session_s)  # after seeding: only the tool's own sessions are short
    sim.reset_stats()
    env = sim.env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SHORT_SESSIONS_PATH, env.get("PYTHONPATH")]))
    (workdir / label).mkdir()
    inventory = write_fleet_inventory(workdir / label, tag, accounts=[OTHER_ACCOUNT])
    run_id = f"sts-{label}-{uuid.uuid4().hex[:6]}"
    proc = run_playbook("playbooks/patch.yml", env, inventory=inventory, extra_vars=dict(
        FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(workdir / "reports"), cms_patching_serial=["100%"],
        cms_patching_max_fail_percentage=100, patching_execution_timeout=120, patching_command_timeout=120))
    (workdir / f"{label}.txt").write_text(proc.stdout + proc.stderr)
    _report, entries = read_report(workdir / "reports", run_id)
    return {"instances": instances, "proc": proc, "entries": entries, "stats": sim.stats()}


def outcomes(run):
    names = {i["instance_id"]: i["name"] for i in run["instances"]}
    return {names[iid]: (e["final_status"], e.get("reason"), (e.get("patch") or {}).get("outcome"))
            for iid, e in run["entries"].items()}


@pytest.fixture(scope="module")
def runs(sim_url, tmp_path_factory):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    work = tmp_path_factory.mktemp("sts")
    with ThreadPoolExecutor(2) as pool:
        long_run, short_run = pool.map(lambda args: site_run(Sim(sim_url), work, *args), [("long", 0), ("short", STS_SESSION_S)])
    return long_run, short_run


def test_short_sessions_give_the_same_results_as_long_ones(runs):
    long_run, short_run = runs
    expected = {"ok-001": ("patched", None, "success"), "ok-002": ("patched", None, "success"),
                "okacct-001": ("patched", None, "success"), "okacct-002": ("patched", None, "success"),
                "patchfail-001": ("rolled_back", "patch_failed", "failed"), "patchfailacct-001": ("rolled_back", "patch_failed", "failed")}
    assert outcomes(short_run) == expected, short_run["proc"].stdout[-3000:]
    assert outcomes(long_run) == expected, long_run["proc"].stdout[-3000:]
    assert short_run["proc"].returncode == long_run["proc"].returncode == 2  # the rolled-back hosts fail, none unreachable


def test_sessions_were_really_renewed_during_the_run(runs):
    long_run, short_run = runs
    # Long sessions: about one AssumeRole per module run for the other account. Short ones: renewed within module runs.
    assert short_run["stats"]["calls"]["sts:AssumeRole"] > long_run["stats"]["calls"]["sts:AssumeRole"]


def test_a_refused_assume_role_is_one_line_naming_the_role(sim):
    env = dict(sim.env, AWS_ACCESS_KEY_ID="AKIAINVALID" + uuid.uuid4().hex[:9].upper())  # keys STS does not know
    role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/cms-patching"
    result = run_module("ami_backup_info", {"instance_ids": ["i-0123456789abcdef0"], "role_arn": role}, env)
    assert result["failed"] and result["rc"] == 1
    assert result["msg"] == f"sts:AssumeRole failed for {role}: InvalidClientTokenId: The security token included in the request is invalid."
    assert "Traceback" not in result["stderr"]


def test_one_module_run_renews_its_session(sim):
    """An install that lasts several sessions in the other account: botocore renews the module's session before it ends."""
    sim.configure(**DURATIONS)
    ids = [i["instance_id"] for i in sim.seed({"region": "us-east-1", "tags": {"cms-test": f"sts-{uuid.uuid4().hex[:6]}"},
                                               "groups": [{"count": 2, "name_prefix": "acct", "account_id": OTHER_ACCOUNT}]})]
    sim.configure(sts_session_s=STS_SESSION_S)
    sim.reset_stats()
    env = sim.env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SHORT_SESSIONS_PATH, env.get("PYTHONPATH")]))
    result = run_module("ssm_patch_run", {"instance_ids": ids, "role_arn": f"arn:aws:iam::{OTHER_ACCOUNT}:role/cms-patching",
                                          "external_id": "ext-42", "role_session_name": "night-run", "run_id": "sts-module",
                                          "poll_interval": 0.3, "execution_timeout": 120}, env)
    assert result["rc"] == 0, result.get("msg")
    assert {r["instance_id"]: r["outcome"] for r in result["results"]} == {i: "success" for i in ids}
    assert sim.stats()["calls"]["sts:AssumeRole"] >= 2  # the first session ended during the run and was renewed
