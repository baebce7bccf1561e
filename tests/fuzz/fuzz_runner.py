"""Run fuzz cases in a long-lived worker subprocess under a memory limit, and classify them.

Every case ends ``ok`` (a right result), ``refused`` (a clean refusal) or ``failed``:

* a clean refusal is an exception whose type is ``ValueError`` (``VolumeError`` and
  ``CheckpointError`` are ones) or ``FileNotFoundError``, with a one-line message that
  names the file or folder (its path or name) and, for checkpoint and config fields, the
  field; on the command line it is exit status 2 and exactly one stderr line starting
  ``napari-medgan: error:`` that does the same (``train`` may print progress lines first);
* anything else fails: another exception type (MemoryError included), a multi-line or
  nameless message, the worker killed (memory limit, signal) or past the case's timeout,
  a result with non-finite voxels, a non-3D array, bad spacing, wrong voxels for an
  input that still holds the base volume, an accepted input that had to be refused,
  a pickle payload that ran, or more than :data:`RSS_GROWTH_MB` of memory touched by one
  case (a refusal after filling a buffer sized from the header is not "before allocating").

A worker that dies or times out is killed and replaced; the remaining cases go on.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from fuzz_cases import Bases, Case, Outcome, build_case_input, case_spec, remove_case_input

WORKER = Path(__file__).with_name("fuzz_worker.py")
#: Address-space limit of the worker (RLIMIT_AS). ``import torch`` and the whole package
#: fit in well under 1 GiB of it; 6 GiB leaves room for any honest 16^3 case.
MEMORY_LIMIT = 6 << 30
#: Peak resident memory a single case may add (the kernel's per-case high-water mark): every
#: input here is a few KB to MB, a 16^3 volume or a tiny generator needs a few MB, so more
#: means the reader believed a header's size before it checked the data was there.
RSS_GROWTH_MB = 512.0
#: Restart the worker when its resident memory passes this (leaks, fragmentation).
RESTART_RSS_MB = 2048.0
START_TIMEOUT = 180.0
CLI_PREFIX = "napari-medgan: error:"


# --------------------------------------------------------------------------- worker
class WorkerDied(Exception):
    """The worker exited, was killed, or did not answer in time."""


class Worker:
    """One ``fuzz_worker.py`` process; ``run(spec, timeout)`` returns its raw result dict."""

    def __init__(self, log_dir: Path, memory_limit: int = MEMORY_LIMIT, number: int = 0) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        scratch = log_dir / f"cwd-{number}"
        scratch.mkdir(exist_ok=True)
        self.log_path = log_dir / f"worker-{number}.log"
        self.log = open(self.log_path, "w+b")
        env = dict(os.environ, FUZZ_MEMORY_LIMIT=str(memory_limit), PYTHONUNBUFFERED="1",
                   PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=scratch,
                                     env=env, start_new_session=True)
        self._buffer = b""
        self.offset = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            ready = self._read_line(START_TIMEOUT)
        except WorkerDied as exc:
            raise RuntimeError(f"fuzz worker did not start ({exc}); log:\n"
                               f"{self.log_tail(0)}") from None
        self.rss_mb = float(ready.get("rss_mb", 0.0))

    def _read_line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied(f"timeout after {timeout:g} s")
            if not self._selector.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise WorkerDied(self._death())
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "closed its output but did not exit"
        if code < 0:
            return f"worker killed by {signal.Signals(-code).name}"
        return f"worker exited with status {code}"

    def log_tail(self, offset: int, size: int = 1500) -> str:
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
        return text[-size:]

    def run(self, spec: dict, timeout: float) -> dict:
        self.log.seek(0, os.SEEK_END)
        self.offset = self.log.tell()
        try:
            self.proc.stdin.write((json.dumps(spec) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerDied(self._death()) from None
        result = self._read_line(timeout)
        self.rss_mb = float(result.get("rss_mb", self.rss_mb))
        return result

    def kill(self) -> None:
        """SIGABRT first (faulthandler writes the hung Python stack to the log), then SIGKILL."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGABRT)
                self.proc.wait(timeout=3)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the worker's own session
            except ProcessLookupError:
                pass
        self.close()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            self._selector.close()
            self.proc.stdout.close()
            self.log.close()


