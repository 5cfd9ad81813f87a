# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ssm_command_run: shell commands and service restarts per instance, through the batched runner.

Instances with the same (document, commands) share a request, so each group is one SendCommand per 50 ids.
"""

from __future__ import annotations

import re
import time

from ansible_collections.cms.patching.plugins.module_utils.errors import (
    AwsErrorHandler, PatchingError, no_success_message, validate_instance_ids,
)
from ansible_collections.cms.patching.plugins.module_utils import readers
from ansible_collections.cms.patching.plugins.module_utils.models import RunConfig, summarize
from ansible_collections.cms.patching.plugins.module_utils.root_restore import unknown_instances
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import (
    request_options, resolve_run_id, validate_runner_options, validate_step,
)
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import CommandRequest, SsmRunner

DOCUMENTS = {"linux": "AWS-RunShellScript", "windows": "AWS-RunPowerShellScript"}
# Steps that only look: they never report `changed`.
READ_ONLY_STEPS = ("precheck", "health")
# Quoted into shell and PowerShell single quotes: no quotes, no shell metacharacters.
SERVICE_RE = re.compile(r"^[A-Za-z0-9@._:+ -]{1,256}$")
SERVICE_WAIT_S = 30
# What counts as success for fail_on_no_success (check mode's would_run and wait=false's sent included).
SUCCEEDED = ("success", "would_run", "sent")


def targets_from_params(params):
    """[{instance_id, platform, commands, services}] from `targets` plus `instance_ids` with the shared commands/services."""
    targets = []
    for target in params.get("targets") or []:
        targets.append(dict(instance_id=target["instance_id"], platform=target.get("platform"),
                            commands=target.get("commands") if target.get("commands") is not None else params.get("commands") or [],
                            services=target.get("services") if target.get("services") is not None else params.get("services") or []))
    for iid in params.get("instance_ids") or []:
        targets.append(dict(instance_id=iid, platform=None, commands=params.get("commands") or [], services=params.get("services") or []))
    return targets


def validate(params):
    """Every input error, as one line, before any AWS call."""
    targets = targets_from_params(params)
    if not targets:
        raise PatchingError("nothing to run on: give instance_ids or targets")
    validate_instance_ids([t["instance_id"] for t in targets])
    validate_step(params["step"])
    validate_runner_options(params)
    for t in targets:
        if not t["commands"] and not t["services"]:
            raise PatchingError(f"{t['instance_id']}: no commands and no services to run")
        bad = [s for s in t["services"] if not isinstance(s, str) or not SERVICE_RE.match(s)]
        if bad:
            raise PatchingError(f"{t['instance_id']}: invalid service name(s): {', '.join(map(repr, bad))}")
        if any(not isinstance(c, str) or not c.strip() for c in t["commands"]):
            raise PatchingError(f"{t['instance_id']}: empty command")
    return targets


def linux_script(services, commands):
    """`set -e` so that any failing line fails the instance, not only the last one."""
    lines = ["set -e"]
    for svc in services:
        lines += [f"systemctl restart '{svc}'",
                  f"for _ in $(seq 1 {SERVICE_WAIT_S}); do systemctl is-active --quiet '{svc}' && break; sleep 1; done",
                  f"systemctl is-active '{svc}'"]
    return lines + list(commands)


def windows_script(services, commands):
    """PowerShell does not stop on a failing native command: check $? after each one."""
    lines = ["$ErrorActionPreference = 'Stop'"]
    for svc in services:
        lines += [f"Restart-Service -Name '{svc}' -Force",
                  f"try {{ (Get-Service -Name '{svc}').WaitForStatus('Running', [TimeSpan]::FromSeconds({SERVICE_WAIT_S})) }} catch {{ }}",
                  f"if ((Get-Service -Name '{svc}').Status -ne 'Running') {{ Write-Output 'service {svc} is not running'; exit 1 }}"]
    for cmd in commands:
        lines += [cmd, "if (-not $?) { exit 1 }"]
    return lines


def script_for(platform, services, commands):
    return linux_script(services, commands) if platform == "linux" else windows_script(services, commands)


def resolve_platforms(targets, agents):
    """Each target's platform (given, else as SSM reports it) or the reason it cannot be sent to."""
    problems = {}
    for t in targets:
        agent = agents.get(t["instance_id"])
        if agent is None or agent.get("ping_status") == "Inactive":
            problems[t["instance_id"]] = "not sent: SSM agent not registered (SendCommand would refuse it)"
            continue
        if not t["platform"]:
            platform = readers.platform_of(agent=agent)  # the collection's one platform rule
            t["platform"] = platform if platform in DOCUMENTS else None
            if not t["platform"]:
                problems[t["instance_id"]] = f"not sent: unsupported platform {agent.get('platform_type')!r}"
    return problems


