# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ssm_patch_run: AWS-RunPatchBaseline on many instances (hung reboots cancelled), then verify each one (compliance clean)."""

from __future__ import annotations

import re
import time
import uuid

from ansible_collections.cms.patching.plugins.module_utils.aws import call_deadline
from ansible_collections.cms.patching.plugins.module_utils.errors import (
    AwsCallError, AwsErrorHandler, PatchingError, no_success_message, require_positive, validate_instance_ids,
)
from ansible_collections.cms.patching.plugins.module_utils.models import RunConfig, summarize
from ansible_collections.cms.patching.plugins.module_utils.readers import read_patch_states as read_compliance
from ansible_collections.cms.patching.plugins.module_utils.root_restore import unknown_instances
from ansible_collections.cms.patching.plugins.module_utils.ssm.agents import AgentWatch, ping_statuses
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import (
    request_options, resolve_run_id, validate_runner_options,
)
from ansible_collections.cms.patching.plugins.module_utils.ssm.recovery import AgentRecovery, validate_actions
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import CommandRequest, SsmRunner
from ansible_collections.cms.patching.plugins.module_utils.ssm.status import STDOUT_CONTENT_MAX

DOCUMENTS = ("AWS-RunPatchBaseline", "AWS-RunPatchBaselineWithHooks")
HOOKS = dict(pre_install_hook_doc_name="PreInstallHookDocName", post_install_hook_doc_name="PostInstallHookDocName",
             on_exit_hook_doc_name="OnExitHookDocName")
DOC_NAME_RE = re.compile(r"^[a-zA-Z0-9_.:/-]{3,128}$")
STEP = "patch"
# The patch options ssm_patch_run and ssm_patch_wave share (each module documents them).
PATCH_ARGS = dict(
    operation=dict(type="str", choices=["Install", "Scan"], default="Install"),
    reboot_option=dict(type="str", choices=["RebootIfNeeded", "NoReboot"], default="RebootIfNeeded"),
    document=dict(type="str", choices=list(DOCUMENTS), default="AWS-RunPatchBaseline"),
    pre_install_hook_doc_name=dict(type="str"),
    post_install_hook_doc_name=dict(type="str"),
    on_exit_hook_doc_name=dict(type="str"),
    snapshot_id=dict(type="str"),
    install_override_list=dict(type="str"),
    baseline_override=dict(type="str"),
    execution_timeout=dict(type="int", default=7200),
    agent_online_timeout=dict(type="int", default=900),
    agent_check_interval=dict(type="float", default=60.0),
    agent_recovery=dict(type="list", elements="str", choices=["reboot", "stop_start"], default=["reboot"]),
)
# SendCommand refuses unregistered or terminated instances for the whole batch (InvalidInstanceId): never send to them.
UNSENDABLE = ("NotRegistered", "Inactive")
# What counts as success for fail_on_no_success: patched (or scanned), check mode's would_run, and sent with wait=false.
SUCCEEDED = ("success", "pending_reboot", "would_run", "sent")
# AWS-RunPatchBaseline(WithHooks) parameter SnapshotId, allowedPattern of the document: the canonical 36-character GUID.
# Other spellings uuid.UUID would accept (braces, urn:uuid:, no dashes) are refused, not rewritten: the id is the user's,
# and it must be the same in every wave and in the compliance data that reports it.
SNAPSHOT_ID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Patch Manager guide, "Using the BaselineOverride parameter": such a run prints only the packages marked NON_COMPLIANT,
# with these states. A state named with a count of zero ("Missing: 0") is not a finding.
NON_COMPLIANT_RE = re.compile(r"\b(Missing|Failed|InstalledRejected|InstalledPendingReboot)\b(?!\s*[:=]\s*0\b)")


