"""Hosts to batched calls and back (the filters partition_hosts, host_instance_map, host_results, index_results)."""

import pytest

from ansible_collections.cms.patching.plugins.plugin_utils.fleet import (
    HostError, host_instance_map, host_results, index_results, partition_hosts,
)


class CountingHostvars:
    """Stands in for Ansible's hostvars, where every lookup computes all of a host's variables."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.reads = 0

    def get(self, name, default=None):
        self.reads += 1
        return self.hosts.get(name, default)


def host(iid, region="us-east-1", account="111111111111", **extra):
    return dict(instance_id=iid, region=region, account_id=account, **extra)


HOSTS = {
    "web1": host("i-0000000000000000a"),
    "web2": host("i-0000000000000000b"),
    "eu1": host("i-0000000000000000c", region="eu-west-1"),
    "other": host("i-0000000000000000d", account="222222222222", cms_patching_role_arn="arn:aws:iam::222222222222:role/p"),
    "i-0000000000000000e": {"region": "us-east-1", "account_id": "111111111111"},  # named by its id, no instance_id var
    "static": {"region": "us-east-1"},  # not an instance: left out
}


def test_one_partition_per_account_region_and_role_with_sorted_ids():
    parts = partition_hosts(list(HOSTS), CountingHostvars(HOSTS))
    assert [(p["account_id"], p["region"], p["role_arn"], p["instance_ids"]) for p in parts] == [
        ("111111111111", "eu-west-1", "", ["i-0000000000000000c"]),
        ("111111111111", "us-east-1", "", ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000e"]),
        ("222222222222", "us-east-1", "arn:aws:iam::222222222222:role/p", ["i-0000000000000000d"]),
    ]


def test_each_host_is_read_once_per_call():
    hostvars = CountingHostvars(HOSTS)
    partition_hosts(list(HOSTS), hostvars)
    assert hostvars.reads == len(HOSTS)
    hostvars.reads = 0
    host_instance_map(list(HOSTS), hostvars)
    assert hostvars.reads == len(HOSTS)


def test_a_host_without_region_needs_a_default_region():
    hosts = {"a": {"instance_id": "i-0000000000000000a"}}
    with pytest.raises(HostError, match="host a has no region"):
        partition_hosts(["a"], CountingHostvars(hosts))
    assert partition_hosts(["a"], CountingHostvars(hosts), "us-west-2")[0]["region"] == "us-west-2"


def test_results_go_back_to_their_hosts_and_patch_groups_narrow_eligibility():
    index = index_results([{"found": [{"instance_id": "i-0000000000000000a", "eligible": True, "patch_group": "web", "reasons": []},
                                      {"instance_id": "i-0000000000000000b", "eligible": True, "patch_group": "db", "reasons": []}]},
                           {"found": None}], "found")
    assert host_instance_map(["web1", "web2", "static"], CountingHostvars(HOSTS)) == {
        "i-0000000000000000a": "web1", "i-0000000000000000b": "web2"}
    pairs = host_results(["web1", "web2", "eu1"], CountingHostvars(HOSTS), index, "web, app")
    assert [(p["host"], p["result"]["eligible"], p["result"]["reasons"]) for p in pairs] == [
        ("web1", True, []), ("web2", False, ["not_in_patch_group"])]
    assert index["i-0000000000000000b"]["eligible"] is True  # the index itself is not changed
