"""Reader study core: blinded balanced trials, Wilson interval, binomial test, CSV round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medgan.io import Volume, save_volume
from napari_medgan.study import (
    CSV_FIELDS,
    geometry_cues,
    interpret,
    list_study_files,
    make_study,
    pooled_contrast,
    read_study_csv,
    results_from_csv,
    summarize_rows,
    summary_path,
    wilson_interval,
)


def _vols(prefix: str, count: int, offset: float = 0.0, shape=(4, 5, 6)) -> list[Volume]:
    rng = np.random.default_rng(len(prefix) + count)
    return [Volume(rng.normal(offset, 1, shape).astype(np.float32), spacing=(1.0, 1.5, 2.0),
                   source=f"/data/{prefix}_{i:03d}.nii.gz",
                   meta={"medgan_synthetic": prefix == "synthetic", "note": prefix})
            for i in range(count)]


def _answer_all(study, answer) -> None:
    for trial in study.trials:
        study.record(answer(trial), 3, 1.5)


def _order(study) -> list[tuple[str, ...]]:
    return [tuple(c.case_id for c in t.cases) for t in study.trials]


# --------------------------------------------------------------------------- design
@pytest.mark.parametrize("mode", ["single", "2afc"])
def test_shuffle_is_deterministic_per_seed(mode):
    real, fake = _vols("real", 10), _vols("synthetic", 10)
    a = make_study(real, fake, seed=3, mode=mode)
    assert _order(a) == _order(make_study(real, fake, seed=3, mode=mode))
    assert _order(a) != _order(make_study(real, fake, seed=4, mode=mode))


def test_single_mode_is_balanced_and_notes_dropped_cases():
    study = make_study(_vols("real", 5), _vols("synthetic", 7), seed=1)
    truths = [t.truth for t in study.trials]
    assert truths.count("real") == truths.count("synthetic") == 5
    assert len({c.case_id for t in study.trials for c in t.cases}) == 10
    assert "5 of each used" in study.notes[0]
    assert truths != sorted(truths)  # shuffled, not all reals first
    unbalanced = make_study(_vols("real", 2), _vols("synthetic", 3), balance=False)
    assert len(unbalanced.trials) == 5 and "chance accuracy is not 50%" in unbalanced.notes[0]


def test_2afc_pairs_one_real_one_synthetic_half_on_each_side():
    study = make_study(_vols("real", 6), _vols("synthetic", 8), seed=2, mode="2afc")
    assert len(study.trials) == 6
    for t in study.trials:
        assert sorted(c.truth for c in t.cases) == ["real", "synthetic"]
        assert t.truth == ("A" if t.cases[0].truth == "synthetic" else "B")
    assert [t.truth for t in study.trials].count("A") == 3
    odd = make_study(_vols("real", 5), _vols("synthetic", 5), mode="2afc")
    assert [t.truth for t in odd.trials].count("A") in (2, 3)


@pytest.mark.parametrize("mode", ["single", "2afc"])
def test_truth_never_appears_in_what_the_reader_sees(mode):
    study = make_study(_vols("real", 3), _vols("synthetic", 3, offset=5), seed=0, mode=mode)
    while not study.done:
        view = study.current()
        assert view.title == f"Trial {view.number}/{view.total}"
        assert view.layer_names == ((view.title,) if mode == "single" else ("A", "B"))
        shown = json.dumps([view.title, view.layer_names, view.choices,
                            [v.to_layer_kwargs()["metadata"] for v in view.volumes],
                            [(v.source, v.meta) for v in view.volumes]]).lower()
        hidden = shown.replace('"real", "synthetic"', "")  # the answer buttons of single mode
        assert "synthetic" not in hidden and "real" not in hidden and "/data/" not in hidden
        assert {v.array.dtype for v in view.volumes} == {np.dtype(np.float32)}
        assert view.volumes[0].spacing.tolist() == [1.0, 1.5, 2.0]  # geometry is kept
        study.record(view.choices[0], 2, 0.5)
    assert study.current() is None


def test_bad_answers_are_refused():
    study = make_study(_vols("real", 1), _vols("synthetic", 1))
    for answer, conf, secs, word in (("fake", 3, 1, "answer"), ("A", 3, 1, "answer"),
                                     ("real", 0, 1, "confidence"), ("real", 6, 1, "confidence"),
                                     ("real", 2.5, 1, "confidence"),
                                     ("real", 3, -1, "seconds"), ("real", 3, float("nan"),
                                                                  "seconds")):
        with pytest.raises(ValueError, match=word):
            study.record(answer, conf, secs)
    study.record("real", 5, 1)
    study.record("real", 1, 1)
    with pytest.raises(ValueError, match="all 2 trials"):
        study.record("real", 3, 1)
    with pytest.raises(ValueError, match="mode"):
        make_study(_vols("real", 1), _vols("synthetic", 1), mode="3afc")
    with pytest.raises(ValueError, match="0 synthetic"):
        make_study(_vols("real", 1), [])


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("k, n, expected", [
    (10, 10, (0.7225, 1.0)), (0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)),
    (3, 4, (0.3006, 0.9544)),
])
def test_wilson_interval_matches_hand_computed_values(k, n, expected):
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.96
    assert np.allclose(wilson_interval(k, n), expected, atol=5e-5)
    assert all(np.isnan(wilson_interval(0, 0)))


@pytest.mark.parametrize("which, accuracy, p_value, covers", [
    ("right", 1.0, 0.5 ** 10, False), ("wrong", 0.0, 1.0, False),
    ("half", 0.5, 638 / 1024, True),  # P(X >= 5), X ~ Bin(10, 0.5)
])
def test_results_on_known_answers(which, accuracy, p_value, covers):
    study = make_study(_vols("real", 5), _vols("synthetic", 5), seed=0)
    other = {"real": "synthetic", "synthetic": "real"}
    # "half": always answer "real" -> every real right, every synthetic wrong
    pick = {"right": lambda t: t.truth, "wrong": lambda t: other[t.truth],
            "half": lambda t: "real"}[which]
    _answer_all(study, pick)
    res = study.results()
    assert res["n"] == 10 and res["accuracy"] == accuracy
    assert res["p_value"] == pytest.approx(p_value)
    assert (res["ci95"][0] <= 0.5 <= res["ci95"][1]) == covers
    assert res["mean_confidence"] == 3 and res["mean_seconds"] == 1.5
    if which == "half":
        assert res["per_class"]["real"] == {"n": 5, "accuracy": 1.0}
        assert res["per_class"]["synthetic"] == {"n": 5, "accuracy": 0.0}
        assert "could not tell synthetic from real" in res["interpretation"]
    elif which == "right":
        assert "better than chance" in res["interpretation"]
    else:
        assert "wrong more often than chance" in res["interpretation"]


def test_partial_results_and_2afc_per_side():
    study = make_study(_vols("real", 4), _vols("synthetic", 4), seed=5, mode="2afc")
    assert study.results()["n"] == 0 and interpret(study.results()) == "No answers yet."
    _answer_all(study, lambda t: "A")  # side bias: right exactly when the synthetic was A
    res = study.results()
    assert res["per_class"]["A"]["accuracy"] == 1.0 and res["per_class"]["B"]["accuracy"] == 0.0
    assert res["accuracy"] == 0.5 and "interval is wide" in res["interpretation"]
    conf = summarize_rows([{"answer": "A", "truth": "A", "confidence": 5, "seconds": 1},
                           {"answer": "A", "truth": "B", "confidence": 1, "seconds": 3}], "2afc")
    assert (conf["mean_confidence_correct"], conf["mean_confidence_wrong"]) == (5, 1)


# --------------------------------------------------------------------------- files
def test_csv_round_trip_and_summary(tmp_path):
    study = make_study(_vols("real", 3), _vols("synthetic", 3), seed=9, reader="Dr. Who")
    _answer_all(study, lambda t: t.truth if t.index % 3 else "real")
    path = study.save_csv(tmp_path / "study.csv")
    rows = read_study_csv(path)
    assert list(rows[0]) == list(CSV_FIELDS) and len(rows) == 6
    for row, trial in zip(rows, study.trials):
        assert row["case_a"] == trial.cases[0].case_id and row["truth"] == trial.truth
        assert row["correct"] == str(int(trial.correct)) and row["reader"] == "Dr. Who"
        assert float(row["seconds"]) == 1.5 and row["confidence"] == "3"
    again = results_from_csv(path)
    expected = study.results()
    for key in ("n", "correct", "accuracy", "ci95", "p_value", "per_class", "interpretation"):
        assert again[key] == expected[key]
    summary = json.loads(summary_path(path).read_text())
    assert summary_path(path).name == "study_summary.json"
    assert summary["accuracy"] == expected["accuracy"] and summary["reader"] == "Dr. Who"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_folders_skip_label_maps_and_paths_load(tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    for folder, vols in ((real, _vols("real", 2)), (fake, _vols("synthetic", 2, offset=3))):
        for i, v in enumerate(vols):
            save_volume(v, folder / f"case_{i}.nii.gz")
            save_volume(v.with_array((v.array > 0).astype(np.uint8), is_label=True),
                        folder / f"case_{i}_labels.nii.gz")
    assert [p.name for p in list_study_files(real)] == ["case_0.nii.gz", "case_1.nii.gz"]
    study = make_study(real, fake, seed=0)
    assert len(study.trials) == 4 and study.current().volumes[0].shape == (4, 5, 6)
    lo, hi = pooled_contrast(study)
    assert lo < 0 < 3 < hi  # pooled over both classes
    assert geometry_cues(study) == []
    single = make_study(real / "case_0.nii.gz", fake / "case_1.nii.gz")  # one file each
    assert sorted(c.case_id for t in single.trials for c in t.cases) == ["case_0", "case_1"]
    small = make_study(_vols("real", 2), _vols("synthetic", 2, shape=(3, 3, 3)))
    assert "by the grid alone" in geometry_cues(small)[0]
