"""Run a command and sample the memory of its whole process tree from /proc (no psutil needed)."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map():
    """{ppid: [pid, ...]} for every process visible in /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which may itself hold spaces or ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(root):
    """root and all its descendants."""
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def rss(pid):
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss(pid):
    """Proportional set size: shared pages (Ansible's forked workers share most of theirs) divided among the sharers."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def kind(pid, root_cmdline):
    """What a process of the controller's tree is: a forked worker, a module run, gone, or its program's name."""
    cmdline = _cmdline(pid)
    if not cmdline:
        return "gone"  # exited (or a zombie: its command line is empty)
    if b"AnsiballZ_" in cmdline:
        return "module"
    if cmdline == root_cmdline:
        return "worker"  # Ansible's workers are forks of the main process: same command line
    return os.path.basename(cmdline.split(b"\0")[0].decode(errors="replace"))


class Peak:
    """Largest single RSS and largest sums of RSS and of PSS over the tree, sampled every `interval` seconds.

    PSS is read every `pss_every` samples only: smaps_rollup walks page tables, too slow for every 50 ms.
    """

    def __init__(self, root, interval=0.05, pss_every=10):
        self.root = root
        self.interval = interval
        self.pss_every = pss_every
        self.max_single = 0
        self.max_sum = 0
        self.max_pss = 0
        self.procs_at_peak = 0
        self.pss_at_peak = {}  # {kind: [processes, MB]} at the largest PSS sum
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        samples = 0
        while not self._stop.is_set():
            pids = tree(self.root)
            sizes = [rss(pid) for pid in pids]
            if samples % self.pss_every == 0:
                self._sample_pss(pids)
            samples += 1
            total = sum(sizes)
            self.max_single = max(self.max_single, *sizes) if sizes else self.max_single
            if total > self.max_sum:
                self.max_sum, self.procs_at_peak = total, len(sizes)
            self._stop.wait(self.interval)

    def _sample_pss(self, pids):
        sizes = {pid: pss(pid) for pid in pids}
        total = sum(sizes.values())
        if total <= self.max_pss:
            return
        self.max_pss = total
        root_cmdline = _cmdline(self.root)
        parts = {}
        for pid, size in sizes.items():
            label = "main" if pid == self.root else kind(pid, root_cmdline)
            count, held = parts.get(label, (0, 0))
            parts[label] = (count + 1, held + size)
        self.pss_at_peak = {k: [c, round(t / 2**20, 1)] for k, (c, t) in sorted(parts.items(), key=lambda kv: -kv[1][1])}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(cmd, env, cwd, log_path, timeout=3600):
    """Run cmd (output to log_path); return wall time, exit code and peak controller memory in MB."""
    with open(log_path, "w", encoding="utf-8") as log:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)  # pylint: disable=consider-using-with
        with Peak(proc.pid) as peak:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the whole tree (every reaped descendant counts): steadier than wall time on a shared machine.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "load": round(os.getloadavg()[0], 1), "rc": rc, "peak_rss_mb": round(peak.max_single / 2**20, 1),
            "peak_sum_mb": round(peak.max_sum / 2**20, 1), "peak_pss_mb": round(peak.max_pss / 2**20, 1),
            "procs_at_peak": peak.procs_at_peak, "pss_at_peak": peak.pss_at_peak}
