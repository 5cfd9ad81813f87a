"""The evidence report of a real night on the simulator that max_fail_percentage stopped.

Every instance ends with a final status and a reason a change manager can read; the run says in one sentence why it
stopped (report, callback); and the HTML report renders in a real browser (Debian's headless Chromium) with the
summary, the failures and one timeline bar per wave, and loads nothing from outside itself.
"""

import csv
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
import zlib
from html.parser import HTMLParser

import pytest

from helpers import FAST, FAST_VARS, read_report, run_playbook, write_fleet_inventory

from ansible_collections.cms.patching.plugins.module_utils.report import batch_position, max_fail_stops, serial_sizes

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
STATUSES = ("skipped", "discovered", "backed_up", "not_patched", "patched", "failed", "rolled_back")


@pytest.fixture(scope="module")
def stopped_run(sim_url, tmp_path_factory):
    from conftest import Sim  # pylint: disable=import-outside-toplevel
    sim = Sim(sim_url)
    sim.configure(**FAST)
    tag = f"evidence-{uuid.uuid4().hex[:8]}"
    groups = [{"count": 6, "name_prefix": "ok"}, {"count": 1, "name_prefix": "off", "faults": ["ssm-offline"]},
              {"count": 1, "name_prefix": "amifail", "faults": ["ami-fail"]}]
    instances = sim.seed({"region": "us-east-1", "tags": {"cms-test": tag}, "groups": groups})
    # The plan takes hosts in instance-id order, and ids are random: the failing instance is the ok one with the lowest
    # id, so it lands in wave 1 or 2 of [1], [2], [2], [2] and later waves are always left to stop (the simulator reads
    # the sim:fault tag when the command runs).
    bad = min(i["instance_id"] for i in instances if i["name"].startswith("ok"))
    sim.client("ec2").create_tags(Resources=[bad], Tags=[{"Key": "Name", "Value": "bad-001"}, {"Key": "sim:fault", "Value": "patch-fail"}])
    instances = [dict(i, name="bad-001") if i["instance_id"] == bad else i for i in instances]
    workdir = tmp_path_factory.mktemp("evidence")
    run_id = f"evidence-{uuid.uuid4().hex[:8]}"
    extra = dict(FAST_VARS, cms_patching_run_id=run_id, cms_patching_report_dir=str(workdir / "reports"),
                 cms_patching_serial=[1, 2], cms_patching_max_fail_percentage=10)
    proc = run_playbook("playbooks/patch.yml", sim.env, inventory=write_fleet_inventory(workdir, tag), extra_vars=extra)
    report, entries = read_report(workdir / "reports", run_id)
    names = {i["instance_id"]: i["name"] for i in instances}
    return {"sim": sim, "proc": proc, "report": report, "entries": entries, "names": names, "run_id": run_id,
            "directory": workdir / "reports" / run_id}


def test_a_night_stopped_by_max_fail_explains_every_instance(stopped_run):
    proc, report, entries, names = stopped_run["proc"], stopped_run["report"], stopped_run["entries"], stopped_run["names"]
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert set(entries) == set(names)
    bad = next(i for i, n in names.items() if n.startswith("bad"))
    stop = report["stop"]
    # The wave holding the failing instance ended the play, wherever the plan put it: a canary of one failing ends it
    # whatever max_fail_percentage says (the whole batch failed), a wave of two with one failure is 50 % > 10 %.
    assert (entries[bad]["final_status"], entries[bad]["reason"]) == ("rolled_back", "patch_failed")
    assert stop["reason"] == "stopped_by_max_fail" and stop["wave"] == entries[bad]["wave"]
    assert (stop["failed"], stop["max_fail_percentage"], stop["whole_batch_failed"]) == (1, 10, stop["batch_size"] == 1)
    # No wave after the stop ran (a wave whose hosts all failed their backup runs no task, so records nothing).
    numbers = [w["number"] for w in report["waves"]]
    assert numbers == sorted(set(numbers)) and numbers[-1] == stop["wave"]
    for iid, entry in entries.items():
        name = names[iid]
        assert entry["final_status"] in STATUSES, (name, entry)
        if entry["final_status"] == "skipped":
            assert entry["discovery"]["reasons"] == ["ssm_offline"] and name.startswith("off"), name
        elif entry["final_status"] != "patched":
            assert entry.get("reason"), (name, entry)  # every instance that ends without being patched says why
    assert (entries[next(i for i, n in names.items() if n.startswith("amifail"))]["reason"]) == "backup_failed"
    left = [e for e in entries.values() if e["final_status"] == "not_patched"]
    assert left and len(left) == stop["not_patched"] == report["summary"]["not_patched"]
    assert {(e["reason"], e["stop_wave"]) for e in left} == {("stopped_by_max_fail", stop["wave"])}
    assert all(e["backup"]["verified"] and e["steps"]["backup"]["started_at"] <= e["steps"]["backup"]["ended_at"] for e in left)
    assert not report["summary"]["backed_up"]  # schema 1 reported these as backed_up, with no word why
    # Nothing was sent to the instances left: the report tells the truth about AWS.
    commands = stopped_run["sim"].client("ssm").get_paginator("list_commands").paginate().build_full_result()["Commands"]
    sent = {i for c in commands if c.get("Comment", "").startswith(f"cms-patching {stopped_run['run_id']} patch ") for i in c["InstanceIds"]}
    assert sent and not sent & {e["instance_id"] for e in left}


