#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ssm_command_run
short_description: Run checks, service restarts and health checks on many instances through SSM Run Command
version_added: 0.1.0
description:
  - Runs commands with C(AWS-RunShellScript) on Linux and C(AWS-RunPowerShellScript) on Windows, the document chosen by each
    instance's platform (given in O(targets), otherwise read with C(DescribeInstanceInformation) in batches of 50).
  - Instances with the same document and commands form a group; each group is one C(SendCommand) per 50 instances. All the
    commands are polled together with one C(ListCommands) per poll; a command's invocations are listed once it has finished.
  - Any non-zero exit fails the instance. Linux scripts run with C(set -e); on Windows each command is followed by a check of C($?).
  - "O(services) restarts each service (C(systemctl restart) / C(Restart-Service)), waits up to 30 seconds for it to be active
    and fails the instance if it is not (C(systemctl is-active) / C(Get-Service))."
  - Outcomes as in M(cms.patching.ssm_patch_run) (V(success), V(failed), V(timed_out), V(delivery_timed_out), V(undeliverable),
    V(cancelled), V(terminated)); O(execution_timeout) is enforced the same way, with C(CancelCommand).
  - "Instances SSM does not know, or whose platform is neither Linux nor Windows, are not sent to and end V(undeliverable).
    Those SSM does not know are looked up in EC2 (C(DescribeInstances) with the C(instance-id) filter): one EC2 does not
    know in this account and region, or knows as terminated, ends V(not_found) instead."
  - Check mode sends nothing and reports V(would_run).
options:
  step:
    description:
      - Step name, the third word of every command's C(Comment) C(cms-patching <run-id> <step> <token>).
      - V(precheck), V(restart) and V(health) are the documented steps of the patching workflow; another lower-case word of at most
        20 characters may name a custom step.
      - Steps V(precheck) and V(health) only look, so they never report C(changed).
    type: str
    required: true
  instance_ids:
    description: Instances that all run O(commands) and O(services); their platform is read from SSM.
    type: list
    elements: str
    default: []
  targets:
    description: Instances with their own platform, commands or services. Unset keys fall back to O(commands) and O(services).
    type: list
    elements: dict
    default: []
    suboptions:
      instance_id:
        description: The instance.
        type: str
        required: true
      platform:
        description: Its platform; read from SSM when not given.
        type: str
        choices: [linux, windows]
      commands:
        description: Its commands (shell on Linux, PowerShell on Windows), each entry a complete command.
        type: list
        elements: str
      services:
        description: Services to restart and check.
        type: list
        elements: str
  commands:
    description: Commands for every instance (each entry a complete command), run after the service restarts.
    type: list
    elements: str
    default: []
  services:
    description: Services to restart on every instance, then check that each is active.
    type: list
    elements: str
    default: []
  execution_timeout:
    description:
      - Seconds from C(SendCommand) after which the module cancels invocations still open; also passed to the document as its
        C(executionTimeout).
    type: int
    default: 600
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
- name: Restart services after patching
  cms.patching.ssm_command_run:
    step: restart
    run_id: "{{ cms_patching_run_id }}"
    instance_ids: "{{ wave_ids }}"
    services: [nginx]

- name: Health checks per instance
  cms.patching.ssm_command_run:
    step: health
    targets:
      - instance_id: i-0123456789abcdef0
        platform: linux
        commands: ["curl -fsS http://localhost/health"]
      - instance_id: i-0fedcba9876543210
        platform: windows
        commands: ["Invoke-WebRequest -UseBasicParsing http://localhost/health"]
"""

RETURN = r"""
results:
  description: One entry per instance, O(targets) first, then O(instance_ids).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: The instance., type: str}
    platform: {description: V(linux) or V(windows) (null when unknown)., type: str}
    document: {description: The document sent., type: str, sample: AWS-RunShellScript}
    step: {description: The step., type: str}
    command_id: {description: The SSM command (null when nothing was sent)., type: str}
    status: {description: The invocation's last C(Status)., type: str}
    status_details: {description: The invocation's last C(StatusDetails)., type: str}
    outcome:
      description:
        - The outcome; V(would_run) in check mode and V(sent) with O(wait=false).
        - V(not_found) when EC2 does not know the instance in this account and region (or it is terminated).
        - V(success), V(would_run) and V(sent) count as success for O(fail_on_no_success).
      type: str
    output_excerpt:
      description:
        - At most 500 characters of the output. For a failure, the end of its stderr (and of its stdout) as
          C(GetCommandInvocation) returns them; otherwise the end of the C(ListCommandInvocations) output.
      type: str
    output_truncated: {description: True when the excerpt shows less than the whole output (SSM or the excerpt cut it)., type: bool}
    output_location:
      description: Where the whole output is (S3 prefix, CloudWatch Logs group) when O(output_s3_bucket_name) or O(cloudwatch_output) is set.
      type: str
    error: {description: Why the outcome is not V(success) (null otherwise)., type: str}
summary: {description: Number of instances per outcome plus C(total)., returned: always, type: dict, sample: {"total": 2, "success": 2}}
run_id: {description: The run id used in every C(Comment)., returned: always, type: str}
step: {description: The step., returned: always, type: str}
commands:
  description: One entry per C(SendCommand).
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.command_run import no_success, run_commands, validate
from ansible_collections.cms.patching.plugins.module_utils.errors import RESULT_ARGS, exit_with
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import RUNNER_ARGS


def run(module):
    validate(module.params)  # before any AWS call, STS included
    session = AwsSession.from_module(module)
    validate_region(session.region, "ssm")
    # SendCommand goes through a client that never retries by itself: the runner retries it without duplicates.
    return run_commands(session.client("ssm"), module.params, module.check_mode, send_client=session.client("ssm", max_attempts=1),
                        ec2=session.client("ec2"))


def main():
    argument_spec = dict(
        step=dict(type="str", required=True),
        instance_ids=dict(type="list", elements="str", default=[]),
        targets=dict(type="list", elements="dict", default=[], options=dict(
            instance_id=dict(type="str", required=True),
            platform=dict(type="str", choices=["linux", "windows"]),
            commands=dict(type="list", elements="str"),
            services=dict(type="list", elements="str"),
        )),
        commands=dict(type="list", elements="str", default=[]),
        services=dict(type="list", elements="str", default=[]),
        execution_timeout=dict(type="int", default=600),
        **RUNNER_ARGS,
        **ASSUME_ROLE_ARGS,
        **RESULT_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ssm_command_run", run, judge=no_success)


if __name__ == "__main__":
    main()
