# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fork_memory
type: aggregate
short_description: Keep Ansible's forked workers from copying the controller's memory on large inventories
version_added: 0.1.0
description:
  - Ansible forks a worker process from the controller for every host of every task. The worker shares the controller's
    memory copy-on-write, but Python's garbage collector, when it runs in the worker, walks every object the controller
    holds and so copies nearly all of its pages. With thousands of hosts in the inventory that is a few hundred MB per
    worker in flight.
  - This callback moves the controller's objects out of the collector's reach (C(gc.freeze)) before each task, so the
    workers leave them shared. At the start of every play (and serial batch) it collects first, so garbage does not
    pile up in the frozen set.
  - It prints nothing. Enable it with C(callbacks_enabled = cms.patching.fork_memory) in C(ansible.cfg) (the
    collection's own C(ansible.cfg) does).
requirements:
  - enable in configuration
"""

import gc

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cms.patching.fork_memory"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play):
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def v2_playbook_on_task_start(self, task, is_conditional):
        gc.freeze()  # moves the objects made since into the frozen set; the workers of this task are forked after it

    def v2_playbook_on_handler_task_start(self, task):
        gc.freeze()
