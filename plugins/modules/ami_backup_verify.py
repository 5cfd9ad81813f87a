#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ami_backup_verify
version_added: 0.1.0
short_description: Create verified pre-patch AMIs of many EC2 instances, reuse them safely and apply retention
description:
  - Creates one AMI of each instance in O(instance_ids), waits until every image is C(available) and every snapshot
    in its block device mappings is C(completed), checks that the image covers every EBS volume the instance had
    when the backup started, and then marks the image and its snapshots C(cms-patching:verified=true).
  - Ownership lives in AWS itself. Images and snapshots are created with the tags C(cms-patching:managed=true),
    C(cms-patching:source-instance), C(cms-patching:run-id) and C(cms-patching:created-at) (TagSpecifications), so a
    later, separate run (for example an AWX job in a fresh container) finds them with no local state file.
  - Fleet-sized. Instances are looked up with one paginated C(DescribeInstances), existing backups with one
    C(DescribeImages); all images in flight are polled together (one C(DescribeImages) and one C(DescribeSnapshots)
    per poll, whatever their number) and tagged verified with one batched C(CreateTags). Only C(CreateImage) is
    one call per instance, because AWS has no batched form of it.
  - Safe to re-run. A verified backup of the same O(run_id), or one younger than O(max_age_hours), is reused
    (status V(reused)). An unverified image (pending, or available but not yet verified) of the same O(run_id), or of
    any run when it was started less than O(wait_timeout) seconds ago (a killed run's), is adopted and verified
    instead of creating a second AMI.
  - Failures are per instance. An image that ends C(failed), or has a snapshot in C(error), is reported with its
    reason and deregistered together with its snapshots; the other instances go on. An image still pending when
    O(wait_timeout) passes is reported failed and left in place, so that a re-run adopts it.
  - Only images and snapshots tagged C(cms-patching:managed=true) are ever deregistered or deleted, whatever their
    name. Failed images of the tool left by earlier runs of the given instances are removed too.
  - An image whose snapshots are all the tool's is deregistered with C(DeleteAssociatedSnapshots), so EC2 deletes
    them with it (an endpoint that refuses the parameter gets a plain C(DeregisterImage)). Otherwise its own snapshots
    are deleted one by one; one still C(InvalidSnapshot.InUse) by the image just deregistered is retried every
    O(poll_interval), three times at most. Whenever retention is set or an image was removed, the tool's finished snapshots of the given
    instances that no image uses any more (left by a killed or an earlier run) are deleted too (RV(pruned) reason
    V(orphaned)).
  - In check mode nothing is created, tagged, deregistered or deleted; only C(Describe*) calls are made and the
    result says what would happen (status V(would_create), and the images O(retention_count) and
    O(retention_days) would remove under RV(pruned)).
author:
  - cms.patching contributors (@cms-patching)
options:
  instance_ids:
    description:
      - IDs of the instances to back up.
      - Every instance must exist (and not be terminated); otherwise the module fails with one line naming the
        missing ones, before anything is created.
    type: list
    elements: str
    required: true
  name:
    description:
      - Template of the AMI name. Placeholders are C({instance_id}), C({name}) (the instance's C(Name) tag, or its
        id when it has none), C({date}) (C(YYYY-MM-DD)), C({time}) (C(HHMMSS)), C({timestamp})
        (C(YYYYMMDDTHHMMSSZ)) and C({run_id}), all in UTC at the start of the run.
      - It must contain C({instance_id}), because AMI names are unique per region. Characters EC2 does not allow
        in AMI names are replaced by C(-) in placeholder values; in the template itself they are an error.
      - An unknown placeholder is an error before any AWS call.
    type: str
    default: "cms-patching-{instance_id}-{timestamp}-{run_id}"
  description:
    description:
      - Template of the AMI description, with the same placeholders as O(name). Cut to 255 characters.
    type: str
    default: "cms-patching pre-patch backup of {instance_id} ({name}), run {run_id}"
  no_reboot:
    description:
      - When V(true) (the default), the instance keeps running while its volumes are snapshotted. The image is
        then B(crash-consistent) only, like a power cut. Data still in memory or in page cache (databases,
        open files) may be missing or torn. This is the usual choice for patching, since it causes no downtime.
      - When V(false), EC2 shuts the instance down cleanly, snapshots it and starts it again. The image is then
        file-system consistent, at the cost of a reboot (and of downtime) of every instance before patching.
    type: bool
    default: true
  tags:
    description:
      - Extra tags for the images and their snapshots.
      - Keys starting with C(cms-patching:) or C(aws:) are reserved and rejected.
    type: dict
  run_id:
    description:
      - The id of this patching run. It goes into the C(cms-patching:run-id) tag, and a re-run with the same id
        reuses or adopts this run's images instead of creating new ones.
      - "1 to 64 letters, digits or C(. _ : @ + = -), starting with a letter or digit."
      - Generated (C(YYYYMMDDTHHMMSSZ-xxxxxx)) when not given; the value used is returned as RV(run_id).
    type: str
  create:
    description:
      - When V(false), no image is created or verified. The module only applies retention (and removes failed
        images of the tool) for the given instances, which need not exist any more; RV(backups) then reports each
        instance's newest verified backup with status V(existing), or V(missing).
    type: bool
    default: true
  wait:
    description:
      - Wait until every new or adopted image is verified or has failed.
      - When V(false), the module returns once every image is started (it still polls while O(max_concurrent)
        holds instances back); the images are reported V(created) with C(verified=false), and a later run with
        the same O(run_id) and O(wait=true) adopts and verifies them.
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait, in seconds, for all images in total. Large volumes take long to snapshot.
    type: int
    default: 3600
  poll_interval:
    description:
      - Seconds between two batched status polls.
    type: float
    default: 15
  max_concurrent:
    description:
      - At most this many images in flight at a time. Further instances are started as earlier images finish,
        which keeps EBS snapshot load and concurrent-snapshot quotas in check on large fleets.
    type: int
    default: 50
  max_age_hours:
    description:
      - Reuse an instance's newest verified backup (of any run) when it is younger than this many hours and has a
        snapshot for each of the instance's current EBS devices, instead of creating a new one.
      - When not set, only a verified backup of the same O(run_id) is reused.
    type: float
  retention_count:
    description:
      - Per instance, keep this many newest verified backups (this run's included) and remove older ones.
      - Pending images are never removed, and the newest verified backup of an instance is always kept when this
        run produced none.
    type: int
  retention_days:
    description:
      - Per instance, remove the tool's available images (verified or not) created more than this many days ago.
      - Combined with O(retention_count), an image is removed when either rule says so, with the same safeguards.
    type: int
  retention_min_age:
    description:
      - Whatever O(retention_count) and O(retention_days) say, an image younger than this many seconds is never removed.
      - The patching role's bake time (C(cms_patching_bake_time)) - a rollback during a bake restores from the wave's
        pre-patch AMI.
    type: int
    default: 0
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - cms.patching.assume_role
  - cms.patching.results
"""

EXAMPLES = r"""
- name: Back up the hosts of this run and keep three backups per instance
  cms.patching.ami_backup_verify:
    instance_ids: "{{ backup_instance_ids }}"
    run_id: "{{ cms_patching_run_id }}"
    name: "pre-patch-{name}-{instance_id}-{date}-{run_id}"
    tags:
      CostCenter: ops
    max_age_hours: 24
    retention_count: 3
  register: backup

- name: Only apply retention (no new images), for example from a clean-up job
  cms.patching.ami_backup_verify:
    instance_ids: "{{ instance_ids }}"
    create: false
    retention_days: 14

- name: Start the images without waiting; a later call with the same run_id adopts and verifies them
  cms.patching.ami_backup_verify:
    instance_ids: "{{ instance_ids }}"
    run_id: "{{ cms_patching_run_id }}"
    wait: false
"""

RETURN = r"""
run_id:
  description: The run id used (given or generated).
  returned: always
  type: str
  sample: 20240501T120000Z-a1b2c3
backups:
  description: One entry per instance, in the order of O(instance_ids).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The instance.
      type: str
      sample: i-0123456789abcdef0
    image_id:
      description: Its backup image, or null when none was created.
      type: str
      sample: ami-0123456789abcdef0
    name:
      description: The image name (the name it would get, in check mode).
      type: str
    state:
      description: The image state as last seen (C(pending), C(available), C(failed)).
      type: str
    snapshot_ids:
      description: The snapshots in the image's block device mappings.
      type: list
      elements: str
    verified:
      description: Whether the image is verified and tagged C(cms-patching:verified=true).
      type: bool
    status:
      description:
        - V(created) (created or adopted by this run), V(reused), V(failed) or V(would_create) (check mode).
        - With O(create=false), V(existing) or V(missing).
        - All but V(failed) count as success for O(fail_on_no_success) (V(missing) answers the question O(create=false) asks).
      type: str
      sample: created
    error:
      description: Why the backup failed, in one line; null otherwise.
      type: str
    error_code:
      description: The AWS error code when AWS refused C(CreateImage) or C(CreateTags) for it (null otherwise).
      type: str
      sample: UnauthorizedOperation
    created_at:
      description: When the backup was started (ISO 8601, UTC).
      type: str
    run_id:
      description: The run id the image was created by.
      type: str
    adopted:
      description: Whether this run adopted an image an earlier, interrupted run had started.
      type: bool
pruned:
  description:
    - Images removed (or, in check mode, that would be removed) with their snapshots.
    - Also one entry per instance whose orphaned snapshots were deleted (reason V(orphaned), no image).
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: The source instance.
      type: str
    image_id:
      description: The deregistered image (null for V(orphaned)).
      type: str
    name:
      description: Its name.
      type: str
    created_at:
      description: When it was created.
      type: str
    reason:
      description: V(failed) (a failed backup), V(retention_count), V(retention_days) or V(orphaned) (snapshots no image uses).
      type: str
    snapshot_ids:
      description: Its snapshots that were deleted (only ones tagged C(cms-patching:managed=true)).
      type: list
      elements: str
    kept_snapshot_ids:
      description: Its snapshots left alone because they lack the ownership tag, or because another image still uses them.
      type: list
      elements: str
    error:
      description: Why removing it failed, or null.
      type: str
    note:
      description: Why a snapshot of the tool was kept (another image still uses it), or null.
      type: str
summary:
  description: Counts of RV(backups) by status, plus C(total), C(pruned_images) and C(pruned_snapshots).
  returned: always
  type: dict
  sample: {"total": 3, "created": 2, "failed": 1, "pruned_images": 1, "pruned_snapshots": 1}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.cms.patching.plugins.module_utils.aws import ASSUME_ROLE_ARGS, AwsSession
from ansible_collections.cms.patching.plugins.module_utils.backup.naming import DEFAULT_DESCRIPTION, DEFAULT_NAME
from ansible_collections.cms.patching.plugins.module_utils.backup.run import no_success, run_backup, validate_params
from ansible_collections.cms.patching.plugins.module_utils.errors import RESULT_ARGS, exit_with


def backup(module):
    validate_params(module.params)  # before any AWS call, STS included
    return run_backup(AwsSession.from_module(module).client("ec2"), module.params, module.check_mode)


def main():
    argument_spec = dict(
        instance_ids=dict(type="list", elements="str", required=True),
        name=dict(type="str", default=DEFAULT_NAME),
        description=dict(type="str", default=DEFAULT_DESCRIPTION),
        no_reboot=dict(type="bool", default=True),
        tags=dict(type="dict"),
        run_id=dict(type="str"),
        create=dict(type="bool", default=True),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=3600),
        poll_interval=dict(type="float", default=15),
        max_concurrent=dict(type="int", default=50),
        max_age_hours=dict(type="float"),
        retention_count=dict(type="int"),
        retention_days=dict(type="int"),
        retention_min_age=dict(type="int", default=0),
    )
    argument_spec.update(ASSUME_ROLE_ARGS)
    argument_spec.update(RESULT_ARGS)
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    exit_with(module, "ami_backup_verify", backup, judge=no_success)


if __name__ == "__main__":
    main()