def validate(params):
    """Every input error, as one line, before any AWS call."""
    validate_instance_ids(params["instance_ids"])
    if not params["instance_ids"]:
        raise PatchingError("instance_ids is empty")
    if params["document"] not in DOCUMENTS:
        raise PatchingError(f"unknown document {params['document']!r}: use one of {', '.join(DOCUMENTS)}")
    validate_runner_options(params)
    require_positive(params, ["agent_online_timeout", "agent_check_interval"])
    validate_actions(params.get("agent_recovery"))
    if params.get("install_override_list") and params.get("baseline_override"):
        raise PatchingError("install_override_list and baseline_override are mutually exclusive")
    if params.get("install_override_list") and params["document"] != "AWS-RunPatchBaseline":
        raise PatchingError("install_override_list needs document AWS-RunPatchBaseline (AWS-RunPatchBaselineWithHooks does not support it)")
    for name in ("install_override_list", "baseline_override"):
        url = params.get(name)
        if url and not url.startswith(("https://", "s3://")):
            raise PatchingError(f"{name} must be an https:// or s3:// URL, got {url!r}")
    for name in HOOKS:
        value = params.get(name)
        if value and params["document"] != "AWS-RunPatchBaselineWithHooks":
            raise PatchingError(f"{name} needs document AWS-RunPatchBaselineWithHooks")
        if value and not DOC_NAME_RE.match(value):
            raise PatchingError(f"invalid {name} {value!r}: not an SSM document name")
    if params.get("snapshot_id") and not SNAPSHOT_ID_RE.fullmatch(params["snapshot_id"]):
        raise PatchingError(f"snapshot_id must be a GUID in its canonical 36-character form "
                            f"(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got {params['snapshot_id']!r}")


def document_parameters(params, snapshot_id):
    """AWS-RunPatchBaseline(WithHooks) parameters. Scan never reboots, whatever reboot_option says."""
    install = params["operation"] == "Install"
    parameters = {
        "Operation": [params["operation"]],
        "SnapshotId": [snapshot_id],
        "RebootOption": [params["reboot_option"] if install else "NoReboot"],
    }
    if params.get("install_override_list"):
        parameters["InstallOverrideList"] = [params["install_override_list"]]
    if params.get("baseline_override"):
        parameters["BaselineOverride"] = [params["baseline_override"]]
    for name, aws_name in HOOKS.items():
        if params.get(name):
            parameters[aws_name] = [params[name]]
    return parameters


@AwsErrorHandler.common_error_handler("reading SSM and EC2 state before patching")
def read_before(ssm, ec2, ids):
    """(ping statuses, compliance, {id: why not found}): reads before sending, whose failure fails the module unchanged.

    Only the ids SSM does not know are looked up in EC2 (none in a normal run), so that an instance EC2 does not know is
    reported not_found instead of as an SSM registration problem.
    """
    pings = ping_statuses(ssm, ids)
    before = read_compliance(ssm, ids)
    unregistered = [i for i in ids if pings[i] == "NotRegistered"]
    return pings, before, unknown_instances(ec2, unregistered) if ec2 is not None and unregistered else {}


def run_patch(ssm, params, check_mode, clock=time.monotonic, sleep=time.sleep, send_client=None, ec2=None):
    """The module's whole job; returns the module result (without `failed`). send_client: SendCommand without retries.

    ec2: a client of the same account and region, to tell instances EC2 does not know (not_found) from ones SSM does not
    know (undeliverable); without it both are undeliverable.
    """
    validate(params)
    config = RunConfig(resolve_run_id(params.get("run_id")), params["poll_interval"], params["wait"], check_mode)
    snapshot_id = params.get("snapshot_id") or str(uuid.uuid4())
    ids = list(params["instance_ids"])
    pings, before, missing = read_before(ssm, ec2, ids)
    sendable = [i for i in ids if pings[i] not in UNSENDABLE]
    request = CommandRequest(document=params["document"], instance_ids=sendable, step=STEP,
                             parameters=document_parameters(params, snapshot_id), **request_options(params),
                             read_stdout=bool(params.get("baseline_override")))
    runner = SsmRunner(ssm, config, clock=clock, sleep=sleep, send_client=send_client)
    watch = agent_watch(ssm, params, clock, ec2)
    outcomes = runner.run([request], watch=watch) if sendable else {}
    recovery = getattr(watch, "recovery", None)
    if recovery is not None:
        recovery.finish({i: r.outcome for i, r in outcomes.items()})
    results = []
    for iid in ids:
        res = outcomes[iid].to_dict() if iid in outcomes else unsent(iid, pings[iid], missing.get(iid))
        res.update(ping_status_before=pings[iid], compliance_before=before.get(iid), compliance_after=None,
                   recovery=list(recovery.attempts.get(iid, [])) if recovery is not None else [])
        results.append(res)
    if config.wait and not check_mode and sendable:
        verify(ssm, params, results, before, snapshot_id, clock, sleep, runner.stdout)
    sent = [r for r in results if r["command_id"]]
    changed = params["operation"] == "Install" and any(r["command_id"] or r["outcome"] == "would_run" for r in results)
    return dict(
        changed=changed, run_id=config.run_id, snapshot_id=snapshot_id, results=results,
        summary=summarize(results, "outcome"),
        commands=[dict(command_id=c.command_id, instance_count=len(c.instance_ids), comment=c.comment, error=c.send_error)
                  for c in runner.sent],
        sent=len(sent),
    )