# --------------------------------------------------------------------------- classify
def _message_faults(message: str, spec: dict) -> list[str]:
    """Why a refusal's message is not clean (empty list: it is)."""
    faults = []
    if not message.strip():
        faults.append("empty message")
    if "\n" in message or "\r" in message:
        faults.append("multi-line message")
    if not any(name and name in message for name in spec["names"]):
        faults.append("message does not name the file")
    if spec.get("field") and spec["field"] not in message:
        faults.append(f"message does not name the field {spec['field']!r}")
    return faults


def _one_line(text: str, size: int = 300) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= size else text[: size - 3] + "..."


def _result_reason(problem: str) -> str:
    """A short class for what is wrong with a returned result."""
    for prefix in ("wrong voxels", "wrong geometry", "accepted a wrong type",
                   "the loaded model cannot generate", "exit status 0 but no volume"):
        if problem.startswith(prefix):
            return prefix
    for word, reason in (("non-finite", "non-finite voxels in the result"),
                         ("generator weight", "non-finite generator weights"),
                         ("outside the folder", "loaded a checkpoint outside its folder"),
                         ("checkpoint outside", "loaded a checkpoint outside its folder"),
                         ("spacing", "bad spacing in the result"),
                         ("origin", "bad origin in the result"),
                         ("direction", "bad direction in the result"),
                         ("D, shape", "result is not 3D")):
        if word in problem:
            return reason
    return "bad result"


def classify(case: Case, spec: dict, raw: dict) -> Outcome:
    """Turn the worker's raw report into ok / refused / failed with a reason."""
    root = str(Path(spec.get("folder", "/")).parent) + "/"

    def outcome(status, reason="", message="", **extra):
        message = _one_line(message, 600).replace(root, "")  # names are checked; keep it short
        extra.update(rss_growth_mb=raw.get("rss_growth_mb"), rss_mb=raw.get("rss_mb"))
        return Outcome(case.name, case.group, case.entry, case.fault, status, reason, message,
                       float(raw.get("seconds", 0.0)), extra)

    expect = case.input.expect
    kind = raw.get("kind")
    if raw.get("violations"):
        return outcome("failed", raw["violations"][0], raw.get("message", ""))
    growth = float(raw.get("rss_growth_mb", 0.0))
    if growth > RSS_GROWTH_MB:
        return outcome("failed", f"touched {growth:.0f} MB of memory",
                       raw.get("message") or raw.get("stderr", ""))

    if kind == "cli":
        rc, stderr = raw.get("rc"), raw.get("stderr", "")
        lines = [line for line in stderr.splitlines() if line.strip()]
        if rc == 0:
            kind = "returned"
        elif rc == 2:
            if "Traceback (most recent call last)" in stderr:
                return outcome("failed", "traceback on stderr", stderr[-800:])
            errors = [line for line in lines if line.startswith(CLI_PREFIX)]
            if raw.get("cli") == "train":  # progress lines may come first
                ok_shape = len(errors) == 1 and lines[-1] == errors[0]
            else:
                ok_shape = len(lines) == 1 and len(errors) == 1
            if not ok_shape:
                return outcome("failed", f"stderr is {len(lines)} lines, not one error line",
                               stderr[-800:])
            faults = _message_faults(errors[0][len(CLI_PREFIX):], spec)
            if faults:
                return outcome("failed", faults[0], errors[0])
            return outcome("refused", "", errors[0])
        else:
            return outcome("failed", f"exit status {rc}", stderr[-800:])

    if kind == "raised":
        mro = raw.get("exc_mro", [])
        message = raw.get("message", "")
        if not ({"ValueError", "FileNotFoundError"} & set(mro)):
            tail = raw.get("traceback", "").strip().splitlines()[-6:]
            return outcome("failed", f"{raw.get('exc_type')} raised", " | ".join(tail))
        faults = _message_faults(message, spec)
        if faults:
            return outcome("failed", faults[0], f"{raw.get('exc_type')}: {message}")
        return outcome("refused", "", f"{raw.get('exc_type')}: {message}")

    if kind == "declined":
        if expect == "same":
            return outcome("failed", "reader declined a valid volume", "")
        return outcome("refused", "", "napari_get_reader returned None (not claimed)")

    if kind == "returned":
        problems = raw.get("problems", [])
        if problems:
            return outcome("failed", _result_reason(problems[0]), "; ".join(problems))
        if expect == "refuse":
            return outcome("failed", "accepted silently",
                           f"returned {raw.get('result') or 'a result'} where only a refusal "
                           "was right")
        return outcome("ok")
    return outcome("failed", f"unknown worker report {kind!r}", json.dumps(raw)[:300])


