# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ec2_fleet
short_description: SSM-aware EC2 inventory over several regions and accounts
version_added: 0.1.0
description:
  - Lists EC2 instances of one or more AWS accounts and regions as hosts, enriched with their AWS Systems Manager
    (SSM) state, and groups them for patching.
  - Built on amazon.aws's inventory base, so O(regions), O(filters), O(include_filters), O(exclude_filters),
    O(hostnames), O(compose), O(groups), O(keyed_groups), inventory caching, O(strict_permissions) and
    O(assume_role_arn) work as users of P(amazon.aws.aws_ec2#inventory) expect.
  - SSM ping status, platform and agent version come from C(DescribeInstanceInformation), asked for the listed
    instances only, 50 per call. With O(include_patch_state=true), patch compliance counts come from
    C(DescribeInstancePatchStates), 50 per call.
  - "Cost per account and region: about ceil(N/1000) C(DescribeInstances) pages (one query per entry of
    O(include_filters) and O(exclude_filters)), ceil(N/50) C(DescribeInstanceInformation) calls and, with
    O(include_patch_state=true), ceil(M/50) C(DescribeInstancePatchStates) calls for the M SSM-managed instances;
    one C(sts:AssumeRole) per assumed role. A cache hit makes no AWS call at all."
  - "Every host joins these groups (names sanitised the way Ansible transforms invalid group names):
    C(ssm_online) or C(ssm_offline) (C(ConnectionLost), C(Inactive), or not managed by SSM);
    C(platform_linux) or C(platform_windows); C(region_<region>); C(account_<id>);
    C(patch_group_<value>) from the C(Patch Group) or C(PatchGroup) tag; C(env_<value>) from the C(Environment) tag."
  - "Host variables: C(instance_id), C(account_id), C(region), C(availability_zone), C(instance_type),
    C(instance_state), C(image_id), C(launch_time), C(platform) (linux, windows or macos), C(private_ip_address),
    C(private_dns_name), C(public_ip_address), C(vpc_id), C(subnet_id), C(ec2_tags) (a dict);
    C(ssm), a dict with C(ping_status), C(platform_type), C(platform_name), C(platform_version), C(agent_version) and
    C(last_ping) (all null when SSM does not manage the instance); with O(include_patch_state=true), C(patch_state),
    a dict with C(missing), C(failed), C(installed), C(installed_other), C(installed_pending_reboot),
    C(installed_rejected), C(not_applicable), C(critical_non_compliant), C(security_non_compliant), C(operation),
    C(operation_end_time), C(baseline_id) and C(snapshot_id) (empty when SSM has no patch state for the instance);
    C(cms_patching_role_arn), only on hosts reached through an assumed role (O(accounts) or O(assume_role_arn)),
    and C(cms_patching_external_id) when that account has one."
  - The configuration file name must end with C(aws_ec2.yml), C(aws_ec2.yaml), C(ec2_fleet.yml) or C(ec2_fleet.yaml).
  - Any configuration error (an unknown option, an unknown region, a malformed account entry, an unreachable
    endpoint, refused credentials) fails the source with one line, so with C(unparsed_is_failed) the run stops
    instead of running on an empty inventory.
author:
  - cms.patching contributors (@cms-patching)
extends_documentation_fragment:
  - inventory_cache
  - constructed
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
  - amazon.aws.assume_role.plugins
notes:
  - The O(region) option (or E(AWS_REGION)) only chooses where STS is called; the instances listed come from the
    regions in O(regions).
  - AWS_ENDPOINT_URL (read by boto3 itself) points every call at another endpoint, such as the cms.patching simulator.
  - Roles assumed for O(accounts) and O(assume_role_arn) renew their sessions before they expire (botocore's
    refreshable assume-role credentials), so a listing never fails on an expired session.
  - Every AWS call retries throttling (EC2 C(RequestLimitExceeded), SSM C(ThrottlingException)) and transient errors
    with botocore's C(standard) retry mode, 10 attempts, like the collection's modules.
