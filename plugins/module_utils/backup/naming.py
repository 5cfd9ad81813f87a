# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AMI name and description templates, run ids and backup times.

Templates are checked before any AWS call, so a typo costs one line of error and nothing else.
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timezone

from ansible_collections.cms.patching.plugins.module_utils import run_id as run_ids
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError

PLACEHOLDERS = ("instance_id", "name", "date", "time", "timestamp", "run_id")
DEFAULT_NAME = "cms-patching-{instance_id}-{timestamp}-{run_id}"
DEFAULT_DESCRIPTION = "cms-patching pre-patch backup of {instance_id} ({name}), run {run_id}"

# EC2 allows only these characters in an AMI name, 3 to 128 of them.
AMI_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9()\[\] ./'@_-]")
AMI_NAME_MAX = 128
DESCRIPTION_MAX = 255
NAME_TAG_MAX = 64


def template_fields(template, option):
    """The placeholder names used by `template`; one-line error on syntax the renderer would not accept."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise PatchingError(f"{option}: invalid template {template!r}: {e}") from None
    fields = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            shown = "{" + field + "}" if field else "{}"
            raise PatchingError(f"{option}: unknown placeholder {shown} in {template!r}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if spec or conversion:
            raise PatchingError(f"{option}: placeholder {{{field}}} takes no conversion or format spec in {template!r}")
        fields.append(field)
    return fields


def validate_name_template(template):
    """AMI names are unique per region, so each instance's name must contain its id; literal text must be legal."""
    fields = template_fields(template, "name")
    if "instance_id" not in fields:
        raise PatchingError(f"name: template {template!r} must contain {{instance_id}} (AMI names must be unique per region)")
    literal = "".join(part[0] for part in string.Formatter().parse(template))
    bad = sorted(set(AMI_NAME_BAD_CHARS.findall(literal)))
    if bad:
        raise PatchingError(f"name: template {template!r} has characters EC2 does not allow in AMI names: {' '.join(bad)}")


def validate_description_template(template):
    template_fields(template, "description")


def validate_run_id(run_id):
    run_ids.validate(run_id)


def generate_run_id(now=None):
    return run_ids.generate(now or utc_now())


def utc_now():
    return datetime.now(timezone.utc)


def iso(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value):
    """An AWS CreationDate or our created-at tag as an aware datetime; None when unparseable."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:  # Python < 3.11 cannot read fractional seconds of other widths than 3 or 6
            parsed = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def placeholder_values(instance_id, name_tag, run_id, now):
    return {
        "instance_id": instance_id,
        "name": (name_tag or instance_id)[:NAME_TAG_MAX],
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H%M%S"),
        "timestamp": now.strftime("%Y%m%dT%H%M%SZ"),
        "run_id": run_id,
    }


def render_name(template, values):
    """The AMI name for one instance: values are made legal for EC2, the result checked for length."""
    safe = {k: AMI_NAME_BAD_CHARS.sub("-", v) for k, v in values.items()}
    name = template.format(**safe)
    if not 3 <= len(name) <= AMI_NAME_MAX:
        raise PatchingError(f"name: {name!r} for {values['instance_id']} is {len(name)} characters; EC2 allows 3 to {AMI_NAME_MAX}")
    return name


def render_description(template, values):
    return template.format(**values)[:DESCRIPTION_MAX]
