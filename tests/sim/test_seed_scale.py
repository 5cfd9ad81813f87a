"""Seeding and describing a fleet larger than one RunInstances batch and one DescribeInstances page.

Counts only: how fast the simulator seeds and describes 5,000 instances is measured by `make bench` (scripts/bench.py,
"simulator speed"), which states its targets; no test here depends on the speed of the machine.
"""
from __future__ import annotations

import uuid

N = 1001  # three RunInstances batches of at most 500, two DescribeInstances pages of at most 1,000


def test_seed_batches_run_instances_and_describe_pages_through_all(sim):
    tag = uuid.uuid4().hex
    seeded = sim.seed(count=N, tags={"cms-seed": tag}, patch_group="web", environment="prod")
    assert len(seeded) == N
    assert sim.stats()["calls"]["ec2:RunInstances"] == 3
    pages = list(sim.client("ec2").get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:cms-seed", "Values": [tag]}], PaginationConfig={"PageSize": 1000}))
    found = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
    assert [sum(len(r["Instances"]) for r in p["Reservations"]) for p in pages] == [1000, 1]
    assert sorted(found) == sorted(s["instance_id"] for s in seeded)
