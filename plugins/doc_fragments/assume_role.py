# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Cross-account options shared by every cms.patching module.
    DOCUMENTATION = r"""
options:
  role_arn:
    description:
      - ARN of an IAM role to assume with STS C(AssumeRole) before any other call, to work in another account.
      - The module's own credentials (or the environment's) are used to assume it.
      - When not set, the module works with its own credentials.
    type: str
  role_session_name:
    description:
      - Session name for the assumed role; it appears in CloudTrail.
    type: str
    default: cms-patching
  external_id:
    description:
      - External ID required by the role's trust policy, if any.
    type: str
"""
