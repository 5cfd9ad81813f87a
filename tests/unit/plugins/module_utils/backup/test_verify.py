"""Verification rules and the batched poll loop."""

import pytest

from ansible_collections.cms.patching.plugins.module_utils.backup.verify import (
    FAILED, PENDING, VERIFIED, Job, classify, covers_devices, run_jobs,
)
from ansible_collections.cms.patching.tests.unit.fakes.ec2 import FakeEc2, instance, record

VOLS = [("/dev/xvda", "vol-1"), ("/dev/sdf", "vol-2")]
MAPS = (("/dev/xvda", "snap-1"), ("/dev/sdf", "snap-2"))


def snaps(state1="completed", state2="completed", vol1="vol-1", vol2="vol-2"):
    return {"snap-1": {"state": state1, "volume_id": vol1, "message": None},
            "snap-2": {"state": state2, "volume_id": vol2, "message": "disk gone" if state2 == "error" else None}}


def test_available_image_with_completed_snapshots_covering_all_volumes_is_verified():
    assert classify(record(mappings=MAPS), snaps(), VOLS) == (VERIFIED, None)


def test_not_yet_visible_image_is_pending():
    assert classify(None, {}, VOLS)[0] == PENDING


def test_pending_image_is_pending():
    assert classify(record(state="pending", mappings=MAPS), snaps("pending", "pending"), VOLS) == (PENDING, "image ami-00000001 is pending")


@pytest.mark.parametrize("state", ["failed", "invalid", "error", "deregistered"])
def test_failed_image_states_fail_with_reason(state):
    outcome, reason = classify(record(state=state, reason="Snapshot limit", mappings=MAPS), {}, VOLS)
    assert outcome == FAILED and reason == f"image ami-00000001 is {state}: Snapshot limit"


@pytest.mark.parametrize("image_state", ["pending", "available"])
def test_snapshot_in_error_fails_even_before_the_image_settles(image_state):
    outcome, reason = classify(record(state=image_state, mappings=MAPS), snaps(state2="error"), VOLS)
    assert outcome == FAILED and reason == "snapshot snap-2 of ami-00000001 is in state error: disk gone"


def test_available_image_waits_for_its_snapshots():
    assert classify(record(mappings=MAPS), snaps(state2="pending"), VOLS) == (PENDING, "snapshot snap-2 is pending")
    assert classify(record(mappings=MAPS), {"snap-1": snaps()["snap-1"]}, VOLS) == (PENDING, "snapshot snap-2 not visible yet")


def test_mapping_without_snapshot_fails():
    outcome, reason = classify(record(mappings=(("/dev/xvda", "snap-1"), ("/dev/sdf", None))), snaps(), VOLS)
    assert outcome == FAILED and reason == "image ami-00000001 has no snapshot for /dev/sdf"


def test_image_missing_a_volume_of_the_instance_fails():
    one = record(mappings=(("/dev/xvda", "snap-1"),))
    outcome, reason = classify(one, snaps(), VOLS)
    assert outcome == FAILED and reason == "image ami-00000001 does not cover volume(s) vol-2 (/dev/sdf)"


def test_snapshot_of_another_volume_does_not_count_as_coverage():
    outcome, reason = classify(record(mappings=MAPS), snaps(vol2="vol-9"), VOLS)
    assert outcome == FAILED and "vol-2 (/dev/sdf)" in reason


def test_snapshot_without_source_volume_covers_by_device_name():
    assert classify(record(mappings=MAPS), snaps(vol1=None, vol2=None), VOLS) == (VERIFIED, None)


def test_ephemeral_only_instance_extra_mappings_do_not_hurt():
    assert classify(record(mappings=MAPS), snaps(), VOLS[:1]) == (VERIFIED, None)


def test_covers_devices_for_reuse():
    assert covers_devices(record(mappings=MAPS), VOLS)
    assert not covers_devices(record(mappings=(("/dev/xvda", "snap-1"),)), VOLS)


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def make(n, polls_to_finish=2):
    ids = [f"i-{k:08x}" for k in range(1, n + 1)]
    ec2 = FakeEc2({i: instance(i) for i in ids})
    ec2.polls_to_finish = polls_to_finish
    jobs = [Job(i, name=f"b-{i}", description="d", volumes=volumes_of(ec2.instances[i])) for i in ids]
    return ec2, jobs


