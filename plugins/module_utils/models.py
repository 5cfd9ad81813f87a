# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain data structures shared by the domain services; each serialises to what a module returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional


@dataclass
class Instance:
    instance_id: str
    region: str
    name: Optional[str] = None
    state: Optional[str] = None
    platform: Optional[str] = None
    patch_group: Optional[str] = None
    account_id: Optional[str] = None
    root_device_type: Optional[str] = None
    root_device_name: Optional[str] = None
    ebs_volumes: List[str] = field(default_factory=list)
    tags: Dict[str, str] = field(default_factory=dict)
    ssm: Dict[str, Optional[str]] = field(default_factory=dict)
    patch_state: Dict[str, object] = field(default_factory=dict)
    eligible: bool = False
    reasons: List[str] = field(default_factory=list)
    # Topology (module_utils/topology.py): what serves traffic, for the wave plan and the drain steps.
    zone: Optional[str] = None
    target_groups: List[Dict[str, object]] = field(default_factory=list)
    asg_name: Optional[str] = None
    asg: Optional[Dict[str, object]] = None

    def to_dict(self):
        return asdict(self)


@dataclass
class Backup:
    instance_id: str
    image_id: Optional[str] = None
    name: Optional[str] = None
    state: Optional[str] = None
    snapshot_ids: List[str] = field(default_factory=list)
    verified: bool = False
    status: Optional[str] = None
    error: Optional[str] = None
    created_at: Optional[str] = None

    def to_dict(self):
        return asdict(self)


@dataclass
class OperationResult:
    """One instance's outcome of one SSM command."""

    instance_id: str
    command_id: Optional[str] = None
    status: Optional[str] = None
    status_details: Optional[str] = None
    outcome: Optional[str] = None
    output_excerpt: str = ""
    error: Optional[str] = None
    output_truncated: bool = False  # the excerpt shows less than the instance's whole output
    output_location: Optional[str] = None  # where the whole output is (S3 / CloudWatch Logs), when configured

    def to_dict(self):
        return asdict(self)


COMMENT_MAX = 100  # SendCommand Comment: at most 100 characters (botocore ssm model)


@dataclass
class RunConfig:
    run_id: str
    poll_interval: float = 5.0
    wait: bool = True
    check_mode: bool = False

    def comment(self, step, token=None):
        """The audit-trail Comment every SendCommand carries: `cms-patching <run-id> <step> [<token>]`.

        The per-send token (after the prefix other tools parse) always survives the 100-character cut: the prefix is
        cut instead, which only a 64-character run id with a long step name needs.
        """
        base = f"cms-patching {self.run_id} {step}"
        if not token:
            return base[:COMMENT_MAX]
        suffix = f" {token}"
        return base[:COMMENT_MAX - len(suffix)].rstrip() + suffix


def summarize(items, key):
    """Counts of each value of `key` among dicts, plus the total."""
    counts = {"total": len(items)}
    for item in items:
        value = item.get(key)
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return counts
