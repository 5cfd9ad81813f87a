#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ami_backup_info
version_added: 0.1.0
short_description: Find each instance's newest verified pre-patch AMI made by cms.patching
description:
  - Looks up, for each instance, the newest image tagged C(cms-patching:managed=true) and
    C(cms-patching:verified=true) whose C(cms-patching:source-instance) is that instance, as
    M(cms.patching.ami_backup_verify) leaves them. The tags are the only state, so a separate, later run finds the
    backups in AWS alone.
  - One batched C(DescribeImages) per 200 instances, whatever the number of images. The instances themselves are
    not looked up, so backups of terminated instances are found too.
  - Read-only; check mode is supported.
author:
  - cms.patching contributors (@cms-patching)
options:
  instance_ids:
    description:
      - IDs of the instances whose backups to find.
    type: list
    elements: str
    required: true
  max_age_hours:
    description:
      - Ignore backups older than this many hours (by their C(cms-patching:created-at) tag). Such an instance gets
        null, as if it had none.
    type: float
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
"""

EXAMPLES = r"""
- name: Find the newest verified backups no older than a day
  cms.patching.ami_backup_info:
    instance_ids: "{{ instance_ids }}"
    max_age_hours: 24
  register: found

- name: Fail the instances without one
  ansible.builtin.fail:
    msg: "no verified backup of {{ item }}"
  loop: "{{ found.missing }}"
"""

RETURN = r"""
backups:
  description:
    - One key per instance id given. The value is the instance's newest verified backup, or null when it has none
      (or only ones older than O(max_age_hours)).
  returned: always
  type: dict
  sample:
    i-0123456789abcdef0:
      instance_id: i-0123456789abcdef0
      image_id: ami-0123456789abcdef0
      name: cms-patching-i-0123456789abcdef0-20240501T120000Z-20240501T120000Z-a1b2c3
      created_at: "2024-05-01T12:00:00Z"
      age_hours: 2.5
      verified: true
      run_id: 20240501T120000Z-a1b2c3
      snapshot_ids: [snap-0123456789abcdef0]
    i-0fedcba9876543210: null
  contains:
    instance_id:
      description: The instance.
      type: str
    image_id:
      description: The backup image.
      type: str
    name:
      description: The image name.
      type: str
    created_at:
      description: When the backup was started (ISO 8601, UTC).
      type: str
    age_hours:
      description: Its age in hours now.
      type: float
    verified:
      description: Always true, since only verified backups are returned.
      type: bool
    run_id:
      description: The run that created it.
      type: str
    snapshot_ids:
      description: The snapshots in its block device mappings.
      type: list
      elements: str
missing:
  description: The instance ids without a (young enough) verified backup, in the order given.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.backup.images import find_verified_backups
from ansible_collections.cms.patching.plugins.module_utils.errors import exit_with, require_positive, validate_instance_ids


def backup_info(module):
    ids = module.params["instance_ids"]
    validate_instance_ids(ids)
    require_positive(module.params, ["max_age_hours"])
    session = AwsSession.from_module(module)
    validate_region(session.region)  # a mistyped region must not reach the endpoint
    backups = find_verified_backups(session.client("ec2"), ids, module.params["max_age_hours"])
    return dict(changed=False, backups=backups, missing=[i for i in ids if backups[i] is None])


def main():
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str", required=True),
        max_age_hours=dict(type="float"),
    )
    argument_spec.update(ASSUME_ROLE_ARGS)
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ami_backup_info", backup_info)


if __name__ == "__main__":
    main()
