# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS session handling: retried clients for one region, optionally through an STS assumed role.

The endpoint comes from amazon.aws's options or, when none is set, from boto3's own
configuration, so AWS_ENDPOINT_URL points every client at another endpoint (the simulator).
"""

from __future__ import annotations

try:
    from botocore.config import Config
except ImportError:  # AnsibleAWSModule reports the missing SDK
    Config = None

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, is_aws_error

# Throttling storms (RequestLimitExceeded / ThrottlingException) are per account and region:
# back off with jitter on every call, and let botocore retry each page of a paginator too.
RETRY = AWSRetry.jittered_backoff(retries=10, delay=1, max_delay=20)
BOTOCORE_RETRIES = {"mode": "legacy", "max_attempts": 10}

ASSUME_ROLE_ARGS = dict(
    role_arn=dict(type="str"),
    role_session_name=dict(type="str", default="cms-patching"),
    external_id=dict(type="str", no_log=True),
)


class AwsSession:
    """Clients for one (account, region): the module's own credentials or an assumed role."""

    def __init__(self, module, region=None, role_arn=None, role_session_name="cms-patching", external_id=None):
        self.module = module
        self.region = region or module.region
        self.role_arn = role_arn
        self.role_session_name = role_session_name or "cms-patching"
        self.external_id = external_id
        self._credentials = None
        self._clients = {}
        if not self.region:
            raise PatchingError("no region given: set the region option or AWS_REGION")

    @classmethod
    def from_module(cls, module):
        params = module.params
        return cls(module, params.get("region"), params.get("role_arn"), params.get("role_session_name"), params.get("external_id"))

    def client(self, service):
        if service not in self._clients:
            kwargs = dict(self._assumed_credentials())
            if Config is not None:
                kwargs["config"] = Config(retries=BOTOCORE_RETRIES)
            self._clients[service] = self.module.client(service, retry_decorator=RETRY, region=self.region, **kwargs)
        return self._clients[service]

    def _assumed_credentials(self):
        if not self.role_arn:
            return {}
        if self._credentials is None:
            self._credentials = assume_role(self.module.client("sts", retry_decorator=RETRY, region=self.region),
                                            self.role_arn, self.role_session_name, self.external_id)
        return self._credentials


def assume_role(sts, role_arn, session_name, external_id=None):
    """boto3 keyword credentials for role_arn; one clear line when STS refuses."""
    params = dict(RoleArn=role_arn, RoleSessionName=session_name)
    if external_id:
        params["ExternalId"] = external_id
    try:
        creds = sts.assume_role(**params)["Credentials"]
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            raise PatchingError(aws_error_message(e, "sts:AssumeRole", role_arn)) from None
        raise
    return dict(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def known_regions(service="ec2"):
    import boto3  # pylint: disable=import-outside-toplevel

    session = boto3.session.Session()
    regions = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions(service, partition_name=partition))
    return regions


def validate_region(region, service="ec2"):
    """Catch a mistyped region before any call: with a custom endpoint, boto3 would accept anything."""
    if not region:
        raise PatchingError("no region given: set the region option or AWS_REGION")
    regions = known_regions(service)
    if regions and region not in regions:
        raise PatchingError(f"unknown region '{region}': not a {service} region known to botocore")