options:
  plugin:
    description: The name of this plugin; it should always be set to V(cms.patching.ec2_fleet) for this plugin to recognise the file.
    required: true
    type: str
    choices: [cms.patching.ec2_fleet]
  regions:
    description:
      - The regions to list instances in, for every account.
      - Empty means every region C(ec2:DescribeRegions) reports for the default credentials.
      - A name botocore does not know fails the source.
    type: list
    elements: str
    default: []
  accounts:
    description:
      - Other AWS accounts to list, each reached by assuming O(accounts[].role_arn) with the default credentials
        (the ones O(assume_role_arn) gives, if set). Their instances are gathered into one inventory.
      - When set, the default credentials' own account is listed only with O(include_default_account=true).
      - Hosts from these accounts get C(cms_patching_role_arn) (and C(cms_patching_external_id)) so the roles'
        modules assume the same role.
    type: list
    elements: dict
    default: []
    suboptions:
      role_arn:
        description: ARN of the role to assume in that account.
        type: str
        required: true
      external_id:
        description: External ID the role's trust policy requires, if any.
        type: str
  include_default_account:
    description:
      - With O(accounts), also list the account of the default credentials (or of O(assume_role_arn)).
      - Without O(accounts) the default credentials' account is always the one listed.
    type: bool
    default: false
  role_session_name:
    description: Session name for the O(accounts) roles; it appears in CloudTrail.
    type: str
    default: cms-patching-inventory
  filters:
    description:
      - A dictionary of C(DescribeInstances) filters, as in P(amazon.aws.aws_ec2#inventory), for example
        C(tag:Patch Group) or C(instance-state-name).
      - Without an C(instance-state-name) filter, terminated and shutting-down instances are left out.
    type: dict
    default: {}
  include_filters:
    description:
      - A list of filter dictionaries; instances matching at least one of them (and O(filters), if set, counts as
        one more) are listed. Each entry is one more C(DescribeInstances) query.
    type: list
    elements: dict
    default: []
  exclude_filters:
    description:
      - A list of filter dictionaries; instances matching any of them are left out. They win over O(filters) and
        O(include_filters). Each entry is one more C(DescribeInstances) query.
    type: list
    elements: dict
    default: []
  hostnames:
    description:
      - The inventory hostname, in order of preference; the first one with a value wins.
      - "Each entry is one of V(instance-id), V(private-ip-address), V(private-dns-name), V(dns-name), V(ip-address),
        V(tag:<key>) (that tag's value), or a dict with C(name), optional C(prefix) (either of the same forms) and
        C(separator) (default C(_))."
      - When no entry has a value, or two instances would get the same name, the instance id is used, so an
        instance is never dropped or merged with another. SSM addresses instances by id, hence the default.
    type: list
    elements: raw
    default: [instance-id]
  include_patch_state:
    description:
      - Also read patch compliance from C(DescribeInstancePatchStates) into the host variable C(patch_state).
    type: bool
    default: false
  strict_permissions:
    description:
      - By default an access-denied error from EC2 or SSM fails the source.
      - When V(false), a region or account that denies C(DescribeInstances) is skipped with a warning, and one that
        denies the SSM calls is listed without SSM facts (its hosts land in C(ssm_offline)).
    type: bool
    default: true
  page_size:
    description:
      - C(MaxResults) for each C(DescribeInstances) page (5 to 1000). Lower it only to test paging.
    type: int
    default: 1000
"""

EXAMPLES = r"""
# inventories/prod.aws_ec2.yml: the whole fleet in two regions, hostnames are instance ids
plugin: cms.patching.ec2_fleet
regions:
  - us-east-1
  - eu-west-1

---
# One patch group of several accounts, with patch compliance counts, cached for an hour
plugin: cms.patching.ec2_fleet
regions: [us-east-1]
filters:
  "tag:Patch Group": web
accounts:
  - role_arn: arn:aws:iam::222222222222:role/cms-patching
  - role_arn: arn:aws:iam::333333333333:role/cms-patching
    external_id: patching-2024
include_default_account: true
include_patch_state: true
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/cms-patching-inventory
cache_timeout: 3600

---
# Leave out stopped instances and anything tagged cms-patching:exclude=true; name hosts by their Name tag
plugin: cms.patching.ec2_fleet
regions: [us-east-1]
exclude_filters:
  - instance-state-name: [stopped, stopping]
  - "tag:cms-patching:exclude": "true"
hostnames:
  - tag:Name
  - instance-id
keyed_groups:
  - key: instance_type
    prefix: type
groups:
  needs_patches: patch_state is defined and patch_state.missing | default(0) > 0
"""

import hashlib
import json

try:
    import boto3
    import botocore
except ImportError:
    pass  # AWSInventoryBase.require_aws_sdk reports it

from ansible import constants as C
from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.amazon.aws.plugins.plugin_utils.botocore import get_aws_connection_info
from ansible_collections.amazon.aws.plugins.plugin_utils.inventory import AWSInventoryBase

from ansible_collections.cms.patching.plugins.plugin_utils import inventory as fleet
from ansible_collections.cms.patching.plugins.module_utils.aws import assumed_role_session, client_config
from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, error_code, is_aws_error

DENIED = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException")
# 2: ssm and patch_state carry the shared readers' key sets (platform_version, last_ping; installed_other, baseline_id,
# snapshot_id), so a cache written before is read again from AWS.
CACHE_FORMAT = 2
QUERY_OPTIONS = ("regions", "accounts", "include_default_account", "filters", "include_filters", "exclude_filters",
                 "hostnames", "include_patch_state", "assume_role_arn", "endpoint_url", "profile", "access_key")


class _TemplatedOptions(AWSInventoryBase.TemplatedOptions):
    """The base class's option templating, plus accounts, without the disable_lookups argument ansible-core 2.19 deprecates."""

    TEMPLATABLE_OPTIONS = AWSInventoryBase.TemplatedOptions.TEMPLATABLE_OPTIONS + ("accounts",)

    def get(self, *args):
        value = self.original_options.get(*args)
        if not value or not self.templar or args[0] not in self.TEMPLATABLE_OPTIONS:
            return value
        return self.templar.template(value)


class InventoryModule(AWSInventoryBase):
    NAME = "cms.patching.ec2_fleet"
    INVENTORY_FILE_SUFFIXES = ("aws_ec2.yml", "aws_ec2.yaml", "ec2_fleet.yml", "ec2_fleet.yaml")

    def get_options(self, *args):
        return _TemplatedOptions(self.templar, super(AWSInventoryBase, self).get_options(*args))

    def get_option(self, option, hostvars=None):
        return _TemplatedOptions(self.templar, {option: super(AWSInventoryBase, self).get_option(option, hostvars)}).get(option)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        self._check_options()
        hit, result = self.get_cached_result(path, cache)
        if not hit or not isinstance(result, dict) or result.get("format") != CACHE_FORMAT:
            result = {"format": CACHE_FORMAT, "hosts": self._query()}
        self._populate(result["hosts"])
        self.update_cached_result(path, cache, result)

    # --- configuration -------------------------------------------------------------------------------------

    def _read_config_data(self, path):
        config = super()._read_config_data(path)
        known = set()
        for name, definition in C.config.get_configuration_definitions("inventory", self._load_name).items():
            known.add(name)
            known.update(definition.get("aliases") or ())
        unknown = sorted(set(config) - known)
        if unknown:
            raise AnsibleParserError(f"{path}: unknown option(s) {', '.join(map(str, unknown))} for {self.NAME} (see ansible-doc -t inventory {self.NAME})")
        return config

    def _set_frozen_credentials(self):
        # The base class assumes assume_role_arn while parsing, into credentials that never renew. Here it is assumed
        # only when AWS is really queried (a cache hit makes no AWS call at all), as a session that renews itself.
        pass

    def _check_options(self):
        problems = [fleet.hostname_problem(p) for p in self.get_option("hostnames")]
        problems += [fleet.account_problem(a) for a in self.get_option("accounts")]
        for name in ("include_filters", "exclude_filters"):
            if not all(isinstance(f, dict) for f in self.get_option(name)):
                problems.append(f"{name} must be a list of filter dictionaries")
        page_size = self.get_option("page_size")
        if not fleet.EC2_PAGE_MIN <= page_size <= fleet.EC2_PAGE_MAX:
            problems.append(f"page_size must be between {fleet.EC2_PAGE_MIN} and {fleet.EC2_PAGE_MAX}, got {page_size}")
        arns = [a.get("role_arn") for a in self.get_option("accounts") if isinstance(a, dict)]
        if len(set(arns)) != len(arns):
            problems.append("accounts lists the same role_arn more than once")
        known = _known_regions()
        unknown = [r for r in self.get_option("regions") if r not in known]
        if unknown:
            problems.append(f"unknown region(s) {', '.join(map(str, unknown))} (botocore {botocore.__version__} knows no such region)")
        problems = [p for p in problems if p]
        if problems:
            self.fail_aws(f"{self.NAME}: {'; '.join(problems)}")

    def get_cache_key(self, path):
        # Editing what the query selects must not serve a stale host list from the cache.
        query = {name: self.get_option(name) for name in QUERY_OPTIONS}
        digest = hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{super().get_cache_key(path)}_{digest}"

    # --- AWS -----------------------------------------------------------------------------------------------

    def _query(self):
        regions = self._regions()
        hosts, seen = [], set()
        self._default_role_session = None  # pylint: disable=attribute-defined-outside-init
        for account in self._account_sources():
            session = self._session(account)
            for region in regions:
                for host in self._query_region(account, session, region):
                    if host["vars"]["instance_id"] not in seen:  # an account reached twice is listed once
                        seen.add(host["vars"]["instance_id"])
                        hosts.append(host)
        for warning in fleet.make_hostnames_unique(hosts):
            self.warn(f"{self.NAME}: {warning}")
        if not hosts:
            self.warn(f"{self.NAME}: no instances matched in region(s) {', '.join(regions)}")
        return hosts

    def _regions(self):
        # str() drops ansible-core's data tags (origin, template trust) from config values before they become host vars
        return list(dict.fromkeys(str(r) for r in self.get_option("regions") or self._boto3_regions("ec2")))

    def _account_sources(self):
        """(role_arn, external_id, is_default) per account; the default one may itself be an assume_role_arn role."""
        sources = [(str(a["role_arn"]), _plain(a.get("external_id")), False) for a in self.get_option("accounts")]
        if not sources or self.get_option("include_default_account"):
            sources.insert(0, (_plain(self.get_option("assume_role_arn")), None, True))
        return sources

    def _session(self, account):
        """A boto3 session for an account (None: the default credentials), assumed only now, never on a cache hit.

        Assumed roles renew themselves (botocore's refreshable assume-role credentials); the accounts' roles are assumed
        with the default credentials, which are assume_role_arn's session when that is set.
        """
        role_arn, external_id, is_default = account
        default_role = self.get_option("assume_role_arn")
        if is_default and not default_role:
            return None
        try:
            if default_role and self._default_role_session is None:
                self._default_role_session = self._assume(self._source_session(), str(default_role),
                                                          f"ansible_aws_{getattr(self, 'ansible_name', self.NAME)}_dynamic_inventory", None)
            if is_default:
                return self._default_role_session
            return self._assume(self._default_role_session or self._source_session(), role_arn, self.get_option("role_session_name"), external_id)
        except PatchingError as e:
            self.fail_aws(f"{self.NAME}: {e}")

    def _connection(self):
        """(endpoint_url, boto3 keyword arguments) from amazon.aws's options, as its own clients read them."""
        _region, endpoint_url, params = get_aws_connection_info(self)
        return endpoint_url, params

    def _source_session(self):
        _endpoint, params = self._connection()
        return boto3.session.Session(profile_name=params.get("profile_name"), aws_access_key_id=params.get("aws_access_key_id"),
                                     aws_secret_access_key=params.get("aws_secret_access_key"),
                                     aws_session_token=params.get("aws_session_token"))

    def _assume(self, source, role_arn, session_name, external_id):
        endpoint_url, params = self._connection()
        return assumed_role_session(source, role_arn, session_name, external_id, region=self.region or self._regions()[0],
                                    endpoint_url=endpoint_url, verify=params.get("verify"), config=self._client_config())

    def _client_config(self):
        _endpoint, params = self._connection()
        config = client_config()
        return config.merge(params["aws_config"]) if params.get("aws_config") is not None else config

    def _client(self, session, service, region):
        """A client with the collection's one retry policy, for the default credentials or an account's session."""
        if session is None:  # amazon.aws's own client; it merges aws_config itself
            return self.client(service, region=region, config=client_config())
        endpoint_url, params = self._connection()
        return session.client(service, region_name=region, endpoint_url=endpoint_url, verify=params.get("verify"), config=self._client_config())

    def _query_region(self, account, session, region):
        role_arn, external_id = account[:2]
        where = region + (f" ({role_arn})" if role_arn else "")
        ssm = fleet.SsmLookup(self._client(session, "ssm", region), self.get_option("include_patch_state"))
        try:
            instances = fleet.select_instances(self._client(session, "ec2", region), self._include_filters(),
                                               self.get_option("exclude_filters"), self.get_option("page_size"), on_selected=ssm.add)
        except Exception as e:  # pylint: disable=broad-except
            ssm.close()
            if self._skip_denied(e, "ec2", "DescribeInstances", where):
                return []
            raise
        try:
            info, states = ssm.results()
        except Exception as e:  # pylint: disable=broad-except
            if not self._skip_denied(e, "ssm", "DescribeInstanceInformation", where):
                raise
            info, states = {}, None
        hostnames = self.get_option("hostnames")
        return [{"name": fleet.hostname_of(i, hostnames),
                 "vars": fleet.host_vars(i, region, info.get(i["instance_id"]),
                                         None if states is None else states.get(i["instance_id"], {}), role_arn, external_id)}
                for i in instances]

    def _skip_denied(self, exc, service, operation, where):
        """True when strict_permissions is off and AWS denied access; any other AWS error fails the source in one line."""
        if not is_aws_error(exc):
            return False
        action = f"{service}:{getattr(exc, 'operation_name', None) or operation}"
        message = f"{self.NAME}: {aws_error_message(exc, action, where)}"
        if error_code(exc) in DENIED and not self.get_option("strict_permissions"):
            self.warn(message + " (skipped: strict_permissions is false)")
            return True
        self.fail_aws(message)

    def _include_filters(self):
        filters = list(self.get_option("include_filters"))
        if self.get_option("filters"):
            filters.insert(0, self.get_option("filters"))
        return filters or [{}]

    # --- inventory -----------------------------------------------------------------------------------------

    def _populate(self, hosts):
        strict = self.get_option("strict")
        compose, groups, keyed = self.get_option("compose"), self.get_option("groups"), self.get_option("keyed_groups")
        for host in hosts:
            name, hostvars = to_text(host["name"]), host["vars"]
            self.inventory.add_host(name)
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            for group in fleet.default_groups(hostvars):
                self.inventory.add_child(self.inventory.add_group(group), name)
            self._set_composite_vars(compose, hostvars, name, strict=strict)
            self._add_host_to_composed_groups(groups, hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(keyed, hostvars, name, strict=strict)


def _plain(value):
    return None if value is None else str(value)


def _known_regions():
    session = boto3.session.Session()
    return {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", partition_name=p)}
