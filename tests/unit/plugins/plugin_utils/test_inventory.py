"""Unit tests for the ec2_fleet inventory logic: groups, sanitising, host variables, hostnames, filters and batching."""

import datetime
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from ansible.inventory.group import to_safe_group_name

from ansible_collections.cms.patching.plugins.plugin_utils import inventory as fleet
from ansible_collections.cms.patching.plugins.module_utils import readers

ROOT = Path(__file__).resolve().parents[4]
LINUX_INFO = {"PingStatus": "Online", "PlatformType": "Linux", "PlatformName": "Amazon Linux", "AgentVersion": "3.3.1"}
LINUX = readers.agent_record(LINUX_INFO)


def instance(iid="i-0123456789abcdef0", tags=None, **extra):
    """The readers' record of a DescribeInstances entry (extra: raw DescribeInstances fields)."""
    data = {"InstanceId": iid, "State": {"Name": "running"}, "Placement": {"AvailabilityZone": "us-east-1a"},
            "PrivateIpAddress": "10.0.0.1", "InstanceType": "t3.micro",
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()], "OwnerId": "111111111111"}
    data.update(extra)
    return readers.instance_record(data)


def ids(n, start=0):
    return [f"i-{k:017x}" for k in range(start, start + n)]


# --- group names --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["patch_group_web-prod", "region_us-east-1", "env_Prod EU", "patch_group_a.b/c", "9lives", "env_ünï"])
def test_sanitising_matches_ansibles_own_transformation(name):
    assert fleet.sanitize_group_name(name) == to_safe_group_name(name, force=True, silent=True)


def test_default_groups_of_an_online_linux_host():
    hv = fleet.host_vars(instance(tags={"Patch Group": "web-prod", "Environment": "prod"}), "us-east-1", LINUX)
    assert fleet.default_groups(hv) == ["ssm_online", "platform_linux", "region_us_east_1", "account_111111111111",
                                        "patch_group_web_prod", "env_prod"]


@pytest.mark.parametrize("ping", ["ConnectionLost", "Inactive", None])
def test_offline_inactive_and_unmanaged_hosts_are_ssm_offline(ping):
    item = dict(LINUX, ping_status=ping) if ping else None
    groups = fleet.default_groups(fleet.host_vars(instance(), "eu-west-1", item))
    assert "ssm_offline" in groups and "ssm_online" not in groups


def test_patch_group_falls_back_to_the_patchgroup_tag_and_empty_tags_make_no_group():
    hv = fleet.host_vars(instance(tags={"PatchGroup": "Win Servers", "Environment": ""}), "us-east-1", LINUX)
    groups = fleet.default_groups(hv)
    assert "patch_group_Win_Servers" in groups
    assert not [g for g in groups if g.startswith("env_")]
    both = fleet.host_vars(instance(tags={"Patch Group": "a", "PatchGroup": "b"}), "us-east-1", LINUX)
    assert "patch_group_a" in fleet.default_groups(both) and "patch_group_b" not in fleet.default_groups(both)


def test_platform_comes_from_ssm_and_else_from_ec2():
    windows_ssm = dict(LINUX, platform_type="Windows")
    assert fleet.host_vars(instance(), "us-east-1", windows_ssm)["platform"] == "windows"
    assert fleet.host_vars(instance(PlatformDetails="Windows with SQL Server Standard"), "us-east-1", None)["platform"] == "windows"
    assert fleet.host_vars(instance(PlatformDetails="Linux/UNIX"), "us-east-1", None)["platform"] == "linux"
    assert "platform_windows" in fleet.default_groups(fleet.host_vars(instance(Platform="windows"), "us-east-1", None))


# --- host variables -----------------------------------------------------------------------------------------

def test_host_vars_carry_what_the_roles_rely_on():
    hv = fleet.host_vars(instance(tags={"Name": "web-1"}, LaunchTime=datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)),
                         "us-east-1", LINUX)
    assert hv["instance_id"] == "i-0123456789abcdef0" and hv["account_id"] == "111111111111" and hv["region"] == "us-east-1"
    assert hv["private_ip_address"] == "10.0.0.1" and hv["ec2_tags"] == {"Name": "web-1"}
    assert hv["ssm"] == {"ping_status": "Online", "platform_type": "Linux", "platform_name": "Amazon Linux", "platform_version": None,
                         "agent_version": "3.3.1", "last_ping": None}
    assert hv["launch_time"] == "2024-01-02T00:00:00+00:00"
    assert "patch_state" not in hv and "cms_patching_role_arn" not in hv and "cms_patching_external_id" not in hv


