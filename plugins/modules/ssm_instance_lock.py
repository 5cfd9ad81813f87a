#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ssm_instance_lock
short_description: Per-instance run locks in SSM Parameter Store, so two runs never work on the same instance together
version_added: 0.1.0
description:
  - Each instance's lock is the SSM parameter C(/cms-patching/locks/<instance-id>), created with C(PutParameter) and
    C(Overwrite=false), so that of two runs writing at the same time exactly one wins (SSM answers the other
    C(ParameterAlreadyExists)). Tags cannot do this, they have no compare-and-set.
  - The value holds the run id, an expiry (O(ttl) from now) and a random token.
  - A lock held by the same O(run_id) is re-entrant (phases, resumed invocations and AWX job slices of one run share it);
    its expiry is renewed.
  - A lock of another run past its expiry is taken over. Two runs taking over the same expired lock cannot both win; the
    takeover is first claimed by creating C(/cms-patching/takeovers/<instance-id>/<token>) with C(Overwrite=false).
  - Instances locked by another run are not an error; they are returned as V(locked_by_other_run) with the holder, so the
    caller can skip them.
  - O(state=released) deletes only the locks this O(run_id) holds (C(DeleteParameters), 10 names per call).
  - Check mode only reads (C(GetParameters), 10 names per call) and reports what would happen.
options:
  state:
    description:
      - V(acquired) locks the instances for O(run_id); V(released) gives this run's locks back.
    type: str
    choices: [acquired, released]
    default: acquired
  instance_ids:
    description: Instances to lock or release.
    type: list
    elements: str
    required: true
  run_id:
    description: The run that holds the locks (C(cms_patching_run_id)).
    type: str
    required: true
  ttl:
    description:
      - Seconds a lock is valid; after that another run may take it over. Make it longer than the run (backup and all waves).
      - At most 604800 (7 days).
    type: int
    default: 14400
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Lock the wave's instances for this run
  cms.patching.ssm_instance_lock:
    region: us-east-1
    instance_ids: "{{ wave_ids }}"
    run_id: "{{ cms_patching_run_id }}"
    ttl: 14400
  register: locks

- name: Skip the ones another run holds
  ansible.builtin.debug:
    msg: "locked_by_other_run: {{ locks.locked_by_other_run }}"

- name: Release them at the end of the run
  cms.patching.ssm_instance_lock:
    region: us-east-1
    state: released
    instance_ids: "{{ wave_ids }}"
    run_id: "{{ cms_patching_run_id }}"
"""

RETURN = r"""
results:
  description: One entry per instance, in the order of O(instance_ids).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance.
      type: str
    status:
      description:
        - V(acquired), V(locked_by_other_run) (O(state=acquired)); V(released), V(locked_by_other_run), V(not_locked)
          (O(state=released)).
      type: str
    how:
      description: For V(acquired), V(new), V(reentrant) (this run already held it) or V(taken_over) (it had expired).
      type: str
    owner:
      description: The lock's holder after the call (C(run_id), C(expires_at)), or null when there is no lock.
      type: dict
  sample:
    - {instance_id: i-0123456789abcdef0, status: acquired, how: new, owner: {run_id: 20250101T000000Z-abc123, expires_at: "2025-01-01T04:00:00Z"}}
acquired:
  description: Instances this run holds now.
  returned: always
  type: list
  elements: str
locked_by_other_run:
  description: Instances another run holds (skip them with reason C(locked_by_other_run)).
  returned: always
  type: list
  elements: str
taken_over:
  description: Instances whose expired lock of another run was taken over.
  returned: always
  type: list
  elements: str
released:
  description: Instances whose lock this run gave back.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.errors import exit_with
from ansible_collections.cms.patching.plugins.module_utils.locks import run_locks, validate_lock_params


def lock_instances(module):
    validate_lock_params(module.params)  # before any AWS call, STS included
    session = AwsSession.from_module(module)
    validate_region(session.region, "ssm")
    return run_locks(session.client("ssm"), module.params, module.check_mode)


def main():
    argument_spec = dict(
        state=dict(type="str", choices=["acquired", "released"], default="acquired"),
        instance_ids=dict(type="list", elements="str", required=True),
        run_id=dict(type="str", required=True),
        ttl=dict(type="int", default=14400),
        **ASSUME_ROLE_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ssm_instance_lock", lock_instances)


if __name__ == "__main__":
    main()