def unsent(iid, ping, not_found=None):
    """The result of an instance nothing was sent to: not_found (EC2 does not know it) or undeliverable (SSM does not)."""
    return dict(instance_id=iid, command_id=None, status=None, status_details=None, outcome="not_found" if not_found else "undeliverable",
                output_excerpt="", output_truncated=False, output_location=None,
                error=not_found or f"not sent: SSM agent {'not registered' if ping == 'NotRegistered' else ping} (SendCommand would refuse it)")


def no_success(result):
    """The one line that fails an ssm_patch_run call in which no instance succeeded, or None."""
    return no_success_message(result["results"], "outcome", SUCCEEDED)


def agent_watch(ssm, params, clock, ec2=None):
    """An Install with RebootIfNeeded reboots inside the command, so its agents are watched while it runs (None otherwise).

    With an EC2 client and agent_recovery actions, a lost agent is first given those actions (AgentRecovery), each
    followed by agent_online_timeout, before its invocation is cancelled.
    """
    if params["operation"] != "Install" or params["reboot_option"] != "RebootIfNeeded":
        return None
    actions = validate_actions(params.get("agent_recovery"))
    recovery = AgentRecovery(ec2, actions, params["agent_online_timeout"], clock) if ec2 is not None and actions else None
    return AgentWatch(ssm, params["agent_online_timeout"], params.get("agent_check_interval", 60), clock, recovery=recovery)


def verify(ssm, params, results, before, snapshot_id, clock, sleep, stdouts=None):
    """After the command: fresh, clean compliance within agent_online_timeout (a reboot is over when the command ends).

    A run with BaselineOverride does not write compliance (Patch Manager guide, "Using the BaselineOverride parameter"),
    so it is judged on its own result and stdout (`stdouts`, the runner's), and no fresh patch state is waited for.
    """
    deadline = clock() + params["agent_online_timeout"]
    install = params["operation"] == "Install"
    override = bool(params.get("baseline_override"))
    done = [r["instance_id"] for r in results if r["outcome"] == "success"]
    sent_ids = [r["instance_id"] for r in results if r["command_id"]]
    after, error = settle_compliance(ssm, sent_ids, [] if override else done, before, snapshot_id, deadline,
                                     params["poll_interval"], clock, sleep)
    for res in results:
        res["compliance_after"] = after.get(res["instance_id"])
        if install and res["outcome"] == "success":
            stdout = (stdouts or {}).get((res["command_id"], res["instance_id"]), (None, "no GetCommandInvocation made"))
            res["outcome"], res["error"] = judge_install(res, before.get(res["instance_id"]), snapshot_id, params["reboot_option"],
                                                         error, stdout if override else None)


def settle_compliance(ssm, ids, must_be_fresh, before, snapshot_id, deadline, poll_interval, clock, sleep):
    """Read patch states for `ids`; re-read those in `must_be_fresh` not yet reported since the command, until deadline."""
    after, error = {}, None
    todo = list(ids)
    while todo:
        try:
            with call_deadline(deadline, clock):  # no retry past the wait's deadline
                after.update(read_patch_states(ssm, todo))
            error = None
        except AwsCallError as e:
            error = str(e)
        todo = [i for i in must_be_fresh if not is_fresh(before.get(i), after.get(i), snapshot_id)]
        if not todo or clock() >= deadline:
            break
        sleep(min(poll_interval, max(deadline - clock(), 0)))
    return after, error


