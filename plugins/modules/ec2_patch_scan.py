#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ec2_patch_scan
short_description: Find EC2 instances and decide which ones can be patched through SSM
version_added: 0.1.0
description:
  - Read-only discovery for the patching workflow. Lists instances with C(DescribeInstances) (paginated), adds their SSM
    facts from C(DescribeInstanceInformation) and compliance counts from C(DescribeInstancePatchStates), both in batches of 50,
    and classifies every instance as eligible or not, with reason codes.
  - With O(read_topology), it also reads what serves traffic in the account and region, with no call per instance, that is each
    instance's availability zone (from C(DescribeInstances)), its ELBv2 target groups with port, health and deregistration
    delay (C(DescribeTargetGroups), C(DescribeLoadBalancers), one C(DescribeTargetHealth) per target group, and
    C(DescribeTargetGroupAttributes) for the groups holding a scanned instance) and its Auto Scaling group
    (C(DescribeAutoScalingGroups), 50 names per call). A target of a group no load balancer uses, or in a zone its load
    balancers have not enabled, is V(unused) (C(Target.NotInUse)). A missing read permission fails the scan with one line.
  - "Reason codes: V(not_running), V(excluded_by_tag), V(asg_member), V(no_ebs_root), V(ssm_unmanaged), V(ssm_offline),
    V(unsupported_platform), V(not_in_patch_group)."
  - For N instances it makes about ceil(N/1000) + 2 * ceil(N/50) API calls. It never changes anything, and check mode gives the same result.
options:
  instance_ids:
    description:
      - Instances to scan. Every id must exist in O(region), otherwise the module fails and names the missing ones.
      - When empty, every non-terminated instance matching O(filters) is scanned.
    type: list
    elements: str
    default: []
  filters:
    description:
      - "EC2 C(DescribeInstances) filters, in the same format as M(amazon.aws.ec2_instance_info), for example C({\"tag:Environment\": \"prod\"})."
    type: dict
    default: {}
  patch_groups:
    description:
      - Only instances whose C(Patch Group) (else C(PatchGroup)) tag has one of these values are eligible.
      - Every other instance is still returned, ineligible with reason V(not_in_patch_group), so that the report says
        why it was left alone. This is the rule the discovery role applies with C(discovery_patch_groups).
      - To leave other instances out of the scan entirely, narrow it with O(filters) or O(instance_ids) instead.
    type: list
    elements: str
    default: []
  exclude_tags:
    description:
      - An instance carrying any of these tag/value pairs is ineligible with reason V(excluded_by_tag).
    type: dict
    default: {"cms-patching:exclude": "true"}
  asg_mode:
    description:
      - What to do with members of an Auto Scaling group (tag C(aws:autoscaling:groupName)).
      - V(skip) makes them ineligible with reason V(asg_member), because patching them in place fights the group (it may
        replace an instance that fails its health check mid-patch).
      - V(in_place) and V(standby) make them eligible; the patching waves then patch them in place, or in standby.
    type: str
    choices: [skip, in_place, standby]
    default: skip
  allow_asg_members:
    description:
      - Deprecated, use O(asg_mode=in_place). V(true) turns O(asg_mode=skip) into V(in_place).
    type: bool
    default: false
  read_topology:
    description:
      - Whether to read the target groups and Auto Scaling groups (see above). V(false) still gives each instance its zone.
    type: bool
    default: true
  page_size:
    description:
      - Instances per C(DescribeInstances) page (5 to 1000). The default makes the fewest calls; smaller pages keep responses small.
    type: int
    default: 1000
  include_patch_state:
    description:
      - Whether to read compliance counts with C(DescribeInstancePatchStates). V(false) saves ceil(N/50) calls.
    type: bool
    default: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Scan two patch groups in one account and region (other instances come back with reason not_in_patch_group)
  cms.patching.ec2_patch_scan:
    region: eu-west-1
    patch_groups: [web, db]
  register: scan

- name: Scan given instances in another account
  cms.patching.ec2_patch_scan:
    region: us-east-1
    role_arn: arn:aws:iam::222222222222:role/cms-patching
    instance_ids: [i-0123456789abcdef0, i-0fedcba9876543210]

- name: Show why instances are skipped
  ansible.builtin.debug:
    msg: "{{ scan.instances | rejectattr('eligible') | items2dict(key_name='instance_id', value_name='reasons') }}"
