"""AWX / AAP readiness without AWX or Galaxy: the job templates as code (awx/controller_config.yml, in the
variable format of infra.aap_configuration) and the execution environment (execution-environment.yml).

The configuration checks stand in for applying it: every object it names exists, every playbook and tag it runs
exists, every survey variable is an argument of a role that the template's plays run (or a variable its playbook
reads), and the workflow runs discovery -> backup -> patching with patching after backup whatever the result.
The EE checks run `ansible-builder create` with no network and install the collection from the build context.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from ansible_collections.cms.patching.plugins.module_utils import run_id as run_ids

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "awx" / "controller_config.yml"
BIN = Path(sys.executable).parent
PHASES = ("discovery", "backup", "patching")
OBJECT_TYPES = ("controller_execution_environments", "controller_credentials", "controller_projects", "controller_inventories",
                "controller_inventory_sources", "controller_templates", "controller_workflows")
SURVEY_TYPES = {  # survey question type -> argument-spec types that accept its answer
    "text": {"str", "raw", "path"}, "textarea": {"str", "raw"}, "password": {"str", "raw"},
    "integer": {"int", "float", "raw"}, "float": {"float", "raw"},
    "multiplechoice": {"str", "raw"}, "multiselect": {"list", "raw"},
}


class Unsafe(str):
    """A value tagged !unsafe: Jinja that AWX stores as written and each job evaluates."""


class _Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def load_yaml(path):
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)  # nosec - a SafeLoader subclass


@pytest.fixture(scope="module")
def config():
    return load_yaml(CONFIG)


def by_name(config, kind):
    return {item["name"]: item for item in config[kind]}


def questions(item):
    return item.get("survey_spec", {}).get("spec", []) if item.get("survey_enabled") else []


# --- what a template runs: plays (by tag) -> roles (with dependencies and included roles) -> argument specs ---

def role_names_in(text):
    return {name for name in re.findall(r"cms\.patching\.(\w+)", text) if (ROOT / "roles" / name).is_dir()}


def roles_of_play(play):
    roles = set()
    for entry in play.get("roles", []):
        roles |= role_names_in(entry if isinstance(entry, str) else entry.get("role", entry.get("name", "")))
    roles |= role_names_in(yaml.safe_dump(play.get("tasks", []) + play.get("pre_tasks", []) + play.get("post_tasks", [])))
    return roles


def role_closure(roles):
    """The roles plus their meta dependencies and the roles their tasks import or include."""
    seen, todo = set(), list(roles)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        role_dir = ROOT / "roles" / name
        texts = [p.read_text(encoding="utf-8") for p in sorted((role_dir / "tasks").glob("*.yml"))]
        texts.append((role_dir / "meta" / "main.yml").read_text(encoding="utf-8"))
        todo.extend(role_names_in("\n".join(texts)) - seen)
    return seen


def plays_run(playbook, job_tags):
    """The plays of `playbook` that `--tags job_tags` runs (all plays without tags)."""
    wanted = {t.strip() for t in (job_tags or "").split(",") if t.strip()}
    plays = load_yaml(ROOT / playbook)
    if not wanted:
        return plays
    return [p for p in plays if wanted & (set(as_list(p.get("tags"))) | {"always"})]


def as_list(value):
    return [] if value is None else value if isinstance(value, list) else [value]


def argument_options(roles):
    """variable -> list of its option specs, over every entry point of every role."""
    options = {}
    for name in roles:
        specs = load_yaml(ROOT / "roles" / name / "meta" / "argument_specs.yml")["argument_specs"]
        for entry in specs.values():
            for var, spec in (entry.get("options") or {}).items():
                options.setdefault(var, []).append(spec)
    return options


def playbook_variables(playbook):
    """Variables the playbook itself reads in Jinja (hosts, serial, max_fail_percentage, ...)."""
    text = (ROOT / playbook).read_text(encoding="utf-8")
    return {name for expr in re.findall(r"{{(.*?)}}", text) for name in re.findall(r"\b(cms_patching_\w+)\b", expr)}


def accepted_variables(playbook, job_tags):
    roles = role_closure(set().union(*[roles_of_play(p) for p in plays_run(playbook, job_tags)]))
    return argument_options(roles), playbook_variables(playbook), roles


# --- the configuration ---

def test_every_object_type_is_there_with_unique_names(config):
    for kind in OBJECT_TYPES:
        names = [item["name"] for item in config[kind]]
        assert names and len(names) == len(set(names)), kind


def test_references_between_objects_resolve(config):
    ees, creds = by_name(config, "controller_execution_environments"), by_name(config, "controller_credentials")
    projects, inventories = by_name(config, "controller_projects"), by_name(config, "controller_inventories")
    templates = by_name(config, "controller_templates")
    for project in projects.values():
        assert project["default_environment"] in ees and project["scm_type"] == "git" and project["scm_url"]
    for source in config["controller_inventory_sources"]:
        assert source["inventory"] in inventories and source["source_project"] in projects
        assert source["credential"] in creds and source["execution_environment"] in ees
    for template in templates.values():
        assert template["project"] in projects and template["inventory"] in inventories, template["name"]
        assert template["execution_environment"] in ees and template["credentials"], template["name"]
        assert set(template["credentials"]) <= set(creds), template["name"]
    for workflow in config["controller_workflows"]:
        for node in workflow["simplified_workflow_nodes"]:
            if "approval_node" in node:  # infra.aap_configuration's approval node: a name and a timeout, no template
                assert set(node["approval_node"]) <= {"name", "description", "timeout"}, (workflow["name"], node["identifier"])
                continue
            assert node["unified_job_template"] in templates, (workflow["name"], node["identifier"])


def test_inventory_source_is_the_fleet_plugin_from_the_project(config):
    for source in config["controller_inventory_sources"]:
        assert source["source"] == "scm" and source["update_on_launch"] is True and source["overwrite"] is True
        assert load_yaml(ROOT / source["source_path"])["plugin"] == "cms.patching.ec2_fleet"


def test_aws_comes_from_the_aws_credential_type_and_no_secret_is_written(config):
    aws = {c["name"] for c in config["controller_credentials"] if c["credential_type"] == "Amazon Web Services"}
    assert aws
    for cred in config["controller_credentials"]:
        for key, value in cred["inputs"].items():
            # A reference to a (vaulted) variable, evaluated when the file is applied; never a literal key.
            assert re.fullmatch(r"{{ \w+ }}", value) and not isinstance(value, Unsafe), (cred["name"], key)
    for item in config["controller_templates"] + config["controller_inventory_sources"]:
        assert aws & set(as_list(item.get("credentials", item.get("credential")))), item["name"]


def test_jinja_for_the_jobs_is_kept_from_the_apply_run(config):
    """Jinja outside credential inputs is for AWX's jobs: it must be !unsafe or applying the file would evaluate it."""
    def strings(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    for kind in OBJECT_TYPES:
        if kind == "controller_credentials":
            continue
        for value in strings(config[kind]):
            assert "{{" not in value or isinstance(value, Unsafe), (kind, value)


def test_templates_run_existing_playbooks_and_tags(config):
    patch_tags = {t for play in load_yaml(ROOT / "playbooks/patch.yml") for t in as_list(play.get("tags"))}
    assert set(PHASES) <= patch_tags
    runs = {}
    for template in config["controller_templates"]:
        assert template["job_type"] in ("run", "check"), template["name"]
        assert (ROOT / template["playbook"]).is_file(), template["playbook"]
        tags = [t.strip() for t in template.get("job_tags", "").split(",") if t.strip()]
        if tags:
            assert template["playbook"] == "playbooks/patch.yml" and set(tags) <= patch_tags, template["name"]
        runs.setdefault(template["playbook"], set()).add(",".join(tags))
    # One template per phase, a full run (no tags), rollback and cleanup.
    assert set(PHASES) | {""} <= runs["playbooks/patch.yml"]
    assert "playbooks/rollback.yml" in runs and "playbooks/cleanup.yml" in runs


def test_survey_questions_are_well_formed(config):
    items = config["controller_templates"] + config["controller_workflows"]
    for item in items:
        spec = item.get("survey_spec", {})
        assert item.get("survey_enabled") is True and {"name", "description", "spec"} <= set(spec), item["name"]
        variables = [q["variable"] for q in spec["spec"]]
        assert len(variables) == len(set(variables)), item["name"]
        for q in spec["spec"]:
            where = (item["name"], q["variable"])
            assert {"question_name", "question_description", "variable", "type", "required"} <= set(q), where
            assert q["type"] in SURVEY_TYPES and isinstance(q["required"], bool), where
            if q["type"] in ("multiplechoice", "multiselect"):
                assert q["choices"] and all(isinstance(c, str) for c in q["choices"]), where
                chosen = [c for c in str(q.get("default", "")).split("\n") if c]
                assert set(chosen) <= set(q["choices"]), where
            if q["type"] in ("integer", "float"):
                assert q["min"] <= q["default"] <= q["max"], where
            if q["type"] in ("integer", "float", "multiplechoice"):
                # AWX may send blank or null for an unanswered optional question: these types must be answered.
                assert q["required"] and q.get("default") not in (None, ""), where
            if q["type"] == "text" and not q["required"]:
                assert q["min"] == 0 and len(q["default"]) <= q["max"], where


def test_every_survey_and_template_variable_is_an_argument_of_what_runs(config):
    """A survey variable must be an argument of a role (any entry point) that the template's plays run, or a variable
    the playbook itself reads; its answer must fit the argument's type and choices."""
    for template in config["controller_templates"]:
        options, play_vars, roles = accepted_variables(template["playbook"], template.get("job_tags"))
        assert roles or play_vars, template["name"]  # playbooks/stop.yml runs no role: only its own variables
        for var in template.get("extra_vars", {}):
            assert var in options or var in play_vars, (template["name"], var)
        for q in questions(template):
            var = q["variable"]
            assert var in options or var in play_vars, f"{template['name']}: {var} is not an argument of {sorted(roles)}"
            for spec in options.get(var, []):
                assert spec.get("type", "str") in SURVEY_TYPES[q["type"]], (template["name"], var, spec.get("type"))
                if spec.get("choices") and q["type"] == "multiplechoice":
                    assert set(q["choices"]) <= set(spec["choices"]), (template["name"], var)


def test_workflow_survey_variables_reach_a_node_that_uses_them(config):
    templates = by_name(config, "controller_templates")
    for workflow in config["controller_workflows"]:
        accepted = set()
        for node in job_nodes(workflow):
            template = templates[node["unified_job_template"]]
            options, play_vars, _roles = accepted_variables(template["playbook"], template.get("job_tags"))
            accepted |= set(options) | play_vars
        for q in questions(workflow):
            assert q["variable"] in accepted, (workflow["name"], q["variable"])


def test_surveys_never_shadow_values_the_templates_set(config):
    """AWX applies survey defaults over a template's extra_vars, and workflow variables over everything, including
    the run id that earlier nodes publish with set_stats."""
    templates = by_name(config, "controller_templates")
    for template in templates.values():
        assert not {q["variable"] for q in questions(template)} & set(template.get("extra_vars", {})), template["name"]
    for workflow in config["controller_workflows"]:
        asked = {q["variable"] for q in questions(workflow)}
        assert "cms_patching_run_id" not in asked and not workflow.get("extra_vars"), workflow["name"]
        for node in job_nodes(workflow):
            template = templates[node["unified_job_template"]]
            assert not asked & set(template.get("extra_vars", {})), workflow["name"]


def test_rollback_needs_an_explicit_instance_choice(config):
    rollback = [t for t in config["controller_templates"] if t["playbook"] == "playbooks/rollback.yml"]
    for template in rollback:
        hosts = [q for q in questions(template) if q["variable"] == "cms_patching_hosts"]
        assert hosts and hosts[0]["required"] and hosts[0]["min"] > 0 and not template.get("ask_limit_on_launch")
    assert "cms_patching_hosts" in playbook_variables("playbooks/rollback.yml")


def job_nodes(workflow):
    """The nodes that run a job template (not approval nodes)."""
    return [n for n in workflow["simplified_workflow_nodes"] if "approval_node" not in n]


def workflow_graph(workflow):
    nodes = {n["identifier"]: n for n in workflow["simplified_workflow_nodes"]}
    assert len(nodes) == len(workflow["simplified_workflow_nodes"])
    parents = {i: set() for i in nodes}
    for ident, node in nodes.items():
        for kind in ("success_nodes", "failure_nodes", "always_nodes"):
            for child in node.get(kind, []):
                assert child in nodes, (workflow["name"], child)
                parents[child].add(ident)
    return nodes, parents


def test_workflow_runs_the_phases_in_order_and_patching_after_any_backup_result(config):
    templates = by_name(config, "controller_templates")
    for workflow in config["controller_workflows"]:
        if any("approval_node" in n for n in workflow["simplified_workflow_nodes"]):
            continue  # the canary workflow: test_canary_workflow_asks_a_human_between_the_canary_and_the_rest
        nodes, parents = workflow_graph(workflow)
        phase = {i: templates[n["unified_job_template"]].get("job_tags") for i, n in nodes.items()}
        assert sorted(phase.values()) == sorted(PHASES), workflow["name"]
        by_phase = {tags: ident for ident, tags in phase.items()}
        discovery, backup, patching = (nodes[by_phase[p]] for p in PHASES)
        assert [i for i, p in parents.items() if not p] == [discovery["identifier"]], workflow["name"]
        # discovery -> backup only when discovery worked (a failed scan means AWS itself is unreachable).
        assert discovery.get("success_nodes") == [backup["identifier"]] and not discovery.get("always_nodes")
        # backup -> patching on ANY result: the backup gate protects each instance, one failed AMI must not stop the fleet.
        assert backup.get("always_nodes") == [patching["identifier"]], workflow["name"]
        assert not backup.get("success_nodes") and not backup.get("failure_nodes"), workflow["name"]
        assert parents[patching["identifier"]] == {backup["identifier"]} and not patching.get("all_parents_must_converge")
        assert not any(patching.get(k) for k in ("success_nodes", "failure_nodes", "always_nodes")), workflow["name"]


def test_canary_workflow_asks_a_human_between_the_canary_and_the_rest(config):
    """discovery -> backup (any result) -> canary (wave 1) -> approval with a timeout -> the rest of the same run; the
    approval's failure path (denied or timed out) records the rest not_patched; nothing patches without the approval."""
    templates = by_name(config, "controller_templates")
    workflow = by_name(config, "controller_workflows")["cms-patching workflow (canary approval)"]
    nodes, parents = workflow_graph(workflow)
    approvals = [i for i, n in nodes.items() if "approval_node" in n]
    assert len(approvals) == 1
    approval = nodes[approvals[0]]
    assert approval["approval_node"]["name"] and approval["approval_node"]["timeout"] > 0
    job = {i: templates[n["unified_job_template"]] for i, n in nodes.items() if "approval_node" not in n}
    tags = {i: t.get("job_tags") for i, t in job.items()}
    discovery, backup = (next(i for i, t in tags.items() if t == phase) for phase in ("discovery", "backup"))
    assert [i for i, p in parents.items() if not p] == [discovery] and nodes[discovery]["success_nodes"] == [backup]
    canary = nodes[backup]["always_nodes"][0]
    assert tags[canary] == "patching" and job[canary]["extra_vars"]["cms_patching_waves"] == [1]
    # Only the canary's success asks for the approval; the approval alone leads to the rest or to the record of no approval.
    assert nodes[canary].get("success_nodes") == [approval["identifier"]] and not nodes[canary].get("failure_nodes")
    assert not nodes[canary].get("always_nodes") and parents[approval["identifier"]] == {canary}
    rest, refused = approval["success_nodes"], approval["failure_nodes"]
    assert len(rest) == len(refused) == 1 and not approval.get("always_nodes")
    assert tags[rest[0]] == "patching" and "cms_patching_waves" not in job[rest[0]].get("extra_vars", {})
    assert "cms_patching_hold" not in job[rest[0]].get("extra_vars", {})
    hold = job[refused[0]]["extra_vars"]
    assert tags[refused[0]] == "patching" and hold["cms_patching_hold"] == "approval_not_given"
    # The failure path tells a timeout from a denial by the node's timeout: the two must agree.
    assert hold["cms_patching_approval_timeout"] == approval["approval_node"]["timeout"]
    options, _play_vars, _roles = accepted_variables("playbooks/patch.yml", "patching")
    for var in ("cms_patching_waves", "cms_patching_hold", "cms_patching_approval_timeout", "cms_patching_canary_ended_at"):
        assert var in options, var
    assert "approval_not_given" in options["cms_patching_hold"][0]["choices"]
    # The canary job publishes the time its wave ended (set_stats), which reaches the failure path as a variable.
    assert "cms_patching_canary_ended_at" in (ROOT / "roles" / "patching" / "tasks" / "main.yml").read_text(encoding="utf-8")


def test_the_stop_switch_has_a_job_template(config):
    stop = [t for t in config["controller_templates"] if t["playbook"] == "playbooks/stop.yml"]
    assert len(stop) == 1 and {q["variable"] for q in questions(stop[0])} == {"cms_patching_stop"}
    assert {"cms_patching_stop", "cms_patching_stop_parameter"} <= playbook_variables("playbooks/stop.yml")


# --- job slicing ---

def sliced(template):
    return template.get("job_slice_count", 1) > 1 or template.get("ask_job_slice_count_on_launch", False)


def render(value, variables):
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(value).render(**variables)  # nosec - test data


def test_only_sliced_templates_slice_and_each_slice_gets_its_own_report_but_one_run(config):
    templates = config["controller_templates"]
    sliced_templates = [t for t in templates if sliced(t)]
    assert sliced_templates
    for template in templates:
        assert ("cms_patching_slice" in template.get("extra_vars", {})) == sliced(template), template["name"]
    for template in sliced_templates:
        ev = template["extra_vars"]
        assert isinstance(ev["cms_patching_slice"], Unsafe) and isinstance(ev["cms_patching_run_id"], Unsafe)
        # Two slices of one launch: AWX gives each its own job id and both the id of the workflow job it creates.
        slices = [{"awx_job_id": 101, "awx_workflow_job_id": 100}, {"awx_job_id": 102, "awx_workflow_job_id": 100}]
        rendered = [{k: render(ev[k], s) for k in ("cms_patching_slice", "cms_patching_run_id")} for s in slices]
        assert rendered[0]["cms_patching_slice"] != rendered[1]["cms_patching_slice"]
        assert rendered[0]["cms_patching_run_id"] == rendered[1]["cms_patching_run_id"] == "awx-100"
        assert all(run_ids.is_valid(r["cms_patching_slice"]) for r in rendered)
        # Launched with one slice, AWX makes a plain job: still a valid run id.
        assert render(ev["cms_patching_run_id"], {"awx_job_id": 7}) == "awx-7"


def test_the_run_id_question_allows_exactly_what_the_collection_accepts(config):
    asked = [q for item in config["controller_templates"] + config["controller_workflows"] for q in questions(item)
             if q["variable"] == "cms_patching_run_id"]
    assert asked
    assert all(q["max"] == run_ids.MAX_LENGTH for q in asked), asked


# --- the execution environment ---

def offline_env(**extra):
    """No route out: any download attempt fails instead of silently reaching the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="", PIP_NO_INDEX="1", **extra)
    return env


def run(cmd, cwd, env, timeout=120):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_execution_environment_definition_is_valid_v3():
    from ansible_builder.user_definition import UserDefinition  # pylint: disable=import-outside-toplevel
    from bindep.depends import Depends  # pylint: disable=import-outside-toplevel

    definition = UserDefinition(str(ROOT / "execution-environment.yml"))
    definition.validate()
    deps = definition.raw["dependencies"]
    assert definition.version == 3
    assert (deps["galaxy"], deps["python"], deps["system"]) == ("requirements.yml", "requirements.txt", "bindep.txt")
    assert "amazon.aws" in {c["name"] for c in load_yaml(ROOT / "requirements.yml")["collections"]}
    assert {"boto3", "botocore"} <= {re.split(r"[<>=!~ ;\[]", line)[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
                                     if line.strip() and not line.startswith("#")}
    assert Depends((ROOT / "bindep.txt").read_text()).active_rules(["platform:rpm", "platform:redhat"])
    assert any(line.split("#")[0].strip() == "ansible-builder" for line in (ROOT / "requirements-dev.txt").read_text().splitlines())


def test_builder_creates_the_context_offline_and_the_collection_installs_from_it(tmp_path):
    context = tmp_path / "context"
    run([str(BIN / "ansible-builder"), "create", "-f", str(ROOT / "execution-environment.yml"), "-c", str(context),
         "--output-filename", "Containerfile"], cwd=tmp_path, env=offline_env())
    build = context / "_build"
    containerfile = (context / "Containerfile").read_text()
    assert (build / "requirements.yml").read_text() == (ROOT / "requirements.yml").read_text()
    assert (build / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    assert (build / "bindep.txt").read_text() == (ROOT / "bindep.txt").read_text()
    assert 'PYCMD="/usr/bin/python3.11"' in containerfile and "ansible-core>=2.19" in containerfile
    assert "ansible-galaxy collection install --offline /build/cms_patching" in containerfile
    collection = build / "cms_patching"
    for role in ("discovery", "backup", "patching", "run_context"):
        assert (collection / "roles" / role / "meta" / "argument_specs.yml").is_file(), role
    assert {p.name for p in (ROOT / "plugins" / "modules").glob("*.py")} == {p.name for p in (collection / "plugins" / "modules").glob("*.py")}
    assert not any((collection / name).exists() for name in ("tests", ".venv", "reports", "collections", ".git"))

    # What the EE build does next, offline: install the collection next to amazon.aws, then introspect the
    # collections for their Python and system requirements.
    colls = tmp_path / "collections"
    (colls / "ansible_collections" / "amazon").mkdir(parents=True)
    amazon_aws = importlib.util.find_spec("ansible_collections.amazon.aws").submodule_search_locations[0]
    (colls / "ansible_collections" / "amazon" / "aws").symlink_to(amazon_aws)
    env = offline_env(ANSIBLE_GALAXY_DISABLE_GPG_VERIFY="1", ANSIBLE_COLLECTIONS_PATH=str(colls), HOME=str(tmp_path))
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", str(collection), "--collections-path", str(colls)],
        cwd=tmp_path, env=env)
    installed = colls / "ansible_collections" / "cms" / "patching"
    assert (installed / "MANIFEST.json").is_file() and not list(installed.rglob("__pycache__"))
    doc = run([str(BIN / "ansible-doc"), "-t", "module", "cms.patching.ec2_patch_scan"], cwd=tmp_path, env=env)
    assert str(installed) in doc.stdout
    run([str(BIN / "ansible-doc"), "-t", "inventory", "cms.patching.ec2_fleet"], cwd=tmp_path, env=env)
    intro = run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect", "--user-pip", str(build / "requirements.txt"),
                 "--user-bindep", str(build / "bindep.txt"), str(colls)], cwd=tmp_path, env=env)
    found = yaml.safe_load(intro.stdout)
    assert any(r.startswith("boto3") and r.endswith("from collection cms.patching") for r in found["python"])
    assert any(r.startswith("ca-certificates") and r.endswith("from collection cms.patching") for r in found["system"])