def test_the_run_says_in_one_sentence_why_it_stopped(stopped_run):
    report, stop = stopped_run["report"], stopped_run["report"]["stop"]
    assert report["headline"].startswith(f"Stopped after wave {stop['wave']} of {stop['of']}")
    assert report["headline"].endswith(f"{stop['not_patched']} instance{'' if stop['not_patched'] == 1 else 's'} not patched (stopped_by_max_fail).")
    if stop["whole_batch_failed"]:
        assert "Ansible ends the play when a whole batch fails, whatever max_fail_percentage (10%) says" in report["headline"]
    out = stopped_run["proc"].stdout
    assert f"why: {report['headline']}" in out  # the patch_summary callback, after the play ended early
    assert f"report html: {stopped_run['directory'] / 'report.html'}" in out


def test_the_csv_has_one_row_per_instance_with_the_new_columns(stopped_run):
    with open(stopped_run["directory"] / "report.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(stopped_run["entries"])
    assert {"wave", "zone", "alarm_name", "backup_started_at", "patch_ended_at"} <= set(rows[0])
    assert [r["final_status"] for r in rows][:2] == ["failed", "rolled_back"]  # failures first
    assert {r["reasons"] for r in rows if r["final_status"] == "not_patched"} == {"stopped_by_max_fail"}
    assert all(r["backup_started_at"] for r in rows if r["final_status"] in ("not_patched", "patched", "rolled_back"))


# ---------------------------------------------------------------- the HTML report in a real browser


class Dom(HTMLParser):
    """What the checks need from a DOM: the text under each id, the classes of every element, list items by list id."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.classes, self.items = [], {}, [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.classes.append((tag, (attrs.get("class") or "").split()))
        parent = next((i for _t, i in reversed(self.stack) if i), None)
        if tag == "li" and parent:
            self.items.setdefault(parent, []).append("")
        if tag not in ("meta", "br", "img", "input", "link"):
            self.stack.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _tag, ident in self.stack:
            if ident:
                self.text[ident] = self.text.get(ident, "") + data
        parent = next((i for _t, i in reversed(self.stack) if i), None)
        if parent in self.items and any(t == "li" for t, _i in self.stack):
            self.items[parent][-1] += data


def references_outside(text):
    """Everything in the file that would load something from elsewhere."""
    found = re.findall(r"https?:", text, re.I) + re.findall(r"@import", text, re.I)
    found += [u for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text, re.I) if not u.startswith("data:")]
    found += [v for v in re.findall(r"\b(?:src|href|xlink:href|srcset|action|data|poster)\s*=\s*['\"]?([^'\" >]*)", text, re.I)
              if not v.startswith(("#", "data:"))]
    found += re.findall(r"<(?:script|link|iframe|object|embed|img|base)\b", text, re.I)
    return found


def chromium(args, profile, timeout=180, wait_for=None):
    """Run headless Chromium; poll until it exits (and `wait_for` has content), killing it after `timeout` seconds."""
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
           f"--user-data-dir={profile}"] + (["--no-sandbox"] if os.geteuid() == 0 else []) + args
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if wait_for and os.path.exists(wait_for) and os.path.getsize(wait_for) > 0 and proc.poll() is None:
                time.sleep(0.5)  # written: give it a moment to exit on its own
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0 or (wait_for and os.path.exists(wait_for)), f"chromium failed ({proc.returncode}): {err[-2000:]}"
    return out


def png_pixels(path):
    """(width, height, decompressed scanlines) of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(idat)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("no chromium on PATH: .ci/run installs Debian's chromium with apt when run as root; elsewhere install "
                    "the chromium package to run the report's browser test")
    return CHROMIUM


def test_the_html_report_refers_to_nothing_outside_itself(stopped_run):
    text = (stopped_run["directory"] / "report.html").read_text(encoding="utf-8")
    assert references_outside(text) == []
    assert "<svg" in text and "<script" not in text


def test_the_html_report_renders_in_headless_chromium(stopped_run, browser, tmp_path):  # pylint: disable=unused-argument
    report, page = stopped_run["report"], stopped_run["directory"] / "report.html"
    dom_text = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-dom")
    dom = Dom()
    dom.feed(dom_text)
    assert "</svg>" in dom_text and "Patch run" in dom_text  # the browser parsed and serialised the page
    assert dom.text["summary"].strip() == report["headline"]
    failed = sorted(e["instance_id"] for e in report["instances"] if e["final_status"] in ("failed", "rolled_back"))
    assert sorted(item.split()[0] for item in dom.items["failures"]) == failed
    assert all(re.search(r": (failed|rolled_back) \((backup_failed|patch_failed)\)", item) for item in dom.items["failures"])
    assert "stopped_by_max_fail" in dom.text["not-patched"]
    bars = [c for tag, c in dom.classes if tag == "rect" and "wave-bar" in c]
    assert len(bars) == len(report["waves"]) >= 1  # one bar per wave
    assert "wave-stop" in bars[-1]  # the wave that stopped the play is the last one
    assert [tag for tag, c in dom.classes if "step-backup" in c] == ["rect"]

    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()], tmp_path / "profile-shot", wait_for=shot)
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot of non-trivial size"
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1280, 1600)
    assert len(set(pixels)) > 16  # not a blank page: text, cards and coloured bars