def test_unmanaged_host_has_an_ssm_dict_of_nulls():
    assert fleet.host_vars(instance(), "us-east-1", None)["ssm"] == dict.fromkeys(
        ["ping_status", "platform_type", "platform_name", "platform_version", "agent_version", "last_ping"])


def test_role_arn_and_external_id_only_on_hosts_reached_through_a_role():
    arn = "arn:aws:iam::222222222222:role/cms-patching"
    hv = fleet.host_vars(instance(OwnerId=None), "us-east-1", LINUX, role_arn=arn, external_id="ext")
    assert hv["cms_patching_role_arn"] == arn and hv["cms_patching_external_id"] == "ext"
    assert hv["account_id"] == "222222222222"  # from the role when EC2 gives no owner
    assert "cms_patching_external_id" not in fleet.host_vars(instance(), "us-east-1", LINUX, role_arn=arn)


def test_patch_state_is_the_readers_record_or_empty():
    state = readers.patch_state_record({"InstanceId": "i-1", "MissingCount": 4, "Operation": "Install"})
    assert fleet.host_vars(instance(), "us-east-1", None, patch_state=state)["patch_state"] == state
    assert fleet.host_vars(instance(), "us-east-1", None, patch_state={})["patch_state"] == {}


# --- hostnames and configuration checks ---------------------------------------------------------------------

def test_hostnames_follow_preference_and_fall_back_to_the_instance_id():
    inst = instance(tags={"Name": "web-1", "Role": "db"}, PrivateDnsName="ip-10-0-0-1.ec2.internal")
    assert fleet.hostname_of(inst, ["instance-id"]) == "i-0123456789abcdef0"
    assert fleet.hostname_of(inst, ["tag:Missing", "tag:Name"]) == "web-1"
    assert fleet.hostname_of(inst, ["dns-name", "private-dns-name"]) == "ip-10-0-0-1.ec2.internal"
    assert fleet.hostname_of(inst, [{"name": "tag:Name", "prefix": "tag:Role", "separator": "-"}]) == "db-web-1"
    assert fleet.hostname_of(inst, ["tag:Missing", "ip-address"]) == "i-0123456789abcdef0"


def test_shared_hostnames_never_merge_two_instances():
    hosts = [{"name": "web", "vars": {"instance_id": "i-1"}}, {"name": "web", "vars": {"instance_id": "i-2"}},
             {"name": "db", "vars": {"instance_id": "i-3"}}]
    warnings = fleet.make_hostnames_unique(hosts)
    assert [h["name"] for h in hosts] == ["web", "i-2", "db"]
    assert len(warnings) == 1 and "i-1" in warnings[0] and "i-2" in warnings[0]


@pytest.mark.parametrize("pref, ok", [("instance-id", True), ("tag:Name", True), ({"name": "tag:Name", "prefix": "instance-id"}, True),
                                      ("tag:", False), ("public-ip", False), ({"prefix": "tag:Name"}, False),
                                      ({"name": "tag:Name", "suffix": "x"}, False), (42, False)])
def test_hostname_entries_are_checked(pref, ok):
    assert (fleet.hostname_problem(pref) is None) is ok


@pytest.mark.parametrize("entry, problem", [
    ({"role_arn": "arn:aws:iam::222222222222:role/cms-patching"}, None),
    ({"role_arn": "arn:aws-us-gov:iam::222222222222:role/path/ops", "external_id": "x"}, None),
    ({"role_arn": "arn:aws:iam::22:role/x"}, "not an IAM role ARN"),
    ({"external_id": "secret-ext"}, "not an IAM role ARN"),
    ({"role_arn": "arn:aws:iam::222222222222:role/x", "region": "x"}, "unknown key(s) region"),
    ("arn:aws:iam::222222222222:role/x", "must be dicts"),
])
def test_account_entries_are_checked_without_echoing_external_ids(entry, problem):
    result = fleet.account_problem(entry)
    assert (result is None) if problem is None else (problem in result and "secret-ext" not in result)


def test_include_queries_skip_terminated_instances_unless_told_and_excludes_are_literal():
    assert fleet.instance_filters({"tag:Patch Group": "web"}) == [
        {"Name": "tag:Patch Group", "Values": ["web"]}, {"Name": "instance-state-name", "Values": fleet.DEFAULT_STATES}]
    assert fleet.instance_filters({"instance-state-name": ["terminated"]}) == [{"Name": "instance-state-name", "Values": ["terminated"]}]
    assert fleet.instance_filters({"tag:x": "y"}, default_states=False) == [{"Name": "tag:x", "Values": ["y"]}]


# --- AWS calls: paging and batching -------------------------------------------------------------------------

def _reservation(owner, iids):
    return {"OwnerId": owner, "ReservationId": "r-1", "Instances": [{"InstanceId": i} for i in iids]}