def group_requests(targets, step, params):
    """One CommandRequest per identical (document, script)."""
    groups = {}
    for t in targets:
        document = DOCUMENTS[t["platform"]]
        script = tuple(script_for(t["platform"], t["services"], t["commands"]))
        groups.setdefault((document, script), []).append(t["instance_id"])
    params_for = dict(request_options(params))
    return [CommandRequest(document=doc, instance_ids=ids, step=step, parameters=command_parameters(doc, script, params),
                           strict_exit_code=True, **params_for)
            for (doc, script), ids in groups.items()]


def command_parameters(document, script, params):
    # The document's own executionTimeout backs up the runner's deadline on the instance itself.
    return {"commands": list(script), "executionTimeout": [str(int(params["execution_timeout"]))]}


@AwsErrorHandler.common_error_handler("ssm:DescribeInstanceInformation")
def read_agents(ssm, ids):
    return readers.read_agents(ssm, ids)


@AwsErrorHandler.common_error_handler("ec2:DescribeInstances")
def read_unknown(ec2, ids):
    return unknown_instances(ec2, ids)


def no_success(result):
    """The one line that fails an ssm_command_run call in which no instance succeeded, or None."""
    return no_success_message(result["results"], "outcome", SUCCEEDED)


def run_commands(ssm, params, check_mode, clock=time.monotonic, sleep=time.sleep, send_client=None, ec2=None):
    """The module's whole job. send_client: a client for SendCommand with no botocore retries (the runner retries it).

    ec2: a client of the same account and region, to report the ids EC2 does not know as not_found (only the ids SSM
    does not know are looked up); without it they are undeliverable.
    """
    targets = validate(params)
    config = RunConfig(resolve_run_id(params.get("run_id")), params["poll_interval"], params["wait"], check_mode)
    agents = read_agents(ssm, [t["instance_id"] for t in targets])
    problems = resolve_platforms(targets, agents)
    unregistered = [t["instance_id"] for t in targets if t["instance_id"] not in agents]
    missing = read_unknown(ec2, unregistered) if ec2 is not None and unregistered else {}
    sendable = [t for t in targets if t["instance_id"] not in problems]
    runner = SsmRunner(ssm, config, clock=clock, sleep=sleep, send_client=send_client)
    outcomes = runner.run(group_requests(sendable, params["step"], params)) if sendable else {}
    results = []
    for t in targets:
        iid = t["instance_id"]
        if iid in problems:
            res = dict(instance_id=iid, command_id=None, status=None, status_details=None,
                       outcome="not_found" if iid in missing else "undeliverable",
                       output_excerpt="", error=missing.get(iid) or problems[iid], output_truncated=False, output_location=None)
        else:
            res = outcomes[iid].to_dict()
        res.update(platform=t["platform"], document=DOCUMENTS.get(t["platform"]) if iid not in problems else None, step=params["step"])
        results.append(res)
    ran = any(r["command_id"] or r["outcome"] == "would_run" for r in results)
    return dict(
        changed=ran and params["step"] not in READ_ONLY_STEPS,
        run_id=config.run_id, step=params["step"], results=results, summary=summarize(results, "outcome"),
        commands=[dict(command_id=c.command_id, document=c.request.document, instance_count=len(c.instance_ids),
                       comment=c.comment, error=c.send_error) for c in runner.sent],
    )
