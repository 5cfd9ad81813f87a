"""The fork_memory callback: the controller's objects are frozen before workers fork, and garbage is not frozen with them."""

import gc
import weakref

import pytest

from ansible_collections.cms.patching.plugins.callback.fork_memory import CallbackModule


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(name="callback")
def fixture_callback():
    gc.unfreeze()
    yield CallbackModule()
    gc.unfreeze()


def test_play_start_collects_garbage_before_freezing(callback):
    garbage = Node()
    ref = weakref.ref(garbage)
    del garbage
    callback.v2_playbook_on_play_start(None)
    assert ref() is None  # collected, not kept forever in the frozen set
    assert gc.get_freeze_count() > 0


def test_task_start_freezes_what_was_made_since(callback):
    callback.v2_playbook_on_play_start(None)
    before = gc.get_freeze_count()
    kept = [Node() for count in range(1000)]
    callback.v2_playbook_on_task_start(None, False)
    assert gc.get_freeze_count() >= before + len(kept)
    assert all(o is not kept[0] for o in gc.get_objects())  # out of every generation the collector walks


def test_handler_start_freezes_too(callback):
    callback.v2_playbook_on_play_start(None)
    before = gc.get_freeze_count()
    kept = [Node() for count in range(100)]
    callback.v2_playbook_on_handler_task_start(None)
    assert gc.get_freeze_count() >= before + len(kept)