@AwsErrorHandler.common_error_handler("ssm:DescribeInstancePatchStates")
def read_patch_states(ssm, ids):
    return read_compliance(ssm, ids)


def is_fresh(before, after, snapshot_id):
    """Has the instance reported a patch state since our command? Compared on AWS's data only (no local clock).

    The end time must differ from before the command, and a reported snapshot id must be this run's.
    """
    if after is None:
        return False
    if before and after.get("operation_end_time") and after.get("operation_end_time") == before.get("operation_end_time"):
        return False
    return not after.get("snapshot_id") or after.get("snapshot_id") == snapshot_id


def judge_install(res, before, snapshot_id, reboot_option, read_error, override_stdout=None):
    """The verification rules of a successful Install: (outcome, error).

    override_stdout: for a BaselineOverride run, (its stdout as GetCommandInvocation returned it or None, read error),
    judged instead of compliance. A patch state that could not be read is state_unknown, not unclean: the install may
    well be clean, and nothing says so either way.
    """
    if override_stdout is not None:
        return judge_override_stdout(*override_stdout, reboot_option, res.get("output_location"))
    after = res["compliance_after"]
    if not is_fresh(before, after, snapshot_id):
        if read_error:
            return "state_unknown", f"patch state not read after the install: {read_error}"
        if after is None:
            return "noncompliant", "no patch state reported after the install"
        return "noncompliant", (f"patch state not updated since the install "
                                f"(last {after.get('operation')} at {after.get('operation_end_time')})")
    if after["missing"] or after["failed"]:
        return "noncompliant", f"after the install MissingCount={after['missing']} FailedCount={after['failed']}"
    if after["installed_pending_reboot"]:
        if reboot_option == "NoReboot":
            return "pending_reboot", None
        return "noncompliant", f"InstalledPendingRebootCount={after['installed_pending_reboot']} although RebootIfNeeded was asked for"
    return "success", None


def judge_override_stdout(stdout, read_error, reboot_option, location=None):
    """A successful BaselineOverride Install judged on its stdout: (outcome, error). Never success on a partial read.

    stdout None: GetCommandInvocation failed, so what the run did is unknown (state_unknown, like an unread patch
    state). GetCommandInvocation returns only the first 24,000 characters of stdout (SSM API reference): at that length
    NON_COMPLIANT packages printed later cannot be ruled out, so the run is not clean.
    """
    if stdout is None:
        return "state_unknown", f"the BaselineOverride run's stdout, which holds its compliance, was not read: {read_error}"
    outcome, error = judge_override_output(stdout, reboot_option)
    if len(stdout) < STDOUT_CONTENT_MAX:
        return outcome, error
    where = f"; the whole output is in {location}" if location else ""
    cut = f"SSM returned only the first {STDOUT_CONTENT_MAX:,} characters of its stdout"
    if outcome == "noncompliant":
        return outcome, f"{error}; {cut}{where}"
    return "noncompliant", (f"the BaselineOverride run cannot be judged clean: {cut}, and NON_COMPLIANT packages "
                            f"printed after them cannot be ruled out{where}")


def judge_override_output(output, reboot_option):
    """A successful Install with BaselineOverride, judged on its output: (outcome, error).

    The run prints only NON_COMPLIANT packages; any Missing, Failed or InstalledRejected one fails it, InstalledPendingReboot
    alone is pending_reboot with NoReboot (and a failure with RebootIfNeeded, whose post-reboot run should have none).
    """
    found = {}
    for state in NON_COMPLIANT_RE.findall(output):
        found[state] = found.get(state, 0) + 1
    if not found:
        return "success", None
    listed = ", ".join(f"{state} {count}" for state, count in sorted(found.items()))
    if set(found) == {"InstalledPendingReboot"} and reboot_option == "NoReboot":
        return "pending_reboot", None
    return "noncompliant", f"the BaselineOverride run lists NON_COMPLIANT packages in its output ({listed})"
