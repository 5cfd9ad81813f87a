"""STS sessions end as AWS ends them: AssumeRole's DurationSeconds, the sts_session_s cap, and expired-token errors.

Expiry is wall time; sts_session_s (per access key) makes sessions last a few seconds (long enough for a call made
right after AssumeRole to land in time on a loaded machine), so these tests wait for an expiry by polling, never by
asserting how long anything took.
"""
from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, CachedCredentialFetcher, DeferredRefreshableCredentials
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError
from botocore.session import get_session

from .conftest import wait_for

ROLE = "arn:aws:iam::222222222222:role/cms-patching"
SESSION_S = 4
# (service, a read-only call, the error code AWS answers once the session has ended)
EXPIRED = [
    ("ec2", "describe_instances", "RequestExpired"),  # EC2 API reference, "Error codes"
    ("ssm", "list_commands", "ExpiredTokenException"),  # common errors of JSON-protocol services
    ("sts", "get_caller_identity", "ExpiredToken"),
]


def _assume(sim, **params):
    return sim.client("sts").assume_role(RoleArn=ROLE, RoleSessionName="cms-test", **params)["Credentials"]


def _session(sim, creds):
    return boto3.session.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"])


def _client(sim, session, service):  # no retries: each call is one request
    return session.client(service, region_name="us-east-1", endpoint_url=sim.url, config=Config(retries={"max_attempts": 1}))


def _error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


def _seconds_left(creds):
    return (creds["Expiration"] - datetime.now(timezone.utc)).total_seconds()


def test_duration_seconds_sets_the_expiration_default_one_hour(sim):
    default, short, long_ = _assume(sim), _assume(sim, DurationSeconds=900), _assume(sim, DurationSeconds=43200)
    # Differences between the three, so the test does not depend on how long the calls took.
    assert abs((default["Expiration"] - short["Expiration"]).total_seconds() - 2700) < 60
    assert abs((long_["Expiration"] - default["Expiration"]).total_seconds() - 39600) < 60


@pytest.mark.parametrize("duration", [899, 43201])
def test_duration_seconds_outside_the_documented_range_is_refused(sim, duration):
    # botocore validates the range itself; switch that off to see what the service answers.
    sts = sim.session.client("sts", region_name="us-east-1", endpoint_url=sim.url, config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as err:
        sts.assume_role(RoleArn=ROLE, RoleSessionName="cms-test", DurationSeconds=duration)
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_sts_session_s_caps_the_session_and_its_expiration(sim):
    sim.config(sts_session_s=SESSION_S)
    creds = _assume(sim, DurationSeconds=3600)
    assert _seconds_left(creds) < 60  # the response says when the session really ends, so SDKs can refresh in time
    session = _session(sim, creds)
    clients = {service: _client(sim, session, service) for service, _call, _code in EXPIRED}
    assert _error_code(clients["ec2"].describe_instances) is None
    assert wait_for(lambda: _error_code(clients["ec2"].describe_instances), timeout=30, interval=0.2) == "RequestExpired"
    # Once the session has ended, every service refuses it, each with its own code.
    assert [_error_code(getattr(clients[s], call)) for s, call, _code in EXPIRED] == [code for _s, _call, code in EXPIRED]


def test_a_session_works_until_it_ends_and_a_new_one_works_again(sim):
    sim.config(sts_session_s=SESSION_S)
    ec2 = _client(sim, _session(sim, _assume(sim)), "ec2")
    assert _error_code(ec2.describe_instances) is None
    assert wait_for(lambda: _error_code(ec2.describe_instances), timeout=30, interval=0.2) == "RequestExpired"
    # The long-term key that assumed the role never expires, and a fresh session works.
    assert _error_code(sim.client("ec2").describe_instances) is None
    assert _error_code(_client(sim, _session(sim, _assume(sim)), "ec2").describe_instances) is None


def test_without_a_cap_sessions_last_their_duration(sim):
    creds = _assume(sim, DurationSeconds=900)
    assert 800 < _seconds_left(creds) <= 900
    assert _error_code(_client(sim, _session(sim, creds), "ssm").list_commands) is None


def test_botocore_refreshable_assume_role_credentials_outlive_short_sessions(sim, monkeypatch):
    """What the collection relies on: botocore refreshes before expiry. Its windows (15/10 min before, and the fetcher's
    15-minute cache window) are shortened here to 2 s and 1.5 s, to fit 4-second sessions."""
    monkeypatch.setattr(RefreshableCredentials, "_advisory_refresh_timeout", 2.0)
    monkeypatch.setattr(RefreshableCredentials, "_mandatory_refresh_timeout", 1.5)
    monkeypatch.setattr(CachedCredentialFetcher, "DEFAULT_EXPIRY_WINDOW_SECONDS", 2.0)
    sim.config(sts_session_s=SESSION_S)
    botocore_session = get_session()
    botocore_session.set_credentials(sim.key, "testing")
    fetcher = AssumeRoleCredentialFetcher(
        lambda service, **kw: botocore_session.create_client(service, region_name="us-east-1", endpoint_url=sim.url, **kw),
        botocore_session.get_credentials(), ROLE, extra_args={"RoleSessionName": "cms-test"})
    botocore_session._credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")  # pylint: disable=protected-access
    ec2 = boto3.session.Session(botocore_session=botocore_session).client("ec2", region_name="us-east-1", endpoint_url=sim.url)
    before = sim.stats()["calls"].get("sts:AssumeRole", 0)
    # Keep calling until botocore has had to renew the session at least twice: no call may see an expired token.
    wait_for(lambda: ec2.describe_instances() and sim.stats()["calls"].get("sts:AssumeRole", 0) >= before + 3, timeout=30, interval=0.2)
    assert sim.stats()["calls"]["sts:AssumeRole"] >= before + 3
