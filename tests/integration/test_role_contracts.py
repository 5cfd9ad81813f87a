"""Role contracts, run as Ansible runs them: run_context's entry points check their arguments, its lock step publishes
who holds what as outputs, and the backup role decides about its locks from a variable, never from the run's tags."""

import json
import uuid

import pytest
import yaml

from helpers import FAST, FAST_VARS, run_module, run_playbook, write_fleet_inventory

HEAD = {"gather_facts": False, "connection": "local", "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}}


def playbook(tmp_path, hosts, tasks=None, roles=None):
    play = dict(HEAD, name="Role contract", hosts=hosts)
    if tasks:
        play["tasks"] = tasks
    if roles:
        play["roles"] = roles
    path = tmp_path / f"play-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


def include(entry, **role_vars):
    return {"name": f"Include run_context {entry}", "ansible.builtin.include_role": {"name": "cms.patching.run_context", "tasks_from": entry},
            "run_once": True, "vars": role_vars}


@pytest.mark.parametrize("entry, role_vars, message", [
    ("lock", {"run_context_lock_hosts": ["localhost"], "run_context_lock_phase": "wave"},
     "value of run_context_lock_phase must be one of: backup, patching, got: wave"),
    ("lock", {"run_context_lock_phase": "backup"}, "missing required arguments: run_context_lock_hosts"),
    ("unlock", {}, "missing required arguments: run_context_unlock_hosts"),
    ("record", {"run_context_instances": "not a list of entries"}, "missing required arguments: run_context_phase"),
])
def test_run_context_entry_points_refuse_bad_arguments_before_any_call(sim, tmp_path, entry, role_vars, message):
    path = playbook(tmp_path, "localhost", tasks=[include(entry, **role_vars)])
    proc = run_playbook(path, sim.env, extra_vars={"cms_patching_report_dir": str(tmp_path / "reports")}, timeout=120)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert message in proc.stdout, proc.stdout[-2000:]
    assert not sim.stats()["calls"], sim.stats()  # the check comes before the entry point's first task


def test_settings_entry_point_is_validated_against_its_spec(sim, tmp_path):
    # The spec applies only when the entry point is named as in argument_specs.yml (tasks_from: settings).
    proc = run_playbook("playbooks/patch.yml", sim.env, extra_vars={"cms_patching_run_id": "contract"}, tags="never-a-phase",
                        timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Validating arguments against arg spec 'settings'" in proc.stdout, proc.stdout[-2000:]


def fleet(sim, tmp_path, count):
    sim.configure(**FAST)
    tag = f"contract-{uuid.uuid4().hex[:8]}"
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": [{"count": count}]})
    return [i["instance_id"] for i in instances], write_fleet_inventory(tmp_path, tag)


def held_locks(sim, ids):
    names = [f"/cms-patching/locks/{i}" for i in ids]
    return {p["Name"].rsplit("/", 1)[1]: json.loads(p["Value"])["run_id"] for p in sim.client("ssm").get_parameters(Names=names)["Parameters"]}


def test_the_lock_step_publishes_which_hosts_this_run_holds_and_which_another_run_holds(sim, tmp_path):
    ids, inventory = fleet(sim, tmp_path, 3)
    other = run_module("ssm_instance_lock", {"instance_ids": [ids[0]], "run_id": "other-run", "region": "us-east-1"}, sim.env)
    assert other["rc"] == 0 and other["acquired"] == [ids[0]], other
    out = tmp_path / "outputs.json"
    path = playbook(tmp_path, "all", tasks=[
        {"name": "Fix the run id", "ansible.builtin.include_role": {"name": "cms.patching.run_context"}, "run_once": True},
        include("lock", run_context_lock_hosts="{{ ansible_play_hosts }}", run_context_lock_phase="backup"),
        {"name": "Keep the outputs", "ansible.builtin.copy": {"dest": str(out), "mode": "0600", "content": (
            "{{ {'held': run_context_locked_hosts | sort, 'other': run_context_locked_by_other_run,"
            " 'skipped': groups['cms_patching_skipped'] | default([])} | to_json }}")},
         "delegate_to": "localhost", "run_once": True},
    ])
    run_id = f"contract-{uuid.uuid4().hex[:8]}"
    run_vars = {"cms_patching_run_id": run_id, "cms_patching_report_dir": str(tmp_path / "reports")}
    proc = run_playbook(path, sim.env, inventory=inventory, extra_vars=run_vars)
    assert proc.returncode == 0, proc.stdout[-3000:]
    outputs = json.loads(out.read_text())
    assert outputs == {"held": sorted(ids[1:]), "other": [ids[0]], "skipped": [ids[0]]}
    assert held_locks(sim, ids) == {ids[0]: "other-run", ids[1]: run_id, ids[2]: run_id}

    # The unlock entry point, fed with that output, gives back exactly this run's locks.
    path = playbook(tmp_path, "all", tasks=[
        {"name": "Fix the run id", "ansible.builtin.include_role": {"name": "cms.patching.run_context"}, "run_once": True},
        include("unlock", run_context_unlock_hosts="{{ ansible_play_hosts }}"),
    ])
    proc = run_playbook(path, sim.env, inventory=inventory, extra_vars=run_vars)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert held_locks(sim, ids) == {ids[0]: "other-run"}


@pytest.mark.parametrize("keep", [None, True])
def test_the_backup_role_keeps_its_locks_only_when_told(sim, tmp_path, keep):
    # Applied alone, as the molecule scenarios and other playbooks apply it: no patching play follows, so the locks
    # go back, whatever the run's tags say. The site playbook passes backup_keep_locks when its patching play runs.
    ids, inventory = fleet(sim, tmp_path, 2)
    role = {"role": "cms.patching.backup"}
    if keep is not None:
        role["backup_keep_locks"] = keep
    run_id = f"contract-{uuid.uuid4().hex[:8]}"
    proc = run_playbook(playbook(tmp_path, "all", roles=[role]), sim.env, inventory=inventory,
                        extra_vars=dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(tmp_path / "reports")))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert held_locks(sim, ids) == ({i: run_id for i in ids} if keep else {})