def volumes_of(inst):
    return [(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in inst["BlockDeviceMappings"]]


def starter(ec2, log):
    def start(job):
        log.append((job.instance_id, sum(1 for img in ec2.images.values() if img["State"] == "pending")))
        job.image_id = ec2.create_image(InstanceId=job.instance_id, Name=job.name, Description="d", NoReboot=True,
                                        TagSpecifications=[{"ResourceType": r, "Tags": []} for r in ("image", "snapshot")])["ImageId"]
    return start


def test_all_images_are_polled_together_not_per_image():
    ec2, jobs = make(30)
    clock = Clock()
    run_jobs(ec2, jobs, starter(ec2, []), 50, True, 100, 5, sleep=clock.sleep, clock=clock)
    assert all(j.outcome == VERIFIED for j in jobs)
    assert ec2.calls["create_image"] == 30
    assert ec2.calls["describe_images"] == 2 and ec2.calls["describe_snapshots"] == 2  # one each per poll
    assert clock.sleeps == [5, 5]


def test_max_concurrent_caps_images_in_flight_and_refills_as_they_finish():
    ec2, jobs = make(7, polls_to_finish=1)
    clock, log = Clock(), []
    run_jobs(ec2, jobs, starter(ec2, log), 3, True, 100, 1, sleep=clock.sleep, clock=clock)
    assert all(j.outcome == VERIFIED for j in jobs)
    assert max(in_flight for _i, in_flight in log) == 2  # at most 2 others pending when the 3rd starts
    assert ec2.calls["describe_images"] == 3  # 3 + 3 + 1 started, one poll per round


def test_timeout_fails_pending_images_without_dropping_them_and_unstarted_ones():
    ec2, jobs = make(3, polls_to_finish=100)
    clock = Clock()
    run_jobs(ec2, jobs, starter(ec2, []), 2, True, 10, 4, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [4, 4, 2]
    first, second, third = jobs
    assert first.outcome == FAILED and first.timed_out and first.image_id
    assert "timed out after 10s waiting for" in first.error and "(pending)" in first.error
    assert third.outcome == FAILED and third.image_id is None and third.error.startswith("not started")
    assert ec2.calls["create_image"] == 2


def test_no_wait_returns_after_starting_everything():
    ec2, jobs = make(4)
    clock = Clock()
    run_jobs(ec2, jobs, starter(ec2, []), 10, False, 100, 1, sleep=clock.sleep, clock=clock)
    assert [j.outcome for j in jobs] == [PENDING] * 4 and clock.sleeps == []
    assert ec2.calls["describe_images"] == 0


def test_no_wait_still_honours_max_concurrent():
    ec2, jobs = make(4, polls_to_finish=1)
    clock = Clock()
    run_jobs(ec2, jobs, starter(ec2, []), 2, False, 100, 1, sleep=clock.sleep, clock=clock)
    assert [j.outcome for j in jobs] == [VERIFIED, VERIFIED, PENDING, PENDING]
    assert ec2.calls["create_image"] == 4


def test_failed_start_takes_no_slot_and_others_go_on():
    ec2, jobs = make(3, polls_to_finish=1)
    clock = Clock()
    inner = starter(ec2, [])

    def start(job):
        if job.instance_id == "i-00000002":
            job.outcome, job.error = FAILED, "ec2:CreateImage failed"
            return
        inner(job)

    run_jobs(ec2, jobs, start, 1, True, 100, 1, sleep=clock.sleep, clock=clock)
    assert [j.outcome for j in jobs] == [VERIFIED, FAILED, VERIFIED]


def test_adopted_jobs_are_polled_not_created():
    ec2, jobs = make(2, polls_to_finish=1)
    starter(ec2, [])(jobs[0])
    adopted = Job(jobs[0].instance_id, volumes=jobs[0].volumes, record=record(image_id=jobs[0].image_id, state="pending"))
    clock = Clock()
    run_jobs(ec2, [adopted, jobs[1]], starter(ec2, []), 5, True, 100, 1, sleep=clock.sleep, clock=clock)
    assert adopted.outcome == VERIFIED and adopted.adopted and ec2.calls["create_image"] == 2