# ---------------------------------------------------------------- what the report assumes of Ansible

PROBE = """
- hosts: all
  gather_facts: false
  connection: local
  serial: {serial}
  max_fail_percentage: {pct}
  tasks:
    - name: Batch
      ansible.builtin.debug:
        msg: "BATCH {{{{ ansible_play_batch | join(',') }}}}"
      run_once: true
    - name: Fail the bad hosts
      ansible.builtin.fail:
        msg: bad
      when: inventory_hostname in {bad}
- hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - name: Later play
      ansible.builtin.debug:
        msg: LATER PLAY RAN
"""


@pytest.mark.parametrize("serial,pct,bad", [
    ([1, 2, 3], 10, ["h2"]),      # 1 of 2 failed: 50 % > 10 %
    ([1, 2, 3], 100, ["h1"]),     # the canary failed: the whole batch, whatever max_fail_percentage says
    ([1, 2, 3], 40, ["h4"]),      # 1 of 3 is not above 40 %: the play goes on
    ([2, 4], 50, ["h1"]),         # 1 of 2 is not above 50 %
    ([2, 4], 50, ["h1", "h2"]),   # the whole batch
])
def test_ansible_stops_the_play_and_every_later_play_where_the_report_says(tmp_path, serial, pct, bad):
    """The report decides a max_fail stop at the stopping wave's own write because Ansible runs nothing after it, not even
    a later play that would finalise the report; and its rule (report.max_fail_stops) is Ansible's."""
    hosts = [f"h{n}" for n in range(1, 7)]
    (tmp_path / "hosts.ini").write_text("\n".join(hosts) + "\n")
    (tmp_path / "probe.yml").write_text(PROBE.format(serial=serial, pct=pct, bad=bad))
    env = dict(os.environ, ANSIBLE_CONFIG=str(tmp_path / "none.cfg"))
    (tmp_path / "none.cfg").write_text("[defaults]\nretry_files_enabled = false\nstdout_callback = default\n")
    proc = run_playbook(str(tmp_path / "probe.yml"), env, inventory=tmp_path / "hosts.ini",
                        extra_vars={"ansible_python_interpreter": sys.executable})
    ran = [line.split("BATCH ", 1)[1].split('"')[0].split(",") for line in proc.stdout.splitlines() if '"msg": "BATCH ' in line]
    assert ran and proc.returncode == (2 if bad else 0), proc.stdout[-2000:] + proc.stderr[-2000:]
    expected, stopped = [], False
    for batch in ran:
        size = batch_position(hosts, serial, batch)[1]
        expected.append(batch)
        stopped = max_fail_stops(len(set(batch) & set(bad)), size, pct)
        if stopped:
            break
    assert ran == expected  # no batch ran after the one the report says stops the play
    assert ("LATER PLAY RAN" in proc.stdout) is (not stopped), proc.stdout[-2000:]
    assert stopped is (len(ran) < len(serial_sizes(serial, len(hosts)))), ran
