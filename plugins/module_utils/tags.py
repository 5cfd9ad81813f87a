# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tag names the tool owns. Ownership lives in AWS itself, so a later run needs no local state."""

from __future__ import annotations

PREFIX = "cms-patching:"
MANAGED = PREFIX + "managed"
SOURCE_INSTANCE = PREFIX + "source-instance"
RUN_ID = PREFIX + "run-id"
# The wave a run's plan gave an instance: "<run id>/<n>" (module_utils/wave_plan.py), read back by a later invocation.
WAVE = PREFIX + "wave"
CREATED_AT = PREFIX + "created-at"
VERIFIED = PREFIX + "verified"
EXCLUDE = PREFIX + "exclude"
RESTART_SERVICES = PREFIX + "restart-services"
LAST_PATCH_STATUS = PREFIX + "last-patch-status"
LAST_PATCHED_AT = PREFIX + "last-patched-at"
# What a wave took out of service, set before it does so and removed once the instance is back: a later run (or the
# same run resumed after a kill) puts back what these name. "name:port,name:port" of the drained target groups, spread
# over as many keys as 256-character values need; the Auto Scaling group an instance was put in Standby in.
DRAINED = PREFIX + "drained"
DRAINED_KEYS = (DRAINED, DRAINED + "-2", DRAINED + "-3", DRAINED + "-4")
STANDBY = PREFIX + "standby"
CAPACITY_KEYS = DRAINED_KEYS + (STANDBY,)

PATCH_GROUP_KEYS = ("Patch Group", "PatchGroup")
ASG_KEY = "aws:autoscaling:groupName"


def tag_dict(tag_list):
    """AWS [{'Key':..,'Value':..}] to a plain dict."""
    return {t["Key"]: t.get("Value", "") for t in tag_list or []}


def patch_group(tags):
    for key in PATCH_GROUP_KEYS:
        if tags.get(key):
            return tags[key]
    return None


def is_owned(tags):
    """Only resources carrying the tool's ownership tag may ever be deleted."""
    return tags.get(MANAGED) == "true"
