# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS session handling: retried clients for one region, optionally through an STS assumed role.

The endpoint comes from amazon.aws's options or, when none is set, from boto3's own
configuration, so AWS_ENDPOINT_URL points every client at another endpoint (the simulator).

Retries stay inside a wait's deadline: a wait sets it with `call_deadline`, and every client made here refuses to start
a retry once it has passed (DeadlinePassed, an AWS-call error the waits already treat like a failed read). A call made
before the deadline thus overruns it by at most one attempt (CONNECT_TIMEOUT + READ_TIMEOUT) and one backoff.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time

try:
    import boto3
    import botocore.exceptions
    import botocore.session
    from botocore.config import Config
    from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
    _BotoCoreError = botocore.exceptions.BotoCoreError
except ImportError:  # AnsibleAWSModule reports the missing SDK
    Config = None

    class _BotoCoreError(Exception):  # a stand-in base of its own: Exception itself would clash with PatchingError's MRO
        pass

from ansible_collections.amazon.aws.plugins.module_utils.botocore import get_aws_connection_info
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper

from ansible_collections.cms.patching.plugins.module_utils.errors import PatchingError, aws_error_message, is_aws_error

# One retry policy for every client, the modules' and the inventory's: botocore's "standard" mode. It retries both
# throttling codes (EC2 RequestLimitExceeded, SSM ThrottlingException; amazon.aws's AWSRetry skips the latter),
# 5xx answers and connection errors, with jittered exponential backoff capped at 20 s between attempts.
MAX_ATTEMPTS = 10
# Each attempt is bounded too, so one call lasts at most about MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) plus
# the backoffs; inside a wait's call_deadline no retry starts after the deadline, so the wait overruns it by one attempt.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30
RETRY_MODE = "standard"

ASSUME_ROLE_ARGS = dict(
    role_arn=dict(type="str"),
    role_session_name=dict(type="str", default="cms-patching"),
    external_id=dict(type="str", no_log=True),
)


def client_config(max_attempts=None, **extra):
    """botocore Config with the collection's retry policy; max_attempts counts every attempt (1 = no retry)."""
    return Config(retries={"mode": RETRY_MODE, "total_max_attempts": max_attempts or MAX_ATTEMPTS},
                  connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, **extra)


# Per thread: the wave engine polls partitions in concurrent threads, each with its own deadline.
_BOUND = threading.local()


class DeadlinePassed(_BotoCoreError, PatchingError):
    """A retry refused because the wait that made the call is past its deadline (a failed read, for the waits)."""

    fmt = "{operation} not retried: the wait's deadline has passed"


@contextlib.contextmanager
def call_deadline(deadline, clock=time.monotonic):
    """Within the block, this thread's AWS calls start no retry once clock() >= deadline (None lifts the bound).

    `clock` must be the clock the wait compares its deadline with (the modules inject theirs for tests).
    """
    previous = getattr(_BOUND, "deadline", None)
    _BOUND.deadline = None if deadline is None else (deadline, clock)
    try:
        yield
    finally:
        _BOUND.deadline = previous


def refuse_retry_after_deadline(request, event_name="before-send", **_kwargs):
    """botocore 'before-send' handler (emitted before every attempt): no retry past the current wait's deadline.

    The first attempt always goes out, so a read made at the deadline still happens once.
    """
    bound = getattr(_BOUND, "deadline", None)
    if bound is None:
        return None
    attempt = (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1)
    deadline, clock = bound[0], bound[1]
    if attempt > 1 and clock() >= deadline:
        raise DeadlinePassed(operation=".".join(event_name.split(".")[1:]) or "AWS call")
    return None


def bounded_by_deadline(client):
    """Register the deadline check on a boto3 client (or amazon.aws's wrapper around one); returns the client."""
    getattr(client, "client", client).meta.events.register("before-send", refuse_retry_after_deadline)
    return client


def _botocore_retries_only(func):
    """The `retry_decorator` of every client: call sites keep amazon.aws's aws_retry=True, botocore does the retrying."""
    return func


RETRY = _botocore_retries_only


