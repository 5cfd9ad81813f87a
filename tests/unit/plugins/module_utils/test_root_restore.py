"""Rollback domain (root_restore): pre-flight refusals and the batched task wait."""

from ansible_collections.cms.patching.plugins.module_utils.root_restore import preflight_error, read_images, wait_tasks
from ansible_collections.cms.patching.tests.unit.fakes.ssm import FakeClock, iid

AMI = "ami-0123456789abcdef0"


def test_preflight_refusals():
    instances = {iid(1): "running", iid(2): "stopped"}
    images = {AMI: {"state": "available", "tags": {"cms-patching:source-instance": iid(1)}},
              "ami-00000000": {"state": "pending", "tags": {}}}
    assert preflight_error(iid(1), AMI, instances, images) is None
    assert "needs a running instance" in preflight_error(iid(2), AMI, instances, images)
    assert "not found" in preflight_error(iid(3), AMI, instances, images)
    assert "not available" in preflight_error(iid(1), "ami-00000000", instances, images)
    assert "not found" in preflight_error(iid(1), "ami-11111111", instances, images)
    instances[iid(4)] = "running"
    assert "is the backup of" in preflight_error(iid(4), AMI, instances, images)


class _Paginator:
    """botocore's paginator in small: follows NextToken until the last page."""

    def __init__(self, method):
        self.method = method

    def paginate(self, **params):
        token = None
        while True:
            page = self.method(**params, **({"NextToken": token} if token else {}))
            yield page
            token = page.get("NextToken")
            if not token:
                return


def _page(items, key, page_size, token):
    """AWS answers in pages of its own size when it likes (EC2 API Reference, "Pagination")."""
    start = int(token or 0)
    page = {key: items[start:start + page_size]}
    if start + page_size < len(items):
        page["NextToken"] = str(start + page_size)
    return page


class FakeEc2:
    def __init__(self, clock, done_at, page_size=1000, images=()):
        self.clock = clock
        self.done_at = done_at  # task id -> (time, final state)
        self.page_size = page_size
        self.images = list(images)
        self.calls = []

    def get_paginator(self, op):
        return _Paginator(getattr(self, op))

    def describe_replace_root_volume_tasks(self, aws_retry=False, ReplaceRootVolumeTaskIds=(), NextToken=None):
        if not NextToken:
            self.calls.append(list(ReplaceRootVolumeTaskIds))
        tasks = []
        for task_id in ReplaceRootVolumeTaskIds:
            at, final = self.done_at[task_id]
            tasks.append({"ReplaceRootVolumeTaskId": task_id, "TaskState": final if self.clock() >= at else "in-progress"})
        return _page(tasks, "ReplaceRootVolumeTasks", self.page_size, NextToken)

    def describe_images(self, aws_retry=False, Filters=(), NextToken=None):
        wanted = Filters[0]["Values"]
        return _page([i for i in self.images if i["ImageId"] in wanted], "Images", self.page_size, NextToken)


def test_wait_tasks_polls_open_tasks_in_batches_until_done_or_timeout():
    clock = FakeClock()
    done_at = {f"replacevol-{n}": (2, "succeeded") for n in range(60)}
    done_at["replacevol-0"] = (1, "failed")
    done_at["replacevol-1"] = (99, "succeeded")
    ec2 = FakeEc2(clock, done_at)
    states, error = wait_tasks(ec2, list(done_at), timeout=5, poll_interval=1, clock=clock, sleep=clock.sleep)
    assert error is None
    assert states["replacevol-0"] == "failed" and states["replacevol-1"] == "in-progress" and states["replacevol-5"] == "succeeded"
    assert [len(c) for c in ec2.calls[:2]] == [50, 10]
    assert ec2.calls[-1] == ["replacevol-1"]  # later polls ask only for the open task
    assert clock.t == 5


def test_wait_tasks_reads_every_page():
    clock = FakeClock()
    done_at = {f"replacevol-{n}": (1, "succeeded") for n in range(3)}
    ec2 = FakeEc2(clock, done_at, page_size=1)
    states, error = wait_tasks(ec2, list(done_at), timeout=5, poll_interval=1, clock=clock, sleep=clock.sleep)
    assert error is None and states == {t: "succeeded" for t in done_at}
    assert clock.t == 1  # the task on the last page was seen at the first poll after it ended


def test_read_images_reads_every_page():
    images = [{"ImageId": f"ami-0000000{n}", "State": "available", "Tags": []} for n in range(3)]
    found = read_images(FakeEc2(FakeClock(), {}, page_size=2, images=images), [i["ImageId"] for i in images])
    assert sorted(found) == [i["ImageId"] for i in images]
