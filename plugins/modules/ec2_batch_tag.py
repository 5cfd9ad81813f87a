#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_batch_tag
short_description: Put the same tags on many EC2 resources with batched CreateTags calls
version_added: 0.1.0
description:
  - Adds (or overwrites) O(tags) on every resource of O(resource_ids) with one C(CreateTags) call per 500 resources.
    M(amazon.aws.ec2_tag) makes one call per resource, which at fleet size costs thousands of calls and throttling.
  - It does not read the current tags first, so it always reports C(changed) when there is something to tag.
  - Check mode makes no call.
options:
  resource_ids:
    description: Ids of instances, images, snapshots or volumes.
    type: list
    elements: str
    required: true
  tags:
    description:
      - Tags to set. Keys starting with C(aws:) are reserved by AWS and rejected.
    type: dict
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Record a wave's outcome on its instances
  cms.patching.ec2_batch_tag:
    region: us-east-1
    resource_ids: "{{ patched_ids }}"
    tags:
      "cms-patching:last-patch-status": patched
"""

RETURN = r"""
tagged:
  description: Number of resources tagged (would be tagged, in check mode).
  returned: always
  type: int
calls:
  description: Number of C(CreateTags) calls made.
  returned: always
  type: int
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.tagging import ansible_dict_to_boto3_tag_list

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.batching import chunked
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, exit_with

BATCH = 500
ID_PREFIXES = ("i-", "ami-", "snap-", "vol-")


def tag_resources(module):
    ids, tags = module.params["resource_ids"], module.params["tags"]
    bad = [r for r in ids if not str(r).startswith(ID_PREFIXES)]
    if bad:
        raise PatchingError(f"not an instance, image, snapshot or volume id: {', '.join(map(str, bad))}")
    reserved = [k for k in tags if str(k).lower().startswith("aws:") or not str(k).strip() or len(str(k)) > 128]
    if reserved:
        raise PatchingError(f"invalid tag key(s): {', '.join(map(str, reserved))} (aws: is reserved; 1 to 128 characters)")
    if not ids or not tags:
        return dict(changed=False, tagged=0, calls=0)
    if module.check_mode:
        return dict(changed=True, tagged=len(ids), calls=0)
    session = AwsSession.from_module(module)
    validate_region(session.region)
    ec2 = session.client("ec2")
    calls = 0
    for chunk in chunked(ids, BATCH):
        ec2.create_tags(Resources=chunk, Tags=ansible_dict_to_boto3_tag_list({k: str(v) for k, v in tags.items()}))
        calls += 1
    return dict(changed=True, tagged=len(ids), calls=calls)


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(resource_ids=dict(type="list", elements="str", required=True), tags=dict(type="dict", required=True), **ASSUME_ROLE_ARGS),
        supports_check_mode=True,
    )
    exit_with(module, "ec2:CreateTags", tag_resources)


if __name__ == "__main__":
    main()
