# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The per-instance result contract of the fleet modules (ssm_patch_run, ssm_command_run, ec2_root_restore,
    # ami_backup_verify).
    DOCUMENTATION = r"""
options:
  fail_on_no_success:
    description:
      - "With V(true), a call in which no instance succeeded fails, with one line that sums up the per-instance results
        (for example C(no instance succeeded: 2 not_found (i-1..., i-2...), 1 undeliverable (i-3...); first error: ...)).
        The per-instance results are still returned. Check mode's V(would_*) results count as success."
      - A call in which some instances succeeded never fails for the others; look at each instance's result.
      - "The roles of this collection set V(false): they fail each host on its own result, so that PLAY RECAP,
        C(max_fail_percentage) and the run report stay per host."
    type: bool
    default: true
"""
