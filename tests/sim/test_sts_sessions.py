"""STS sessions end as AWS ends them: AssumeRole's DurationSeconds (within the role's MaxSessionDuration, one hour when
roles are chained), the sts_session_s cap, and expired-token errors.

Expiry is wall time; sts_session_s (per access key) makes sessions last a few seconds (long enough for a call made
right after AssumeRole to land in time on a loaded machine), so these tests wait for an expiry by polling, never by
asserting how long anything took. Expirations are checked against the time just before and just after the
AssumeRole call, which holds however slow the machine is.
"""
from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, CachedCredentialFetcher, DeferredRefreshableCredentials
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError
from botocore.session import get_session

from .conftest import wait_for

ROLE = "arn:aws:iam::222222222222:role/cms-patching"
SESSION_S = 8
# botocore's refresh windows (15/10 min before expiry, and the fetcher's 15-minute cache window), shortened for SESSION_S
# sessions: a fresh session is used for 3 s, then renewed with 5 s (at least 4 s) left to do so on a loaded machine.
ADVISORY_S, MANDATORY_S = 5.0, 4.0
# The sim writes Expiration with microseconds (truncated); allow one millisecond for that and the parse.
ROUNDING_S = 0.001
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


def _timed_assume(sim, sts=None, role=ROLE, **params):
    """AssumeRole, with the wall time just before and just after the call."""
    before = time.time()
    creds = (sts or sim.client("sts")).assume_role(RoleArn=role, RoleSessionName="cms-test", **params)["Credentials"]
    return before, creds, time.time()


def _lasts(timed, seconds):
    """The session ends `seconds` after the call: Expiration - after <= seconds <= Expiration - before."""
    before, creds, after = timed
    expiration = creds["Expiration"].timestamp()
    return expiration - after - ROUNDING_S <= seconds <= expiration - before + ROUNDING_S


def _refusal(call):
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def _role(sim, max_session_s):
    """A role in the sim's IAM with this MaxSessionDuration (IAM API reference, CreateRole)."""
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
    return sim.client("iam").create_role(RoleName=f"cms-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust),
                                         MaxSessionDuration=max_session_s)["Role"]["Arn"]


TOO_LONG = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
CHAINED_TOO_LONG = "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."


def test_duration_seconds_sets_the_expiration_default_one_hour(sim):
    assert _lasts(_timed_assume(sim), 3600)
    assert _lasts(_timed_assume(sim, DurationSeconds=900), 900)
    assert not _lasts(_timed_assume(sim, DurationSeconds=900), 3600)  # the check tells the two apart


def test_duration_seconds_above_the_default_role_maximum_is_refused(sim):
    assert _refusal(lambda: _assume(sim, DurationSeconds=3601)) == ("ValidationError", TOO_LONG)
    assert _lasts(_timed_assume(sim, DurationSeconds=3600), 3600)


def test_the_role_maximum_comes_from_iam_or_from_sts_role_max_session_s(sim):
    role = _role(sim, 7200)
    assert _lasts(_timed_assume(sim, role=role, DurationSeconds=7200), 7200)
    assert _refusal(lambda: _timed_assume(sim, role=role, DurationSeconds=7201)) == ("ValidationError", TOO_LONG)
    # Roles the sim's IAM does not hold (such as ROLE) take their maximum from sts_role_max_session_s.
    sim.config(sts_role_max_session_s=43200)
    assert _lasts(_timed_assume(sim, DurationSeconds=43200), 43200)
    assert _refusal(lambda: _timed_assume(sim, role=role, DurationSeconds=7201)) == ("ValidationError", TOO_LONG)


def test_role_chaining_is_limited_to_one_hour(sim):
    sim.config(sts_role_max_session_s=43200)
    chained = _client(sim, _session(sim, _assume(sim)), "sts")
    assert _refusal(lambda: _timed_assume(sim, sts=chained, DurationSeconds=3601)) == ("ValidationError", CHAINED_TOO_LONG)
    assert _lasts(_timed_assume(sim, sts=chained, DurationSeconds=3600), 3600)
    assert _lasts(_timed_assume(sim, sts=chained), 3600)
    # The long-term key may still ask for the role's full maximum.
    assert _lasts(_timed_assume(sim, DurationSeconds=43200), 43200)


@pytest.mark.parametrize("duration", [899, 43201])
def test_duration_seconds_outside_the_documented_range_is_refused(sim, duration):
    # botocore validates the range itself; switch that off to see what the service answers.
    sts = sim.session.client("sts", region_name="us-east-1", endpoint_url=sim.url, config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as err:
        sts.assume_role(RoleArn=ROLE, RoleSessionName="cms-test", DurationSeconds=duration)
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_sts_session_s_caps_the_session_and_its_expiration(sim):
    sim.config(sts_session_s=SESSION_S)
    timed = _timed_assume(sim, DurationSeconds=3600)
    assert _lasts(timed, SESSION_S)  # the response says when the session really ends, so SDKs can refresh in time
    creds = timed[1]
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
    timed = _timed_assume(sim, DurationSeconds=900)
    assert _lasts(timed, 900)
    creds = timed[1]
    assert _error_code(_client(sim, _session(sim, creds), "ssm").list_commands) is None


def test_botocore_refreshable_assume_role_credentials_outlive_short_sessions(sim, monkeypatch):
    """What the collection relies on: botocore refreshes before expiry. Its windows (15/10 min before, and the fetcher's
    15-minute cache window) are shortened here to ADVISORY_S and MANDATORY_S, to fit SESSION_S sessions."""
    monkeypatch.setattr(RefreshableCredentials, "_advisory_refresh_timeout", ADVISORY_S)
    monkeypatch.setattr(RefreshableCredentials, "_mandatory_refresh_timeout", MANDATORY_S)
    monkeypatch.setattr(CachedCredentialFetcher, "DEFAULT_EXPIRY_WINDOW_SECONDS", ADVISORY_S)
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
    wait_for(lambda: ec2.describe_instances() and sim.stats()["calls"].get("sts:AssumeRole", 0) >= before + 3, timeout=60, interval=0.2)
    assert sim.stats()["calls"]["sts:AssumeRole"] >= before + 3
