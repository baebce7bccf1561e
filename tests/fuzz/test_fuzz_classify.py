"""The fuzz classifier: what counts as a clean refusal, a right result, a failure."""

from __future__ import annotations

import pytest
from fuzz_cases import Case, Input, sample_cases, all_cases
from fuzz_runner import classify

PATH = "/tmp/cases/nifti__x/vol.nii"


def _case(expect="refuse", entry="load_volume", field=None):
    inp = Input("nifti/x", "nifti", "fault", lambda f, b: f, expect, field=field,
                reference="int16" if expect == "same" else None)
    return Case(inp, entry)


def _spec(field=None):
    return {"names": ["vol.nii", "nifti__x"], "field": field}


def _raised(exc_type, message, mro=None):
    return {"kind": "raised", "exc_type": exc_type, "message": message,
            "exc_mro": mro or [exc_type, "ValueError", "Exception", "BaseException", "object"],
            "traceback": "Traceback...\n  line\nX: y"}


@pytest.mark.parametrize("raw, status, reason", [
    (_raised("VolumeError", f"{PATH}: file is truncated"), "refused", ""),
    (_raised("FileNotFoundError", f"{PATH}: missing",
             ["FileNotFoundError", "OSError", "Exception"]), "refused", ""),
    (_raised("VolumeError", "file is truncated"), "failed", "message does not name the file"),
    (_raised("VolumeError", f"{PATH}: bad\nsecond line"), "failed", "multi-line message"),
    (_raised("MemoryError", "", ["MemoryError", "Exception"]), "failed", "MemoryError raised"),
    (_raised("OSError", f"{PATH}: bad", ["OSError", "Exception"]), "failed", "OSError raised"),
    ({"kind": "returned", "problems": []}, "failed", "accepted silently"),
    ({"kind": "declined"}, "refused", ""),
    ({"kind": "returned", "problems": [], "rss_growth_mb": 3000}, "failed",
     "touched 3000 MB of memory"),
    ({"kind": "raised", "exc_type": "CheckpointError", "message": f"{PATH}: x",
      "exc_mro": ["CheckpointError", "ValueError"], "violations": ["a pickle was unpickled"]},
     "failed", "a pickle was unpickled"),
])
def test_refuse_cases(raw, status, reason):
    out = classify(_case("refuse"), _spec(), raw)
    assert (out.status, out.reason) == (status, reason), out


def test_results_are_checked():
    ok = {"kind": "returned", "problems": []}
    assert classify(_case("any"), _spec(), ok).status == "ok"
    assert classify(_case("same"), _spec(), ok).status == "ok"
    bad = {"kind": "returned", "problems": ["volume has 3 non-finite voxels of 10"]}
    assert classify(_case("any"), _spec(), bad).reason == "non-finite voxels in the result"
    wrong = {"kind": "returned", "problems": ["wrong voxels: 2 of 10 differ"]}
    assert classify(_case("same"), _spec(), wrong).reason == "wrong voxels"
    assert classify(_case("same"), _spec(), {"kind": "declined"}).status == "failed"


def test_checkpoint_fields_must_be_named():
    case, spec = _case("refuse", field="channels"), _spec("channels")
    named = _raised("CheckpointError", f"{PATH}: model_config.channels: expected >= 4, got -1")
    assert classify(case, spec, named).status == "refused"
    nameless = _raised("CheckpointError", f"{PATH}: incompatible with the model config")
    assert classify(case, spec, nameless).reason == "message does not name the field 'channels'"


@pytest.mark.parametrize("stderr, rc, train, status", [
    (f"napari-medgan: error: {PATH}: bad\n", 2, False, "refused"),
    (f"warning: x\nnapari-medgan: error: {PATH}: bad\n", 2, False, "failed"),
    (f"step 1/2\nnapari-medgan: error: {PATH}: bad\n", 2, True, "refused"),
    (f"napari-medgan: error: {PATH}: bad\nstep 1/2\n", 2, True, "failed"),
    (f"Traceback (most recent call last):\nnapari-medgan: error: {PATH}: bad\n", 2, True,
     "failed"),
    ("napari-medgan: error: something is wrong\n", 2, False, "failed"),
    ("boom\n", 1, False, "failed"),
    ("", 0, False, "failed"),  # exit 0 where only a refusal was right
])
def test_cli_refusals(stderr, rc, train, status):
    raw = {"kind": "cli", "rc": rc, "stderr": stderr, "problems": []}
    if train:
        raw["cli"] = "train"
    assert classify(_case("refuse", "cli_generate"), _spec(), raw).status == status


def test_sample_is_deterministic_and_covers_every_group_and_entry():
    cases = all_cases()
    first, again = sample_cases(cases, 40, seed=0), sample_cases(cases, 40, seed=0)
    assert [c.name for c in first] == [c.name for c in again] and len(first) == 40
    strata = {(c.group, c.entry) for c in cases if c.input.sample}
    assert {(c.group, c.entry) for c in first} == strata
