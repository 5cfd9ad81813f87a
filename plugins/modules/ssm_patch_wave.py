#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ssm_patch_wave
short_description: Run one whole patching wave - backup gate, pre-checks, patch, restarts, health checks, rollback
version_added: 0.1.0
description:
  - "One call runs a patching wave over instances of any accounts and regions: for each instance, the backup gate (its
    newest verified backup made by this tool, no older than O(max_backup_age_hours)), its pre-checks, C(AWS-RunPatchBaseline)
    (as M(cms.patching.ssm_patch_run) runs it, reboots and verification included), its service restarts and health checks
    (as M(cms.patching.ssm_command_run) runs them), and the rollback from the pre-patch AMI of every instance that failed
    after the patch command ran (as M(cms.patching.ec2_root_restore) does it)."
  - An instance leaves the wave at its first failing step. What it ends as (C(final_status), C(reason)) follows the patching
    fault table (see C(docs/report-schema.md)).
  - "The instances are split into partitions, one per account, region and role; the partitions run concurrently, at most
    O(partition_concurrency) at a time, each with its own AWS session. Inside a partition every step is batched as the
    single-step modules batch it (one C(SendCommand) per 50 instances and per script, one poll for all commands)."
  - After the wave, each instance is tagged with C(cms-patching:last-patch-status), C(cms-patching:last-patched-at) and
    C(cms-patching:run-id) (one C(CreateTags) per status and partition), unless O(status_tags=false).
  - When no instance succeeded the module fails with one line that sums up the instances' reasons; the per-instance
    results are still returned. O(fail_on_no_success=false) turns this off (the patching role fails hosts one by one instead).
  - "O(mode=restore) (C(playbooks/rollback.yml)) only restores: every instance with a verified backup (of any age unless
    O(max_backup_age_hours) is set) gets its root volume replaced from its newest one; one without ends V(failed) with
    reason V(no_verified_backup). Nothing is patched or tagged."
  - "O(mode=recover) only puts back in service what earlier runs left out, as the instances' capacity tags say (step
    V(recover) alone); the results hold only the instances that had such tags. The patching role runs it before its
    waves for every discovered host whose tags say so, in the plan or not."
  - "Serving capacity: an instance with target groups (O(instances[].target_groups), those not V(unused)) is taken out of
    them before its patch: C(DeregisterTargets) (one call per target group for all the wave's targets in it), then the
    wait until none of its targets is C(draining) (O(drain_timeout)); after its health checks, C(RegisterTargets) with
    the same ports and the wait until every target is C(healthy) (O(lb_healthy_timeout)). A drain that does not end
    in time fails the instance before its patch (V(drain_timeout)); a target never healthy again fails it
    (V(lb_unhealthy)) and it is rolled back. Whatever was taken out is registered again, whatever the instance ends as."
  - "With O(instances[].asg_mode=standby), an Auto Scaling member goes to C(Standby) instead (C(EnterStandby) with
    C(ShouldDecrementDesiredCapacity), 20 a call, never below C(MinSize): V(asg_min_size)); after its health checks
    C(ExitStandby), the wait for C(InService) and for its targets to be healthy. Auto Scaling deregisters and registers
    the group's own target groups itself; other target groups of the instance are drained as above. The desired
    capacity ends as it began."
  - "Before draining or entering standby the instance is tagged (C(cms-patching:drained), C(cms-patching:standby)); the
    tags go once it is back. A later call that finds them (O(instances[].capacity_tags), or C(DescribeInstances) when
    not given) registers and takes out of standby what they name before anything else (step V(recover))."
  - "The patching role runs the whole wave in this one call (O(mode=patch) with O(recover), O(not_after) and O(gates)):
    first it puts back in service what a killed run left out (O(recover), as O(mode=recover)); after O(not_after) the
    instances only get reason V(deadline_passed); then the gates before the wave (O(gates.hold), or one read of the
    CloudWatch alarms and the stop switch as M(cms.patching.wave_gate) reads them); a verdict other than V(go) starts no
    wave (RV(stopped_at=gate)). After the wave, the bake (O(gates.bake_time)) watches the alarms, the stop switch and the
    target health of the instances it patched; an alarm or an unhealthy target restores every one of them from its
    newest verified backup (as O(mode=restore)), tags it C(cms-patching:last-patch-status=rolled_back) and records it
    V(rolled_back) with reason V(alarm) or V(bake_unhealthy); any verdict other than V(go) stops the run
    (RV(stopped_at=bake)). The caller records the instances the stop leaves (RV(verdict))."
  - Check mode sends nothing and tags nothing; it reads the backups and agents and reports what each step would run
    (V(would_run), V(would_drain), V(would_register)); instances the backup phase would back up
    (O(instances[].backup_planned)) pass the gate.