"""

RETURN = r"""
instances:
  description: One entry per instance found, sorted by instance id.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: The instance id., type: str, sample: i-0123456789abcdef0}
    name: {description: The C(Name) tag., type: str}
    state: {description: EC2 state name., type: str, sample: running}
    region: {description: The region., type: str}
    account_id: {description: Owning account., type: str}
    platform:
      description:
        - C(linux), C(windows) or what SSM reports (lower case, for example C(macos)).
        - SSM's platform type when SSM manages the instance, else EC2's C(Platform)/C(PlatformDetails); the same rule as
          the P(cms.patching.ec2_fleet#inventory) inventory's C(platform).
      type: str
    patch_group: {description: Value of the C(Patch Group) or C(PatchGroup) tag., type: str}
    ssm:
      description: SSM facts (ping_status, platform_type, platform_name, platform_version, agent_version, last_ping); all null when unmanaged.
      type: dict
    patch_state:
      description: Compliance counts (missing, failed, installed, installed_other, installed_pending_reboot, installed_rejected,
        not_applicable, critical_non_compliant, security_non_compliant), the last operation and its end time, baseline_id
        and snapshot_id; empty when SSM has no patch state (or include_patch_state is false).
      type: dict
    root_device_type: {description: C(ebs) or C(instance-store)., type: str}
    root_device_name: {description: Root device name., type: str}
    ebs_volumes: {description: Ids of the attached EBS volumes., type: list, elements: str}
    tags: {description: All tags., type: dict}
    eligible: {description: Whether the instance can be patched., type: bool}
    reasons: {description: 'Reason codes when not eligible, in the order to fix them.', type: list, elements: str, sample: [ssm_offline]}
    zone: {description: The availability zone., type: str, sample: us-east-1a}
    target_groups:
      description:
        - One entry per target (group and port) of the instance in an ELBv2 target group of type instance, with C(arn),
          C(name), C(port), C(state) and C(reason) (from C(DescribeTargetHealth); V(unused) and C(Target.NotInUse) when the
          group serves nothing in the instance's zone) and C(deregistration_delay) (seconds).
      type: list
      elements: dict
    asg_name: {description: 'The C(aws:autoscaling:groupName) tag, or null.', type: str}
    asg:
      description:
        - The instance's Auto Scaling group when it is a member (C(arn), C(name), C(min_size), C(max_size),
          C(desired_capacity), and the instance's C(lifecycle_state) and C(health_status)), else null.
      type: dict
eligible_ids:
  description: Ids of the eligible instances.
  returned: always
  type: list
  elements: str
topology:
  description:
    - Member counts of every target group (by ARN; members are the targets that are not unused, healthy those that are
      healthy) and of the scanned instances' Auto Scaling groups (by ARN, with C(min_size), C(max_size) and
      C(desired_capacity)), for the wave plan's budget.
  returned: always
  type: dict
  sample: {"target_groups": {}, "auto_scaling_groups": {}}
asg_mode:
  description: The Auto Scaling mode applied (V(in_place) when the deprecated O(allow_asg_members) asked for it).
  returned: always
  type: str
summary:
  description: Totals and counts by reason.
  returned: always
  type: dict
  sample: {"total": 3, "eligible": 2, "ineligible": 1, "by_reason": {"ssm_offline": 1}}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils import tags as T
from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession, validate_region
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, exit_with, is_aws_error, validate_instance_ids
from ansible_collections.cms.patching.plugins.module_utils.scan import discover, scan_summary


def run_scan(module):
    params = module.params
    validate_instance_ids(params["instance_ids"])
    if not 5 <= params["page_size"] <= 1000:
        raise PatchingError(f"page_size must be between 5 and 1000, got {params['page_size']}")
    asg_mode = params["asg_mode"]
    if params["allow_asg_members"]:
        module.deprecate("allow_asg_members (discovery_allow_asg_members) is deprecated: use asg_mode=in_place (cms_patching_asg_mode)",
                         version="0.3.0", collection_name="cms.patching")
        if asg_mode == "skip":
            asg_mode = "in_place"
    session = AwsSession.from_module(module)
    validate_region(session.region)
    topology = {"elbv2": session.client("elbv2"), "autoscaling": session.client("autoscaling")} if params["read_topology"] else {}
    try:
        instances, summary = discover(
            session.client("ec2"), session.client("ssm"), session.region,
            instance_ids=params["instance_ids"], filters=params["filters"], patch_groups=params["patch_groups"],
            exclude_tags=params["exclude_tags"], include_patch_state=params["include_patch_state"],
            page_size=params["page_size"], asg_mode=asg_mode, **topology,
        )
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            raise PatchingError(aws_error_message(e, "scan", session.region)) from None
        raise
    return dict(
        changed=False,
        instances=[i.to_dict() for i in instances],
        eligible_ids=[i.instance_id for i in instances if i.eligible],
        topology=summary,
        asg_mode=asg_mode,
        summary=scan_summary(instances),
    )


def main():
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str", default=[]),
        filters=dict(type="dict", default={}),
        patch_groups=dict(type="list", elements="str", default=[]),
        exclude_tags=dict(type="dict", default={T.EXCLUDE: "true"}),
        asg_mode=dict(type="str", default="skip", choices=["skip", "in_place", "standby"]),
        allow_asg_members=dict(type="bool", default=False),
        read_topology=dict(type="bool", default=True),
        include_patch_state=dict(type="bool", default=True),
        page_size=dict(type="int", default=1000),
        **ASSUME_ROLE_ARGS,
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ec2_patch_scan", run_scan)


if __name__ == "__main__":
    main()
