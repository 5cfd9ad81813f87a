#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ssm_patch_run
short_description: Patch many instances with AWS-RunPatchBaseline through SSM Run Command and verify each one
version_added: 0.1.0
description:
  - Runs C(AWS-RunPatchBaseline) (or C(AWS-RunPatchBaselineWithHooks)) with one C(SendCommand) per 50 instances, polls all
    its commands with one C(ListCommands) per poll, lists a command's invocations (C(ListCommandInvocations)) once it has
    finished, never once per instance, and reports one outcome per instance.
  - "Outcomes of the command: V(success), V(failed), V(timed_out) (it ran, but not to its end), V(delivery_timed_out) and
    V(undeliverable) (nothing ran on the instance), V(cancelled) (someone else cancelled it), V(terminated) (SSM stopped it
    because O(max_errors) was exceeded)."
  - "With O(reboot_option=RebootIfNeeded) the reboot happens inside the command: the document exits 194 (3010 on Windows),
    the SSM agent reboots the instance and runs the document again, and the invocation stays C(InProgress) until the agent is
    back and the post-reboot run has ended (SSM user guide, Handling reboots when running commands). While such an install
    runs, the module watches the agents of the instances whose command is still open, at most once per
    O(agent_check_interval) (one C(DescribeInstanceInformation) per 50 instances). An agent whose C(LastPingDateTime) is
    more than O(agent_online_timeout) old (counted from the command's C(RequestedDateTime) at the earliest, on AWS's clock)
    while its invocation is C(InProgress) did not come back from the reboot: the module cancels that invocation
    (C(CancelCommand)) and reports V(reboot_timeout), without waiting for O(execution_timeout)."
  - "After an O(operation=Install) that succeeded, C(DescribeInstancePatchStates) (batches of 50) must show, within
    O(agent_online_timeout), a patch state reported since the command with MissingCount 0 and FailedCount 0, otherwise
    V(noncompliant) (V(state_unknown) when that read failed). InstalledPendingRebootCount above 0 gives V(pending_reboot)
    with O(reboot_option=NoReboot) and V(noncompliant) with O(reboot_option=RebootIfNeeded)."
  - "With O(baseline_override) AWS does not write patch compliance (Patch Manager guide, Using the BaselineOverride
    parameter): the run is judged on its own result and stdout instead, which lists only the packages marked NON_COMPLIANT.
    The stdout of each successful run is read with C(GetCommandInvocation) (one call per instance), which returns its
    first 24,000 characters. A run whose stdout names a C(Missing), C(Failed) or C(InstalledRejected) package is
    V(noncompliant); one naming only C(InstalledPendingReboot) packages is V(pending_reboot) with
    O(reboot_option=NoReboot) and V(noncompliant) otherwise. A stdout at that 24,000-character cap is never clean
    (V(noncompliant): packages listed after the cut cannot be ruled out), and one that could not be read is
    V(state_unknown); anything else is V(success)."
  - "Instances that SSM does not know (or knows as Inactive) are not sent to, because C(SendCommand) would refuse the whole batch:
    they end V(undeliverable). Those SSM does not know are looked up in EC2 (C(DescribeInstances) with the C(instance-id)
    filter, 200 ids per call; no call when SSM knows every instance): one EC2 does not know in this account and region, or
    knows as terminated, ends V(not_found) instead."
  - "O(execution_timeout) is enforced by the module (the document has no such parameter): when it passes, the module calls
    C(CancelCommand) for the invocations still open. An instance that was already running ends V(timed_out), one that had not
    even received the command ends V(delivery_timed_out); both carry the error C(... CancelCommand sent). V(cancelled) is kept
    for cancellations the module did not make."
  - Check mode sends nothing; it reads agent status and compliance and reports V(would_run) for the instances it would patch.
