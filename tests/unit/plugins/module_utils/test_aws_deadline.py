"""Retries stay inside a wait's deadline: real botocore clients (the collection's retry policy) against the
simulator answering every request with ThrottlingException (throttle_rate 1.0 for this test's key only).

Counts, never durations: botocore's backoff is set to zero so ten throttled attempts take no time.
"""

import boto3
import pytest
from botocore.retries import standard

from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper

from ansible_collections.cms.patching.plugins.module_utils.aws import (
    MAX_ATTEMPTS, RETRY, DeadlinePassed, bounded_by_deadline, call_deadline, client_config)
from ansible_collections.cms.patching.plugins.module_utils.errors import aws_error_message, is_aws_error
from ansible_collections.cms.patching.plugins.module_utils.models import RunConfig
from ansible_collections.cms.patching.plugins.module_utils.ssm.runner import CommandRequest, SentCommand, SsmRunner


class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


@pytest.fixture
def throttled(sim, monkeypatch):
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    sim.configure(throttle_rate=1.0)
    yield sim
    sim.configure(throttle_rate=0)


def ssm_client(sim):
    return bounded_by_deadline(boto3.client("ssm", region_name=sim.region, endpoint_url=sim.url, aws_access_key_id=sim.key,
                                            aws_secret_access_key=sim.secret, config=client_config()))


def test_without_a_deadline_a_throttled_call_makes_every_attempt(throttled):
    client = ssm_client(throttled)
    with pytest.raises(Exception) as err:
        client.list_commands()
    assert "ThrottlingException" in str(err.value)
    assert throttled.stats()["throttled"] == MAX_ATTEMPTS == 10


def test_a_call_before_the_deadline_retries_until_it_passes(throttled):
    clock = FakeClock()
    client = ssm_client(throttled)
    # the deadline passes while the second attempt is answered: the third is never sent
    client.meta.events.register("after-call-error", lambda **_: None)
    client.meta.events.register("needs-retry", lambda attempts, **_: setattr(clock, "t", 10.0) if attempts == 2 else None)
    with call_deadline(5.0, clock), pytest.raises(DeadlinePassed) as err:
        client.list_commands()
    assert throttled.stats()["throttled"] == 2
    assert is_aws_error(err.value)
    assert aws_error_message(err.value, "ssm:ListCommands") == (
        "ssm:ListCommands failed: ssm.ListCommands not retried: the wait's deadline has passed")


def test_past_the_deadline_a_call_is_sent_once_and_lifting_it_restores_retries(throttled):
    clock = FakeClock(100.0)
    client = ssm_client(throttled)
    with call_deadline(5.0, clock):
        with pytest.raises(DeadlinePassed):
            client.list_commands()
        assert throttled.stats()["throttled"] == 1
        with call_deadline(None), pytest.raises(Exception) as err:
            client.list_commands()
        assert "ThrottlingException" in str(err.value)
    assert throttled.stats()["throttled"] == 1 + MAX_ATTEMPTS


def test_runner_wait_past_its_deadline_reads_once_per_call_and_still_cancels_with_full_retries(throttled):
    """Every read of the wait is throttled: each goes out once (no retries past the deadline); the CancelCommand that
    enforces the deadline keeps every attempt. Without the bound: 50 throttled requests (ten per call)."""
    clock = FakeClock(1000.0)
    iid = "i-0123456789abcdef0"
    cmd = SentCommand(CommandRequest("AWS-RunPatchBaseline", [iid], "install", execution_timeout=60),
                      [iid], command_id="11111111-2222-3333-4444-555555555555", deadline=clock.t - 1)
    ssm = RetryingBotoClientWrapper(ssm_client(throttled), RETRY)  # as AwsSession.client wraps it
    runner = SsmRunner(ssm, RunConfig("run-1", poll_interval=30), clock=clock, sleep=clock.sleep,
                       cancel_grace=10)
    results = runner.wait([cmd])
    # poll 1: ListCommands, ListCommandInvocations (1 attempt each), CancelCommand (all attempts);
    # poll 2, past the cancel grace: ListCommands, ListCommandInvocations (1 attempt each)
    assert throttled.stats()["throttled"] == 4 + MAX_ATTEMPTS
    assert "ThrottlingException" in cmd.cancel_error
    assert results[iid].outcome == "state_unknown"
    assert "ListCommandInvocations not retried: the wait's deadline has passed" in results[iid].error