options:
  instances:
    description: The wave's instances. At least one; malformed or duplicate ids fail the module before any AWS call.
    type: list
    elements: dict
    required: true
    suboptions:
      instance_id:
        description: The instance.
        type: str
        required: true
      region:
        description: Its region (default O(region)).
        type: str
      account_id:
        description: Its account (only used to partition and report).
        type: str
      role_arn:
        description: Role to assume for its account (default O(role_arn)).
        type: str
      external_id:
        description: External id for O(instances[].role_arn).
        type: str
      platform:
        description: V(linux) or V(windows); the SSM agent's platform when not given.
        type: str
        choices: [linux, windows]
      precheck_commands:
        description: Pre-check commands; any non-zero exit keeps the instance from being patched.
        type: list
        elements: str
      restart_services:
        description: Services to restart after the patch.
        type: list
        elements: str
      health_checks:
        description: Health-check commands run after the restarts.
        type: list
        elements: str
      backup_planned:
        description: In check mode, let the instance pass the gate without a backup (the backup phase would make one).
        type: bool
        default: false
      target_groups:
        description:
          - Its ELBv2 target groups as discovery reads them; those with C(state=unused) are neither drained nor waited for.
        type: list
        elements: dict
        suboptions:
          arn:
            description: The target group's ARN.
            type: str
            required: true
          name:
            description: Its name (recorded in the C(cms-patching:drained) tag).
            type: str
          port:
            description: The instance's port in it (deregistered and registered with this port).
            type: int
          state:
            description: Its target health state at discovery.
            type: str
          reason:
            description: The reason code of that state.
            type: str
          deregistration_delay:
            description: The group's deregistration delay in seconds (the default O(drain_timeout) builds on it).
            type: int
      asg_name:
        description: Its Auto Scaling group, if any.
        type: str
      asg_mode:
        description: V(standby) takes an Auto Scaling member out through C(EnterStandby); V(in_place) patches it like any instance.
        type: str
        choices: [in_place, standby]
        default: in_place
      capacity_tags:
        description:
          - Its C(cms-patching:drained*) and C(cms-patching:standby) tags as last read (the patching role passes discovery's).
          - When not given the module reads them (one C(DescribeInstances) per 200 instances).
        type: dict
  recover:
    description:
      - "With O(mode=patch): instances (dicts with the keys of O(instances)) to put back in service first, as O(mode=recover)
        does, whether in the wave or not (the patching role passes every discovered host whose tags say a killed run left
        it out). May be given with an empty O(instances)."
    type: list
    elements: dict
    default: []
  not_after:
    description:
      - "With O(mode=patch), an ISO 8601 time (C(Z) or an offset; none means UTC) after which the wave does not start
        (C(cms_patching_not_after)): every instance then gets reason V(deadline_passed), nothing else."
    type: str
  gates:
    description:
      - With O(mode=patch), the run's gates read before the wave and watched during its bake (C(module_utils/gates.py)),
        as M(cms.patching.wave_gate) reads them; a gate that cannot be read gives the verdict V(unreadable). Not given,
        no gate is read.
    type: dict
    suboptions:
      alarms:
        description: Alarm names, or dicts with C(name) and optionally C(region), C(role_arn), C(external_id) (C(cms_patching_alarms)).
        type: list
        elements: raw
        default: []
      alarm_prefix:
        description: Every alarm whose name starts with this (C(cms_patching_alarm_prefix)); exclusive with O(gates.alarms).
        type: str
        default: ''
      alarm_on_missing_data:
        description: Count an alarm in C(INSUFFICIENT_DATA) as firing.
        type: bool
        default: false
      stop_parameter:
        description: The stop switch, an SSM parameter in the module's region and account. Empty reads no stop switch.
        type: str
        default: /cms-patching/stop
      bake_time:
        description: Seconds to watch the gates and the patched instances' target health after the wave (0, no bake).
        type: int
        default: 0
      hold:
        description:
          - A verdict the job was given (C(cms_patching_hold), as C(cms.patching.approval_reason) resolves it) - V(approval_denied)
            or V(approval_timeout); no gate is read and no wave starts. Empty, none.
        type: str
        default: ''
  mode:
    description:
      - V(patch) runs the whole wave; V(restore) only restores every instance from its newest verified backup; V(recover)
        only puts back in service what the instances' capacity tags say an earlier run left out.
    type: str
    choices: [patch, restore, recover]
    default: patch
  require_backup:
    description: Only patch instances with a verified backup. V(false) patches the others too, without rollback.
    type: bool
    default: true
  max_backup_age_hours:
    description: A backup older than this does not pass the gate. Default 24 with O(mode=patch), any age with O(mode=restore).
    type: float
  rollback:
    description: Replace the root volume from the pre-patch AMI of every instance that failed after the patch command ran.
    type: bool
    default: true
  rollback_timeout:
    description: Seconds to wait for a root-volume replacement.
    type: int
    default: 1800
  command_timeout:
    description: Seconds a pre-check, restart or health-check command may run.
    type: int
    default: 600
  status_tags:
    description: Tag every instance with its final status, the wave's time and the run id.
    type: bool
    default: true
  drain_timeout:
    description:
      - Seconds the wait for an instance's targets to leave C(draining) may take, for all its target groups together.
      - Default, per instance, the largest deregistration delay of its target groups plus 60.
    type: int
  lb_healthy_timeout:
    description: Seconds an instance's targets have to become C(healthy) after it is registered again (or leaves standby).
    type: int
    default: 600
  standby_timeout:
    description:
      - Seconds an Auto Scaling member has to reach C(Standby), or C(InService) after C(ExitStandby).
      - The wait for C(Standby) also gets O(drain_timeout), since Auto Scaling keeps the instance C(EnteringStandby) until its
        target groups have drained it.
    type: int
    default: 600
  partition_concurrency:
    description: How many partitions (account x region x role) run at the same time.
    type: int
    default: 8
  run_id:
    description:
      - Identifier of the run, in every command's C(Comment) and in the status tags.
      - 1 to 64 letters, digits, C(.), C(_), C(:) or C(-). Generated when not given.
    type: str
  snapshot_id:
    description:
      - C(SnapshotId) GUID of the patch command, the same in every wave of a run (canonical 36-character form).
      - Generated once per call when not given, and returned.
    type: str
  operation:
    description: C(Operation) of the patch document.
    type: str
    choices: [Install, Scan]
    default: Install
  reboot_option:
    description: C(RebootOption) of the patch document.
    type: str
    choices: [RebootIfNeeded, NoReboot]
    default: RebootIfNeeded
  document:
    description: The patching document.
    type: str
    choices: [AWS-RunPatchBaseline, AWS-RunPatchBaselineWithHooks]
    default: AWS-RunPatchBaseline
  pre_install_hook_doc_name:
    description: C(PreInstallHookDocName) of C(AWS-RunPatchBaselineWithHooks).
    type: str
  post_install_hook_doc_name:
    description: C(PostInstallHookDocName) of C(AWS-RunPatchBaselineWithHooks).
    type: str
  on_exit_hook_doc_name:
    description: C(OnExitHookDocName) of C(AWS-RunPatchBaselineWithHooks).
    type: str
  install_override_list:
    description: C(InstallOverrideList) URL (https:// or s3://); exclusive with O(baseline_override).
    type: str
  baseline_override:
    description: C(BaselineOverride) URL (https:// or s3://).
    type: str
  execution_timeout:
    description: Seconds from C(SendCommand) after which the patch commands still open are cancelled.
    type: int
    default: 7200
  delivery_timeout:
    description: SendCommand C(TimeoutSeconds) of every command (30 to 2592000).
    type: int
    default: 600
  agent_online_timeout:
    description:
      - How long an agent may stay silent while its install runs (then V(reboot_timeout)), how long the fresh patch state may
        take, and how long a restored instance's agent has to come back Online.
    type: int
    default: 900
  agent_check_interval:
    description: Seconds between two checks of the agents whose install command is still open.
    type: float
    default: 60
  agent_recovery:
    description:
      - "EC2 actions tried, in order, on an instance whose agent stays silent past O(agent_online_timeout) during the
        install, before its invocation is cancelled (then V(reboot_timeout) and rollback): V(reboot) (C(RebootInstances))
        and, opt-in, V(stop_start) (never on Auto Scaling members or instances with instance-store volumes). See
        M(cms.patching.ssm_patch_run). The attempts are in C(results[].patch.recovery). Nothing is tried in check mode."
    type: list
    elements: str
    choices: [reboot, stop_start]
    default: [reboot]
  max_concurrency:
    description: SendCommand C(MaxConcurrency) of the patch commands.
    type: str
    default: 100%
  max_errors:
    description: SendCommand C(MaxErrors) of the patch commands.
    type: str
    default: 100%
  output_s3_bucket_name:
    description: S3 bucket for the patch commands' full output.
    type: str
  output_s3_key_prefix:
    description: Key prefix in O(output_s3_bucket_name).
    type: str
  cloudwatch_output:
    description: Send the patch commands' output to CloudWatch Logs.
    type: dict
    suboptions:
      enabled:
        description: Whether CloudWatch output is on.
        type: bool
        default: true
      log_group_name:
        description: Log group; SSM uses C(/aws/ssm/<document name>) when not set.
        type: str
  poll_interval:
    description: Seconds between two polls of a partition's commands, tasks and agents.
    type: float
    default: 10.0
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
  - cms.patching.results
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Patch a wave of two regions, rolling back what fails
  cms.patching.ssm_patch_wave:
    run_id: "{{ cms_patching_run_id }}"
    instances:
      - {instance_id: i-0123456789abcdef0, region: eu-west-1, platform: linux, precheck_commands: ["test -d /var"]}
      - {instance_id: i-0fedcba9876543210, region: us-east-1, platform: windows, restart_services: [W3SVC]}
  register: wave

- name: Show what each step did
  ansible.builtin.debug:
    var: wave.summary
"""

RETURN = r"""
results:
  description:
    - One entry per instance, in the order of O(instances), as the run report stores it (C(docs/report-schema.md)).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: The instance., type: str}
    final_status: {description: "V(patched), V(failed) or V(rolled_back) (absent in check mode).", type: str}
    reason: {description: "Why it failed or was rolled back (absent when patched, and in check mode).", type: str}
    failed_step: {description: "With C(reason=rollback_failed), the failure that caused the rollback.", type: str}
    patch:
      description: "The patch step's result (C(outcome), C(command_id), C(compliance_before), C(recovery) (the agent recovery attempts), ...),
        null when not patched."
      type: dict
    services: {description: "The service restarts' C(outcome) and C(error).", type: dict}
    validation: {description: "C(passed) and C(failures) after the patch ran.", type: dict}
    rollback: {description: "C(performed), C(status), C(image_id), C(error).", type: dict}
    capacity:
      description:
        - "For instances with serving target groups or in standby mode: C(mode) (V(drain) or V(standby)), C(target_groups),
          C(asg_name), C(drained) (target group names deregistered), C(standby), C(back_in_service), C(healthy), and
          C(recovered) when an earlier run's tags were put back. In check mode C(would_drain) and C(would_enter_standby)."
      type: dict
    steps:
      description:
        - "Per step the instance went through (V(recover), V(gate), V(precheck), V(drain), V(patch), V(restart), V(health),
          V(register), V(rollback), V(reregister)): C(started_at) and C(ended_at) (ISO 8601 UTC, the partition's step),
          C(outcome) and C(error)."
      type: dict
outcomes:
  description: "C(final_status), C(reason), C(failed_step) and C(error) (of the step it failed at) by instance id."
  returned: always
  type: dict
summary:
  description: "C(steps) (per step C(passed) and C(failed)), C(final_status) (count per status) and C(total)."
  returned: always
  type: dict
  sample: {"total": 3, "steps": {"gate": {"passed": 3, "failed": 0}, "patch": {"passed": 2, "failed": 1}}, "final_status": {"patched": 2, "rolled_back": 1}}
partitions:
  description: One entry per partition (C(account_id), C(region), C(instance_count), C(errors) of steps whose call failed as a whole).
  returned: always
  type: list
  elements: dict
tag_errors: {description: Status tags that could not be written., returned: always, type: list, elements: str}
run_id: {description: The run id., returned: always, type: str}
snapshot_id: {description: The C(SnapshotId) GUID sent to every instance., returned: always, type: str}
wave_time: {description: The wave's time in the C(cms-patching:last-patched-at) tag., returned: always, type: str}
mode: {description: O(mode)., returned: always, type: str}
verdict:
  description: "With O(mode=patch): V(go), or what stopped the run - V(alarm), V(bake_unhealthy), V(stop), V(unreadable), or the O(gates.hold) verdict."
  returned: with O(mode=patch)
  type: str
stopped_at:
  description: "V(gate) (no wave started), V(bake) (after the wave), or null."
  returned: with O(mode=patch)
  type: str
alarm_name: {description: The alarm found firing (with V(alarm))., returned: with O(mode=patch), type: str}
target_group: {description: The target group with an unhealthy target (with V(bake_unhealthy))., returned: with O(mode=patch), type: str}
gate: {description: "The gates' read before the wave (as M(cms.patching.wave_gate) returns it), or null.", returned: with O(mode=patch), type: dict}
bake: {description: "The bake's last read (with C(polls) and C(watched)), or null when there was no bake.", returned: with O(mode=patch), type: dict}
recovered:
  description: The O(recover) instances' entries (C(steps), C(capacity)) when something was put back, as O(mode=recover) returns them.
  returned: with O(mode=patch)
  type: list
  elements: dict
deadline_passed: {description: Whether O(not_after) had passed (the wave did not start)., returned: with O(mode=patch), type: bool}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.errors import RESULT_ARGS, exit_with
from ansible_collections.cms.patching.plugins.module_utils.gates import GateReader, validate as validate_gates
from ansible_collections.cms.patching.plugins.module_utils.patch_run import PATCH_ARGS
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import RUNNER_ARGS
from ansible_collections.cms.patching.plugins.module_utils.wave_engine import no_success_message, partitions, run_gated_wave, run_wave, validate


def wave(module):
    params = module.params
    checked = []  # before any AWS call, STS included
    if params["instances"] or not params["recover"]:
        checked += validate(params)
    if params["recover"]:
        checked += validate(dict(params, instances=params["recover"], mode="recover"))
    for region in sorted({key[1] for key, _members in partitions(checked)}):
        validate_region(region, "ssm")

    def session_for(_account_id, region, role_arn, external_id):
        return AwsSession(module, region, role_arn or params.get("role_arn"), params.get("role_session_name"),
                          external_id or params.get("external_id"))

    def gate_reader(targets):
        """One read of every gate, with sessions of its own (the module's credentials, or an alarm's role)."""
        opts = params["gates"]
        alarms, prefix = validate_gates(dict(opts, poll_interval=params["poll_interval"]))
        sessions = {}

        def client_for(service, region, role_arn, external_id):
            key = (region, role_arn, external_id)
            if key not in sessions:
                sessions[key] = AwsSession(module, region, role_arn, "cms-patching-gate", external_id)
            return sessions[key].client(service)

        return GateReader(client_for, alarms, prefix, AwsSession(module).region, opts["stop_parameter"], opts["alarm_on_missing_data"],
                          targets).read

    if params["mode"] == "patch":
        result = run_gated_wave(params, module.check_mode, session_for, gate_reader)
    else:
        result = run_wave(params, module.check_mode, session_for)
    for error in result["tag_errors"]:
        module.warn(error)
    return result


def main():
    runner_args = {k: v for k, v in RUNNER_ARGS.items() if k != "wait"}  # a wave always waits for its steps
    argument_spec = dict(
        instances=dict(type="list", elements="dict", required=True, options=dict(
            instance_id=dict(type="str", required=True),
            region=dict(type="str"),
            account_id=dict(type="str"),
            role_arn=dict(type="str"),
            external_id=dict(type="str", no_log=True),
            platform=dict(type="str", choices=["linux", "windows"]),
            precheck_commands=dict(type="list", elements="str"),
            restart_services=dict(type="list", elements="str"),
            health_checks=dict(type="list", elements="str"),
            backup_planned=dict(type="bool", default=False),
            target_groups=dict(type="list", elements="dict", options=dict(
                arn=dict(type="str", required=True),
                name=dict(type="str"),
                port=dict(type="int"),
                state=dict(type="str"),
                reason=dict(type="str"),
                deregistration_delay=dict(type="int"),
            )),
            asg_name=dict(type="str"),
            asg_mode=dict(type="str", choices=["in_place", "standby"], default="in_place"),
            capacity_tags=dict(type="dict"),
        )),
        recover=dict(type="list", elements="dict", default=[]),
        not_after=dict(type="str"),
        gates=dict(type="dict", options=dict(
            alarms=dict(type="list", elements="raw", default=[]),
            alarm_prefix=dict(type="str", default=""),
            alarm_on_missing_data=dict(type="bool", default=False),
            stop_parameter=dict(type="str", default="/cms-patching/stop"),
            bake_time=dict(type="int", default=0),
            hold=dict(type="str", default=""),
        )),
        mode=dict(type="str", choices=["patch", "restore", "recover"], default="patch"),
        require_backup=dict(type="bool", default=True),
        max_backup_age_hours=dict(type="float"),
        rollback=dict(type="bool", default=True),
        rollback_timeout=dict(type="int", default=1800),
        command_timeout=dict(type="int", default=600),
        status_tags=dict(type="bool", default=True),
        partition_concurrency=dict(type="int", default=8),
        drain_timeout=dict(type="int"),
        lb_healthy_timeout=dict(type="int", default=600),
        standby_timeout=dict(type="int", default=600),
        **PATCH_ARGS,
        **runner_args,
        **ASSUME_ROLE_ARGS,
        **RESULT_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True,
                              mutually_exclusive=[("install_override_list", "baseline_override")])
    exit_with(module, "ssm_patch_wave", wave, judge=lambda result: no_success_message(result, module.check_mode))


if __name__ == "__main__":
    main()
