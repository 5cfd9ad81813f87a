#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cms.patching contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: require_terminal
short_description: Fail unless ansible-playbook runs with an interactive terminal
version_added: 0.1.0
description:
  - An action plugin that runs on the controller only. It fails with O(msg) when a prompt could not be answered - stdin is
    not a terminal, or the run is in the background - by the rule C(ansible.builtin.pause) uses to skip its prompt.
  - The settings play uses it to refuse an unattended run with C(cms_patching_pause_after_canary=true) before any change,
    instead of letting the pause go by unanswered.
options:
  msg:
    description: The one-line error without a terminal.
    type: str
author:
  - cms.patching contributors (@cms-patching)
"""

EXAMPLES = r"""
- name: Refuse to run unattended when a pause is asked for
  cms.patching.require_terminal:
    msg: cms_patching_pause_after_canary needs a terminal; use the AWX workflow's approval node instead
  when: cms_patching_pause_after_canary | bool
"""

RETURN = r"""
interactive:
  description: Whether a terminal is attached.
  returned: always
  type: bool
"""