options:
  instance_ids:
    description: Instances to patch or scan. At least one; malformed or duplicate ids fail the module before any AWS call.
    type: list
    elements: str
    required: true
  operation:
    description: C(Operation) of the document. V(Scan) reports compliance only and never reboots.
    type: str
    choices: [Install, Scan]
    default: Install
  reboot_option:
    description: C(RebootOption) of the document for O(operation=Install).
    type: str
    choices: [RebootIfNeeded, NoReboot]
    default: RebootIfNeeded
  document:
    description: The patching document.
    type: str
    choices: [AWS-RunPatchBaseline, AWS-RunPatchBaselineWithHooks]
    default: AWS-RunPatchBaseline
  pre_install_hook_doc_name:
    description: C(PreInstallHookDocName) of C(AWS-RunPatchBaselineWithHooks) (only with that document).
    type: str
  post_install_hook_doc_name:
    description: C(PostInstallHookDocName) of C(AWS-RunPatchBaselineWithHooks) (only with that document).
    type: str
  on_exit_hook_doc_name:
    description: C(OnExitHookDocName) of C(AWS-RunPatchBaselineWithHooks) (only with that document).
    type: str
  snapshot_id:
    description:
      - C(SnapshotId) GUID, the same for every instance of the run so all get the same approved patch set.
      - Generated once per module call when not given, and returned. Pass the returned value to later waves of the same run.
      - "Must be in the canonical 36-character form C(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) (hexadecimal digits, either case),
        the document's allowed pattern. Other spellings of a UUID (braces, C(urn:uuid:), no dashes) fail the module before
        any AWS call; they are not rewritten, so the id you pass is the id AWS reports."
    type: str
  install_override_list:
    description:
      - C(InstallOverrideList), an https:// or s3:// URL of a YAML patch list. Only with C(AWS-RunPatchBaseline).
      - Mutually exclusive with O(baseline_override).
    type: str
  baseline_override:
    description: C(BaselineOverride), an https:// or s3:// URL of a JSON list of patch baselines.
    type: str
  execution_timeout:
    description:
      - Seconds from C(SendCommand) after which the module cancels invocations still open (see the description).
    type: int
    default: 7200
  agent_online_timeout:
    description:
      - "With O(reboot_option=RebootIfNeeded): how long, in seconds, an SSM agent may stay silent (no newer C(LastPingDateTime))
        while its install command is C(InProgress) before the module takes it for a reboot that did not come back, cancels the
        invocation and reports V(reboot_timeout). The agent also goes silent between its periodic health pings, every few
        minutes, so keep this well above that."
      - After a successful install, also how long the instance has to report its fresh patch state.
    type: int
    default: 900
  agent_check_interval:
    description:
      - Seconds between two checks of the agents of the instances whose command is still open (see O(agent_online_timeout)).
        The first check comes one interval after the send. Each check costs one C(DescribeInstanceInformation) per 50 such
        instances. Only used with O(operation=Install) and O(reboot_option=RebootIfNeeded).
    type: float
    default: 60
  agent_recovery:
    description:
      - "What is tried, in this order, on an instance whose agent stays silent longer than O(agent_online_timeout) during
        its install, before its invocation is cancelled (V(reboot_timeout)). After each action the agent has
        O(agent_online_timeout) again to come back; once back it runs the document again (SSM user guide, Handling
        reboots when running commands), so the command can still end, and it is judged as usual."
      - "V(reboot): C(RebootInstances). V(stop_start): C(StopInstances), then C(StartInstances) once the instance is
        stopped. V(stop_start) is opt-in: the public IP address changes and the start may fail for lack of capacity. It
        is skipped, with the reason recorded, on Auto Scaling members (tag C(aws:autoscaling:groupName)) and instances
        with instance-store volumes (root device type C(instance-store), or an instance type with instance storage)."
      - "An empty list cancels at once, as before. Each attempt is returned in C(results[].recovery). Nothing is tried
        in check mode. Needs C(ec2:RebootInstances), C(ec2:StopInstances), C(ec2:StartInstances) and
        C(ec2:DescribeInstanceTypes)."
    type: list
    elements: str
    choices: [reboot, stop_start]
    default: [reboot]
extends_documentation_fragment:
  - cms.patching.ssm_command
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
  - cms.patching.results
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Patch one wave, rebooting where needed
  cms.patching.ssm_patch_run:
    region: eu-west-1
    instance_ids: "{{ wave_ids }}"
    run_id: "{{ cms_patching_run_id }}"
    snapshot_id: "{{ patch_snapshot_id }}"
  register: patch

- name: Install without rebooting, into CloudWatch Logs
  cms.patching.ssm_patch_run:
    instance_ids: [i-0123456789abcdef0]
    reboot_option: NoReboot
    cloudwatch_output:
      log_group_name: /cms-patching/commands

- name: Hosts whose patch did not succeed
  ansible.builtin.debug:
    msg: "{{ patch.results | rejectattr('outcome', 'in', ['success', 'pending_reboot']) | map(attribute='instance_id') }}"
