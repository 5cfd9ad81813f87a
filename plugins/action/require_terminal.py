# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fail with one line unless ansible-playbook has an interactive terminal (docs: plugins/modules/require_terminal.py).

Workers are detached from the terminal, so the test is Ansible's own: a zero-second prompt through the controller's
display, which raises AnsiblePromptNoninteractive when stdin is not a terminal or the run is in the background, the
same rule by which ansible.builtin.pause skips its prompt.
"""

from __future__ import annotations

from ansible.errors import AnsiblePromptNoninteractive
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("msg",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result["changed"] = False
        try:
            display.prompt_until("(a terminal is attached: the run will pause where it was asked to)", seconds=0)
        except AnsiblePromptNoninteractive:
            result.update(failed=True, interactive=False, msg=self._task.args.get("msg") or "this run needs an interactive terminal")
            return result
        result["interactive"] = True
        return result
