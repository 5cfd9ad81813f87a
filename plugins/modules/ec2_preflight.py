#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_preflight
short_description: Pre-flight checks of instances and their account before any pre-patch image is made
version_added: 0.1.0
description:
  - For the instances of one account and region, checks what must hold before the backup phase makes an image of them.
    The backup role runs it before C(ami_backup_verify), once per account and region. The discovery role runs it with
    V(quota) alone before its plan tag, the run's first change, when a backup play follows (C(discovery_check_quota)).
  - "V(agent_version): the SSM agent (C(DescribeInstanceInformation) C(AgentVersion)) is at least O(min_agent_version)
    (2.0.834.0, the minimum C(AWS-RunPatchBaseline) needs), compared number by number. Else reason V(preflight_agent_version)."
  - "V(disk): the patching role's free-space pre-check (the root file system and C(/var) on Linux, C(C:) on Windows) must
    find O(min_free_mb) MB free. It is sent with C(AWS-RunShellScript) / C(AWS-RunPowerShellScript), one C(SendCommand)
    per 50 instances of a platform, and waited for. Else reason V(preflight_disk). A command that could not reach the
    instance (or an instance SSM does not manage) is a warning V(preflight_not_checked), not a failure: the wave's own
    pre-check stops it before any patch. Not sent in check mode."
  - "V(kms): a warning, never a failure: the KMS key of each encrypted EBS volume (C(DescribeVolumes)) must be enabled and
    readable with C(DescribeKey) through the credentials used for this account (O(role_arn)). Only EBS's own use of the key
    proves its grants, so nothing is refused on it."
  - "V(quota): the room left under the account's AMIs quota (EC2, C(L-B665C33B)) and Snapshots per Region quota (EBS,
    C(L-309BACF6)), read with Service Quotas C(GetServiceQuota), against the images this call's instances that passed
    need (O(planned_images)) and their EBS volumes' snapshots. In use: C(DescribeImages) (owner self, disabled images
    included) and C(DescribeSnapshots) (owner self); AMIs in the Recycle Bin also count against the quota and are not
    counted here. Not enough room is one line for the account (C(account.error)), which fails the call when
    O(fail_on_quota=true). A quota that cannot be read is a note (C(account.notes)), not a failure. Without V(disk) and
    V(agent_version) the SSM agents are not read."
  - Changes nothing in AWS.
options:
  instance_ids:
    description: The instances, all in this account and region.
    type: list
    elements: str
    required: true
  checks:
    description: The checks to run.
    type: list
    elements: str
    choices: [disk, agent_version, kms, quota]
    default: [disk, agent_version, kms, quota]
  min_free_mb:
    description: Free space, in MB, the V(disk) check needs on each file system it looks at.
    type: int
    default: 1024
  min_agent_version:
    description: The oldest SSM agent version that passes.
    type: str
    default: 2.0.834.0
  planned_images:
    description: Images this run will make in this account and region (default, the instances that passed).
    type: int
  fail_on_quota:
    description: Fail the call, with C(account.error) as its one line, when a quota leaves too little room.
    type: bool
    default: true
  command_timeout:
    description: Seconds the free-space command may run before it is cancelled.
    type: int
    default: 600
  delivery_timeout:
    description: SendCommand C(TimeoutSeconds) of the free-space command.
    type: int
    default: 600
  poll_interval:
    description: Seconds between two polls of the free-space command.
    type: float
    default: 10
  run_id:
    description: The run id, in the C(Comment) of the free-space command.
    type: str
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Check the instances of one account and region before backing them up
  cms.patching.ec2_preflight:
    region: eu-west-1
    role_arn: arn:aws:iam::222222222222:role/cms-patching
    instance_ids: [i-0123456789abcdef0, i-0fedcba9876543210]
    min_free_mb: 2048
  register: preflight
"""

RETURN = r"""
results:
  description: One entry per instance, in the order of O(instance_ids).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: The instance., type: str}
    passed: {description: Whether every check passed (warnings do not count)., type: bool}
    reason:
      description: The first failure, V(preflight_agent_version) or V(preflight_disk); null when it passed.
      type: str
    failures: {description: Every failure's reason code., type: list, elements: str}
    error: {description: "What failed, in one line (null when it passed).", type: str}
    warnings:
      description:
        - "Warnings, each C(code) and C(message): V(preflight_kms_key) (a KMS key disabled, pending deletion or unreadable),
          V(preflight_not_checked) (a check could not be made)."
      type: list
      elements: dict
    agent_version: {description: The SSM agent's version., type: str, sample: 3.3.987.0}
    disk:
      description: The free-space command's C(outcome), C(command_id), C(output_excerpt) and C(error) (null when not checked).
      type: dict
account:
  description:
    - "This account and region: C(region), C(account_id), C(quotas) (per V(amis) and V(snapshots): C(quota_code), C(value),
      C(used), C(room), C(planned)), C(error) (the one line when a quota leaves too little room, else null) and C(notes)."
  returned: always
  type: dict
failed_ids: {description: The instances that failed a check., returned: always, type: list, elements: str}
entries:
  description:
    - "Run report entries (M(cms.patching.run_report) O(cms.patching.run_report#module:instances)): each instance's C(preflight)
      section (C(passed), C(failures), C(error), C(warnings), C(agent_version)); a failed one also C(final_status=failed)
      and its C(reason)."
  returned: always
  type: list
  elements: dict
summary:
  description: Counts C(total), C(passed), C(failed) and C(warnings) (instances with one).
  returned: always
  type: dict
  sample: {"total": 3, "passed": 2, "failed": 1, "warnings": 0}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.errors import exit_with
from ansible_collections.cms.patching.plugins.module_utils.preflight import CHECKS, MIN_AGENT_VERSION, no_quota_error, run_preflight, validate
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import resolve_run_id


def preflight(module):
    validate(module.params)  # before any AWS call, STS included
    if module.params["run_id"] is not None:
        resolve_run_id(module.params["run_id"])
    session = AwsSession.from_module(module)
    validate_region(session.region)
    params = dict(module.params, region=session.region)
    return run_preflight(session.client, params, module.check_mode)


def main():
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str", required=True),
        checks=dict(type="list", elements="str", choices=list(CHECKS), default=list(CHECKS)),
        min_free_mb=dict(type="int", default=1024),
        min_agent_version=dict(type="str", default=MIN_AGENT_VERSION),
        planned_images=dict(type="int"),
        fail_on_quota=dict(type="bool", default=True),
        command_timeout=dict(type="int", default=600),
        delivery_timeout=dict(type="int", default=600),
        poll_interval=dict(type="float", default=10.0),
        run_id=dict(type="str"),
        **ASSUME_ROLE_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ec2_preflight", preflight, judge=lambda result: no_quota_error(result) if module.params["fail_on_quota"] else None)


if __name__ == "__main__":
    main()
