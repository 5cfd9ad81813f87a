# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: tag_key
short_description: The AWS tag keys the collection owns, from one source
version_added: 0.1.0
author: cms.patching contributors (@cms-patching)
description:
  - Returns the tag key of each name given, as defined in the collection's C(module_utils/tags.py), which the modules
    use too. Roles and playbooks read tag keys through this lookup instead of spelling them out, so a key has one
    definition.
  - The names are those of C(tags.py) in lower case, for example V(exclude), V(run_id), V(last_patch_status),
    V(last_patched_at), V(restart_services), V(managed), V(verified); V(prefix) is the common prefix of the keys.
  - An unknown name is an error that lists the known ones.
options:
  _terms:
    description: Names of the tag keys.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Tag the wave's instances with their status
  cms.patching.ec2_batch_tag:
    region: us-east-1
    resource_ids: "{{ patched_ids }}"
    tags: "{{ {lookup('cms.patching.tag_key', 'last_patch_status'): 'patched'} }}"

- name: Exclude instances carrying the tool's exclude tag
  ansible.builtin.set_fact:
    discovery_exclude_tags: "{{ {lookup('cms.patching.tag_key', 'exclude'): 'true'} }}"
"""

RETURN = r"""
_raw:
  description: The tag key of each name, in the order given.
  type: list
  elements: str
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.cms.patching.plugins.module_utils import tags


def tag_keys():
    """Every key tags.py defines under the tool's prefix, by its constant's name in lower case, and the prefix itself."""
    keys = {name.lower(): value for name, value in vars(tags).items()
            if name.isupper() and isinstance(value, str) and value.startswith(tags.PREFIX) and value != tags.PREFIX}
    keys["prefix"] = tags.PREFIX
    return keys


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        keys = tag_keys()
        unknown = [t for t in terms if t not in keys]
        if unknown:
            raise AnsibleLookupError(f"unknown tag key name(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(keys))}")
        return [keys[t] for t in terms]
