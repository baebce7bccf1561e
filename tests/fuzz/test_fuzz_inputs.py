"""Hostile input, crashes and full disks: every malformed, hostile or odd input gives a right
result or one clean line of refusal, never a crash, a traceback or a misplaced slice.

The cases (``fuzz_volumes``, ``fuzz_dicom``, ``fuzz_checkpoints``, ``fuzz_configs``) run in a
worker subprocess under a 6 GiB address-space limit with a timeout per case
(``fuzz_runner``). The default suite runs a stratified sample of 200; ``make fuzz`` runs
them all. Both write their outcomes as JSON into pytest's temporary folder.
"""

from __future__ import annotations

import time

import pytest
from fuzz_cases import Bases, all_cases, sample_cases
from fuzz_runner import format_failures, run_cases, write_results

SAMPLE_SIZE = 200


def _run(cases, label, tmp_path_factory, tiny_trained_run):
    root = tmp_path_factory.mktemp(f"fuzz-{label}")
    bases = Bases(root, tiny_trained_run)
    start = time.perf_counter()
    outcomes = run_cases(cases, root, bases)
    results = tmp_path_factory.getbasetemp() / f"fuzz-{label}.json"
    summary = write_results(results, outcomes, time.perf_counter() - start)
    print(f"\n{summary['line']} ({summary['seconds']} s; outcomes in {results})")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        pytest.fail(format_failures(failed), pytrace=False)


def test_fuzz_sample_refuses_cleanly_or_reads_right(tmp_path_factory, tiny_trained_run):
    """A deterministic sample covering every format, entry point and many fault classes."""
    _run(sample_cases(all_cases(), SAMPLE_SIZE, seed=0), "sample", tmp_path_factory,
         tiny_trained_run)


@pytest.mark.fuzz
def test_fuzz_all_cases_refuse_cleanly_or_read_right(tmp_path_factory, tiny_trained_run):
    _run(all_cases(), "all", tmp_path_factory, tiny_trained_run)