def test_describe_instances_follows_next_token_and_records_the_owner():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    filters = fleet.instance_filters({})
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": [_reservation("111111111111", ids(2))], "NextToken": "t1"},
                          {"Filters": filters, "MaxResults": 5})
        stub.add_response("describe_instances", {"Reservations": [_reservation("111111111111", ids(1, 2))]},
                          {"Filters": filters, "MaxResults": 5, "NextToken": "t1"})
        pages = list(readers.instance_pages(ec2, filters, page_size=5))
        stub.assert_no_pending_responses()
    assert [len(p) for p in pages] == [2, 1]
    assert all(i["account_id"] == "111111111111" for p in pages for i in p)


def test_select_instances_is_the_union_of_includes_minus_excludes():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    a, b, c, d = ids(4)
    seen = []
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": [_reservation("1", [c])]},
                          {"Filters": [{"Name": "tag:skip", "Values": ["true"]}], "MaxResults": 1000})
        stub.add_response("describe_instances", {"Reservations": [_reservation("1", [b, a, c])]},
                          {"Filters": fleet.instance_filters({"tag:Role": "web"}), "MaxResults": 1000})
        stub.add_response("describe_instances", {"Reservations": [_reservation("1", [a, d])]},
                          {"Filters": fleet.instance_filters({"tag:Role": "db"}), "MaxResults": 1000})
        result = fleet.select_instances(ec2, [{"tag:Role": "web"}, {"tag:Role": "db"}], [{"tag:skip": "true"}], on_selected=seen.append)
        stub.assert_no_pending_responses()
    assert [i["instance_id"] for i in result] == [a, b, d]
    assert seen == [[b, a], [d]]  # each id is handed to SSM once, as soon as its page arrives


class FakeSsm:
    """Thread-safe recording stand-in for the SSM client; instances in `unmanaged` are unknown to SSM."""

    def __init__(self, unmanaged=(), fail_on=None):
        self.calls = []
        self.unmanaged = set(unmanaged)
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def get_paginator(self, operation):
        """One page per call, like AWS for a batch of at most 50 ids with MaxResults 50."""
        fake = self

        class Paginator:  # pylint: disable=too-few-public-methods
            @staticmethod
            def paginate(**params):
                yield getattr(fake, operation)(**params)

        return Paginator()

    def describe_instance_information(self, Filters, MaxResults):  # noqa: N803 (boto3 names)
        batch = Filters[0]["Values"]
        with self.lock:
            self.calls.append(("info", list(batch)))
        if self.fail_on in batch:
            raise RuntimeError("boom")
        return {"InstanceInformationList": [dict(LINUX_INFO, InstanceId=i) for i in batch if i not in self.unmanaged]}

    def describe_instance_patch_states(self, InstanceIds, MaxResults):  # noqa: N803
        with self.lock:
            self.calls.append(("patch", list(InstanceIds)))
        return {"InstancePatchStates": [{"InstanceId": i, "MissingCount": 1} for i in InstanceIds]}


def test_ssm_lookup_batches_a_stream_of_ids_by_50():
    client = FakeSsm(unmanaged=ids(50, 100))
    lookup = fleet.SsmLookup(client, patch_state=True)
    lookup.add(ids(30))
    lookup.add(ids(80, 30))  # 110 ids so far
    lookup.add(ids(10, 110))
    info, states = lookup.results()
    info_calls = [c for kind, c in client.calls if kind == "info"]
    patch_calls = [c for kind, c in client.calls if kind == "patch"]
    assert sorted(len(c) for c in info_calls) == [20, 50, 50]
    assert sorted(i for c in info_calls for i in c) == ids(120)
    assert len(info) == 100 and len(states) == 100
    # patch states only for managed ids; the last batch has none of them and costs no call
    assert sorted(i for c in patch_calls for i in c) == ids(100)
    assert len(patch_calls) == 2


def test_ssm_lookup_without_patch_state_reports_none_and_surfaces_errors():
    lookup = fleet.SsmLookup(FakeSsm(), patch_state=False)
    lookup.add(ids(3))
    assert lookup.results()[1] is None
    failing = fleet.SsmLookup(FakeSsm(fail_on=ids(1, 60)[0]))
    failing.add(ids(70))
    with pytest.raises(RuntimeError, match="boom"):
        failing.results()


def test_ansible_doc_renders_the_plugin():
    doc = Path(sys.executable).parent / "ansible-doc"
    proc = subprocess.run([str(doc), "-t", "inventory", "cms.patching.ec2_fleet"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in ("accounts", "include_default_account", "include_patch_state", "exclude_filters", "hostnames", "page_size"):
        assert option in proc.stdout