# --------------------------------------------------------------------------- run
def run_cases(cases: list[Case], root: Path, bases: Bases, memory_limit: int = MEMORY_LIMIT,
              progress=None, keep: bool = False) -> list[Outcome]:
    """Build each case's input (once per input) and run every case; returns the outcomes in
    order. ``progress(outcome)`` is called after each case. The inputs of passing cases are
    deleted once done unless ``keep``; those of failing ones stay under ``root``."""
    root = Path(root)
    log_dir = root / "_workers"
    targets: dict[str, Path] = {}
    outcomes: list[Outcome] = []
    worker: Worker | None = None
    started = 0
    left = Counter(case.input.name for case in cases)
    failed_inputs: set[str] = set()
    try:
        for case in cases:
            if case.input.name not in targets or case.entry == "cli_train_resume":
                targets[case.input.name] = build_case_input(case.input, root, bases)
            spec = case_spec(case, targets[case.input.name], root, bases)
            if worker is None:
                worker = Worker(log_dir, memory_limit, started)
                started += 1
            began = time.monotonic()
            try:
                raw = worker.run(spec, case.input.timeout)
            except WorkerDied as exc:
                worker.kill()
                tail = worker.log_tail(worker.offset)
                worker = None
                reason = "timeout" if str(exc).startswith("timeout") else str(exc)
                result = Outcome(case.name, case.group, case.entry, case.fault, "failed",
                                 reason, _one_line(tail, 600).replace(f"{root}/", ""),
                                 round(time.monotonic() - began, 2))
            else:
                result = classify(case, spec, raw)
                if worker.rss_mb > RESTART_RSS_MB:
                    worker.close()
                    worker = None
            outcomes.append(result)
            left[case.input.name] -= 1
            if result.status == "failed":
                failed_inputs.add(case.input.name)
            elif not left[case.input.name] and case.input.name not in failed_inputs and not keep:
                remove_case_input(case.input, root)  # keep only what failed, for a look
            if progress:
                progress(result)
    finally:
        if worker is not None:
            worker.close()
    return outcomes


def summarize(outcomes: list[Outcome]) -> dict:
    counts = Counter(o.status for o in outcomes)
    line = (f"fuzz: {len(outcomes)} cases, {counts['refused']} refused cleanly, "
            f"{counts['ok']} ok, {counts['failed']} failed")
    return {"line": line, "cases": len(outcomes), "refused": counts["refused"],
            "ok": counts["ok"], "failed": counts["failed"]}


def format_failures(outcomes: list[Outcome], width: int = 300) -> str:
    """One line per failed case: ``name [reason] message``, grouped by fault class."""
    failed = sorted((o for o in outcomes if o.status == "failed"),
                    key=lambda o: (o.fault, o.reason, o.name))
    lines = [f"{len(failed)} fuzz case(s) failed:"]
    for o in failed:
        text = f"  {o.name} [{o.reason}] {o.message}"
        lines.append(text if len(text) <= width else text[: width - 3] + "...")
    return "\n".join(lines)


def group_failures(outcomes: list[Outcome]) -> dict[tuple[str, str], list[Outcome]]:
    """Failed cases by (fault class, reason)."""
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.status == "failed":
            groups[(o.fault, o.reason)].append(o)
    return dict(sorted(groups.items()))


def write_results(path: Path, outcomes: list[Outcome], seconds: float) -> dict:
    summary = summarize(outcomes)
    summary["seconds"] = round(seconds, 1)
    doc = {**summary, "outcomes": [o.__dict__ for o in outcomes]}
    Path(path).write_text(json.dumps(doc, indent=1, default=str))
    return summary