"""

RETURN = r"""
results:
  description: One entry per instance, in the order of O(instance_ids).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: The instance., type: str}
    command_id: {description: The SSM command that ran on it (null when nothing was sent)., type: str}
    status: {description: The invocation's last C(Status)., type: str, sample: Success}
    status_details: {description: The invocation's last C(StatusDetails)., type: str, sample: Delivery Timed Out}
    outcome:
      description:
        - V(success), V(failed), V(timed_out), V(delivery_timed_out), V(undeliverable), V(cancelled), V(terminated),
          V(reboot_timeout), V(pending_reboot), V(noncompliant), V(state_unknown), V(not_found); V(would_run) in check mode
          and V(sent) with O(wait=false).
        - "V(not_found) when EC2 does not know the instance in this account and region (or it is terminated): nothing was
          sent. V(undeliverable) without a command when EC2 knows it but SSM does not (or knows it as Inactive)."
        - "V(success), V(pending_reboot), V(would_run) and V(sent) count as success for O(fail_on_no_success)."
        - "V(state_unknown) when the invocation had not been seen to end and its last status read failed (for example
          AWS refused the calls until O(execution_timeout) and the cancel grace passed), or its status read failed
          when O(execution_timeout) cancelled it and no earlier read had seen it run: it may have run, in part or
          wholly, or not at all. C(error) gives the last status read and the failed call. Also after a successful
          O(operation=Install) whose patch state (or, with O(baseline_override), stdout) could not be read."
        - "An C(error) says C(CancelCommand sent) only when that call succeeded; otherwise it gives the CancelCommand error."
      type: str
    output_excerpt:
      description:
        - At most 500 characters of the command output. For a failure, the end of its stderr (and of its stdout) as
          C(GetCommandInvocation) returns them; otherwise the end of the C(ListCommandInvocations) output.
      type: str
    output_truncated: {description: True when the excerpt shows less than the whole output (SSM or the excerpt cut it)., type: bool}
    output_location:
      description: Where the whole output is (S3 prefix, CloudWatch Logs group) when O(output_s3_bucket_name) or O(cloudwatch_output) is set.
      type: str
    error: {description: Why the outcome is not V(success) (null otherwise)., type: str}
    ping_status_before:
      description: SSM agent C(PingStatus) before sending (C(NotRegistered) when SSM does not know the instance).
      type: str
    compliance_before:
      description:
        - Patch state before the command, as M(cms.patching.ec2_patch_scan) reports it (C(missing), C(failed),
          C(installed_pending_reboot), C(operation), C(operation_end_time), C(snapshot_id) and more counts).
      type: dict
    compliance_after:
      description: Patch state after the command, same keys (null in check mode or with O(wait=false)).
      type: dict
    recovery:
      description:
        - "The O(agent_recovery) attempts made on this instance, in order, each with C(action) (V(reboot), V(stop_start)),
          C(started_at), C(ended_at) (UTC, ISO 8601), C(result) and, when there is one, C(reason) and C(error)."
        - "C(result): V(agent_back) (the agent pinged again after the action), V(agent_not_back) (still silent
          O(agent_online_timeout) after it), V(not_stopped), V(skipped) (C(reason) V(auto_scaling_member),
          V(instance_store), V(instance_type_unknown), V(instance_not_found), V(instance_unreadable)), V(failed) (EC2
          refused the call: C(error)) or V(unresolved) (the command ended otherwise first)."
      type: list
      elements: dict
summary:
  description: Number of instances per outcome, plus C(total).
  returned: always
  type: dict
  sample: {"total": 3, "success": 2, "failed": 1}
run_id: {description: The run id used in every C(Comment)., returned: always, type: str}
snapshot_id: {description: The C(SnapshotId) GUID sent to every instance., returned: always, type: str}
commands:
  description: One entry per C(SendCommand) (at most 50 instances each).
  returned: always
  type: list
  elements: dict
  sample: [{"command_id": "4f0c...", "instance_count": 50, "comment": "cms-patching run-1 patch 3f9a0c1d", "error": null}]
sent: {description: Number of instances a command was sent to., returned: always, type: int}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.errors import RESULT_ARGS, exit_with
from ansible_collections.cms.patching.plugins.module_utils.patch_run import PATCH_ARGS, no_success, run_patch, validate
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import RUNNER_ARGS


def patch(module):
    validate(module.params)  # before any AWS call, STS included
    session = AwsSession.from_module(module)
    validate_region(session.region, "ssm")
    # SendCommand goes through a client that never retries by itself: the runner retries it without duplicates.
    return run_patch(session.client("ssm"), module.params, module.check_mode, send_client=session.client("ssm", max_attempts=1),
                     ec2=session.client("ec2"))


def main():
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str", required=True),
        **PATCH_ARGS,
        **RUNNER_ARGS,
        **ASSUME_ROLE_ARGS,
        **RESULT_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True,
                              mutually_exclusive=[("install_override_list", "baseline_override")])
    exit_with(module, "ssm_patch_run", patch, judge=no_success)


if __name__ == "__main__":
    main()
