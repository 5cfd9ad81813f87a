"""An invocation whose status could not be read is never reported as "nothing ran" (issue 15, section 2).

When AWS refuses every read until the end (expired credentials, a revoked role), the runner used to classify the
instance from the last status it had seen: none at all reads as Pending, so the instance ended delivery_timed_out,
"nothing ran", with no rollback, and the error said "CancelCommand sent" although that call had failed too.
"""

from ansible_collections.cms.patching.tests.unit.fakes.ssm import FakeClock, FakeSsm, client_error, iid, request, runner

from ansible_collections.cms.patching.plugins.module_utils.waves import needs_rollback, wave_entries

GATE = [{"instance_id": iid(1), "image_id": "ami-0123456789abcdef0"}]


class RefusingSsm(FakeSsm):
    """SendCommand works; from `refuse_at` (fake seconds) on, every later call fails as it does once a session expired."""

    def __init__(self, clock, refuse_at=0.0, **kw):
        super().__init__(clock, **kw)
        self.refuse_at = refuse_at

    def _refuse(self, op):
        if self.clock() >= self.refuse_at:
            raise client_error("ExpiredTokenException", op)

    def list_commands(self, **kw):
        self._refuse("ListCommands")
        return super().list_commands(**kw)

    def list_command_invocations(self, **kw):
        self._refuse("ListCommandInvocations")
        return super().list_command_invocations(**kw)

    def cancel_command(self, **kw):
        self._record("cancel_command", dict(kw))
        self._refuse("CancelCommand")
        return super().cancel_command(**kw)


def test_a_status_never_read_is_state_unknown_not_delivery_timed_out():
    clock = FakeClock()
    ssm = RefusingSsm(clock, plan={iid(1): "hang"})
    res = runner(ssm, clock, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.outcome == "state_unknown"
    assert "ExpiredTokenException" in res.error and "last read: none" in res.error
    # The cancel was tried and failed: the error says so, and never that it was sent.
    assert ssm.count("cancel_command") == 1
    assert "CancelCommand sent" not in res.error and "ssm:CancelCommand failed" in res.error


def test_a_status_last_read_in_progress_is_state_unknown_when_later_reads_fail():
    clock = FakeClock()
    # Read InProgress at the deadline (3 s) and cancelled then; every read after that fails.
    ssm = RefusingSsm(clock, refuse_at=3.2, plan={iid(1): "hang"})
    res = runner(ssm, clock, poll=0.5, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.outcome == "state_unknown" and res.status == "InProgress"
    assert "last read: InProgress" in res.error and res.error.endswith("CancelCommand sent")


def test_a_read_that_fails_once_and_then_works_changes_nothing():
    clock = FakeClock()
    ssm = FakeSsm(clock, plan={iid(1): "hang"}, fail_polls=1, fail_lists=1)
    res = runner(ssm, clock, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.outcome == "timed_out" and res.error.endswith("CancelCommand sent")


class BlinkingSsm(FakeSsm):
    """Reads fail only while the fake clock is inside a window: ListCommandInvocations in `invocations`, ListCommands in
    `commands` (each a (from, until) pair of fake seconds). Every other call works."""

    def __init__(self, clock, invocations=(0, 0), commands=(0, 0), **kw):
        super().__init__(clock, **kw)
        self.windows = dict(ListCommandInvocations=invocations, ListCommands=commands)

    def _refuse(self, op):
        start, end = self.windows[op]
        if start <= self.clock() < end:
            raise client_error("ExpiredTokenException", op)

    def list_commands(self, **kw):
        self._refuse("ListCommands")
        return super().list_commands(**kw)

    def list_command_invocations(self, **kw):
        self._refuse("ListCommandInvocations")
        return super().list_command_invocations(**kw)


def test_a_status_unread_at_the_deadline_is_state_unknown_even_when_reads_recover():
    clock = FakeClock()
    # Polls at 0, 1, 2, 3...: the command is listed as executing, so its invocations are first read at the deadline
    # (3 s), and that read fails. The cancel works and the next read (4 s) shows Cancelled. It was running all along.
    ssm = BlinkingSsm(clock, invocations=(2.5, 3.5), plan={iid(1): "hang"})
    res = runner(ssm, clock, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.status == "Cancelled"
    assert res.outcome == "state_unknown", res.error
    assert "execution_timeout 3s" in res.error and "ExpiredTokenException" in res.error
    assert res.error.endswith("CancelCommand sent") and ssm.count("cancel_command") == 1


def test_an_earlier_pending_read_does_not_make_an_unread_deadline_delivery_timed_out():
    clock = FakeClock()
    # ListCommands fails at 0 s, so the invocations are read then: Pending. At the deadline their read fails.
    ssm = BlinkingSsm(clock, commands=(0, 0.5), invocations=(2.5, 3.5), plan={iid(1): "hang"})
    res = runner(ssm, clock, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.outcome == "state_unknown" and "last read: Pending" in res.error


def test_an_earlier_in_progress_read_still_makes_an_unread_deadline_timed_out():
    clock = FakeClock()
    # ListCommands fails at 1.5 s, so the invocations are read then: InProgress, it ran. At the deadline their read
    # fails; the latest successful read says enough: a timeout of a command that ran (rolled back), not unknown.
    ssm = BlinkingSsm(clock, commands=(1.5, 2.5), invocations=(2.5, 3.5), plan={iid(1): "hang"})
    res = runner(ssm, clock, poll=0.5, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.outcome == "timed_out" and res.error.startswith("still running after execution_timeout 3s")


def test_an_undelivered_command_read_at_the_deadline_is_still_delivery_timed_out():
    clock = FakeClock()
    ssm = BlinkingSsm(clock, plan={iid(1): "undelivered"})
    res = runner(ssm, clock, grace=4).run([request([iid(1)], execution_timeout=3)])[iid(1)]
    assert res.outcome == "delivery_timed_out" and res.error.endswith("CancelCommand sent")


def test_state_unknown_fails_the_instance_without_rollback():
    patch = [{"instance_id": iid(1), "outcome": "state_unknown"}]
    ok = [{"instance_id": iid(1), "outcome": "success"}]
    entry = wave_entries([iid(1)], GATE, ok, patch, [], [], [])[0]
    assert (entry["final_status"], entry["reason"]) == ("failed", "state_unknown")
    assert entry["rollback"]["performed"] is False and "validation" not in entry
    assert needs_rollback([iid(1)], GATE, ok, patch, [], []) == []