class AwsSession:
    """Clients for one (account, region): the module's own credentials or an assumed role.

    An assumed role is a boto3 session on botocore's refreshable assume-role credentials, so it renews itself before
    the STS session ends (a patch wave or an AMI wait can outlive the default 3,600 s, and role chaining caps
    sessions at one hour). Its clients use the module's endpoint, region, TLS and aws_config settings.
    """

    def __init__(self, module, region=None, role_arn=None, role_session_name="cms-patching", external_id=None):
        self.module = module
        self.region = region or module.region
        self.role_arn = role_arn
        self.role_session_name = role_session_name or "cms-patching"
        self.external_id = external_id
        self._role_session = None
        self._clients = {}
        if not self.region:
            raise PatchingError("no region given: set the region option or AWS_REGION")

    @classmethod
    def from_module(cls, module):
        params = module.params
        return cls(module, params.get("region"), params.get("role_arn"), params.get("role_session_name"), params.get("external_id"))

    def client(self, service, max_attempts=None):
        """A client for `service` in this session's account and region, with the collection's retry policy.

        max_attempts caps every attempt of a call, the first included: max_attempts=1 gives a client that sends each
        request once and never retries by itself, for calls that must not be repeated blindly (SSM SendCommand has
        no idempotency token, and botocore would resend it after a read timeout). Calls may pass amazon.aws's
        aws_retry=True; it adds no second layer of retries.
        """
        key = (service, max_attempts)
        if key not in self._clients:
            if self.role_arn:
                self._clients[key] = RetryingBotoClientWrapper(self._assumed_client(service, client_config(max_attempts)), RETRY)
            else:
                self._clients[key] = self.module.client(service, retry_decorator=RETRY, region=self.region, config=client_config(max_attempts))
            bounded_by_deadline(self._clients[key])
        return self._clients[key]

    def _assumed_client(self, service, config):
        _region, endpoint_url, params = get_aws_connection_info(self.module)
        if params.get("aws_config") is not None:  # the user's aws_config wins, as in amazon.aws's own clients
            config = config.merge(params["aws_config"])
        if self._role_session is None:
            source = boto3.session.Session(profile_name=params.get("profile_name"), aws_access_key_id=params.get("aws_access_key_id"),
                                           aws_secret_access_key=params.get("aws_secret_access_key"),
                                           aws_session_token=params.get("aws_session_token"))
            self._role_session = assumed_role_session(source, self.role_arn, self.role_session_name, self.external_id,
                                                      region=self.region, endpoint_url=endpoint_url, verify=params.get("verify"),
                                                      config=client_config())
        return self._role_session.client(service, region_name=self.region, endpoint_url=endpoint_url, verify=params.get("verify"), config=config)


def assumed_role_session(source, role_arn, session_name, external_id=None, region=None, endpoint_url=None, verify=None, config=None):
    """A boto3 Session that is role_arn, assumed with `source`'s credentials, renewing itself before each session ends.

    The credentials are botocore's own (AssumeRoleCredentialFetcher with DeferredRefreshableCredentials, as botocore
    builds for a role_arn profile): it calls AssumeRole again 10 to 15 minutes before expiry. The first AssumeRole
    happens here, so a refusal is one clear line now rather than an error inside the first call.
    """
    source_credentials = source.get_credentials()
    if source_credentials is None:
        raise PatchingError(f"sts:AssumeRole failed for {role_arn}: no AWS credentials to assume it with")
    extra = {"RoleSessionName": session_name}
    if external_id:
        extra["ExternalId"] = external_id
    sts_creator = functools.partial(source.client, region_name=region, endpoint_url=endpoint_url, verify=verify, config=config)
    fetcher = AssumeRoleCredentialFetcher(sts_creator, source_credentials, role_arn, extra_args=extra)
    credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
    try:
        credentials.get_frozen_credentials()
    except Exception as e:  # pylint: disable=broad-except
        if is_aws_error(e):
            raise PatchingError(aws_error_message(e, "sts:AssumeRole", role_arn)) from None
        raise
    role_session = botocore.session.Session(profile=source.profile_name if source.profile_name != "default" else None)
    # botocore has no public setter for a refreshable credentials object.
    role_session._credentials = credentials  # pylint: disable=protected-access
    return boto3.session.Session(botocore_session=role_session, region_name=region)


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
