# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that let roles make one AWS call per (account, region) and hand results back per host."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.cms.patching.plugins.plugin_utils.fleet import HostError, host_instance_map, host_results, index_results
from ansible_collections.cms.patching.plugins.plugin_utils.fleet import partition_hosts as _partition_hosts


def partition_hosts(hosts, hostvars, default_region=None):
    try:
        return _partition_hosts(hosts, hostvars, default_region)
    except HostError as e:
        raise AnsibleFilterError(str(e)) from None


class FilterModule:
    def filters(self):
        return {
            "partition_hosts": partition_hosts,
            "index_results": index_results,
            "host_instance_map": host_instance_map,
            "host_results": host_results,
        }
