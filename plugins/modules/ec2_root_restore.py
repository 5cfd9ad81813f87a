#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_root_restore
short_description: Roll instances back by replacing their root volume from a pre-patch AMI
version_added: 0.1.0
description:
  - For each instance, starts C(CreateReplaceRootVolumeTask) with the given C(ImageId). The old root volume is kept by default
    (C(DeleteReplacedRootVolume=false)) so that nothing is lost. Only the root volume is replaced; other volumes stay as they are.
  - Before starting anything it reads the instances and images (batched) and refuses, per instance, an instance that is not
    running, an image that is not available, and an image whose C(cms-patching:source-instance) tag names another instance.
  - With O(wait=true) it polls C(DescribeReplaceRootVolumeTasks) for all tasks at once until each is C(succeeded), C(failed) or
    C(failed-detached), then waits for the SSM agents (C(DescribeInstanceInformation), batches of 50) to be Online again.
  - Check mode starts nothing and reports V(would_restore) for every instance that passes the checks.
options:
  instances:
    description: The instances to restore, each with the image to restore from.
    type: list
    elements: dict
    required: true
    suboptions:
      instance_id:
        description: The instance.
        type: str
        required: true
      image_id:
        description: Its pre-patch AMI.
        type: str
        required: true
  delete_replaced_root_volume:
    description: C(DeleteReplacedRootVolume). Keep the default V(false) unless the old volume is really not needed.
    type: bool
    default: false
  run_id:
    description: Run id written, with C(cms-patching:managed=true), as tags on each replace-root-volume task.
    type: str
  wait:
    description: Wait for the tasks and the agents. With V(false) the module returns after starting the tasks (status V(started)).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the replace-root-volume tasks.
    type: int
    default: 1800
  agent_online_timeout:
    description: Seconds to wait, after a task succeeded, for the instance's SSM agent to be Online.
    type: int
    default: 900
  poll_interval:
    description: Seconds between two polls.
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
- name: Roll back the hosts whose patch failed
  cms.patching.ec2_root_restore:
    region: eu-west-1
    run_id: "{{ cms_patching_run_id }}"
    instances:
      - instance_id: i-0123456789abcdef0
        image_id: ami-0123456789abcdef0
  register: rollback
"""

RETURN = r"""
results:
  description: One entry per instance, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: The instance., type: str}
    image_id: {description: The image restored from., type: str}
    status:
      description:
        - V(succeeded) (task succeeded and agent Online), V(failed), V(would_restore) (check mode) or V(started) (O(wait=false)).
        - All but V(failed) count as success for O(fail_on_no_success).
      type: str
    task_id: {description: The replace-root-volume task (null when none was started)., type: str}
    task_state: {description: The task's last state., type: str, sample: succeeded}
    agent_online: {description: Whether the SSM agent was Online after the restore (null when not checked)., type: bool}
    error: {description: Why the restore failed (null otherwise)., type: str}
    error_code:
      description: The AWS error code when AWS refused C(CreateReplaceRootVolumeTask) (null otherwise).
      type: str
      sample: UnauthorizedOperation
summary: {description: Number of instances per status plus C(total)., returned: always, type: dict, sample: {"total": 2, "succeeded": 2}}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.errors import RESULT_ARGS, exit_with
from ansible_collections.cms.patching.plugins.module_utils.root_restore import no_success, run_restore, validate
from ansible_collections.cms.patching.plugins.module_utils.ssm.options import resolve_run_id


def restore(module):
    validate(module.params)  # before any AWS call, STS included
    if module.params["run_id"] is not None:
        resolve_run_id(module.params["run_id"])
    session = AwsSession.from_module(module)
    validate_region(session.region)
    return run_restore(session.client("ec2"), session.client("ssm"), module.params, module.check_mode)


def main():
    argument_spec = dict(
        instances=dict(type="list", elements="dict", required=True, options=dict(
            instance_id=dict(type="str", required=True),
            image_id=dict(type="str", required=True),
        )),
        delete_replaced_root_volume=dict(type="bool", default=False),
        run_id=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
        agent_online_timeout=dict(type="int", default=900),
        poll_interval=dict(type="float", default=10.0),
        **ASSUME_ROLE_ARGS,
        **RESULT_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ec2_root_restore", restore, judge=no_success)


if __name__ == "__main__":
    main()
