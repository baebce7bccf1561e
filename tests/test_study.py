"""Reader study core: blinded balanced trials on one grid, Wilson interval, binomial test, ROC
AUC, kappa, pooling readers, CSV round trip and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medgan.io import Volume, save_volume
from napari_medgan.study import (
    CSV_FIELDS,
    StudyGridError,
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
        assert "too small to conclude" in res["interpretation"]
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
    assert res["accuracy"] == 0.5 and "is wide" in res["interpretation"]
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
    assert study.prepare() == [] and study.display["resampled"] == 0
    single = make_study(real / "case_0.nii.gz", fake / "case_1.nii.gz")  # one file each
    assert sorted(c.case_id for t in single.trials for c in t.cases) == ["case_0", "case_1"]
    small = make_study(_vols("real", 2), _vols("synthetic", 2, shape=(3, 3, 3)))
    with pytest.raises(StudyGridError, match="different fields of view"):
        small.prepare()


# --------------------------------------------------------------------------- seeds and grids
def test_seed_is_drawn_per_reader_and_recorded(tmp_path):
    real, fake = _vols("real", 4), _vols("synthetic", 6)
    a, b = make_study(real, fake, reader="A"), make_study(real, fake, reader="B")
    assert a.seed != b.seed  # not 0 for everyone: 31 random bits each
    # which cases enter comes from the design seed: the same for every reader
    assert sorted(c.case_id for c in a.cases()) == sorted(c.case_id for c in b.cases())
    pairs = [make_study(real, fake, seed=s, mode="2afc") for s in (1, 2)]
    assert {frozenset(c.case_id for c in t.cases) for t in pairs[0].trials} == \
        {frozenset(c.case_id for c in t.cases) for t in pairs[1].trials}
    _answer_all(a, lambda t: "real")
    path = a.save_csv(tmp_path / "a.csv")
    assert {r["seed"] for r in read_study_csv(path)} == {str(a.seed)}
    assert json.loads(summary_path(path).read_text())["seed"] == a.seed


def test_mismatched_grids_are_shown_on_one_grid():
    rng = np.random.default_rng(0)
    real = [Volume(rng.normal(0, 1, (48, 48, 48)).astype(np.float64), spacing=(2.0,) * 3,
                   origin=(-40, 5, 3), source=f"/data/head_{i}.nii.gz") for i in range(2)]
    fake = [Volume(rng.normal(0, 1, (24, 24, 25)).astype(np.float32), spacing=(4.0, 4.0, 3.9),
                   source=f"synthetic_{i:03d}") for i in range(2)]
    study = make_study(real, fake, seed=1)
    notes = study.prepare()
    assert "2 grids" in notes[0] and "resampled" in notes[0]
    seen = set()
    while not study.done:
        view = study.current()
        for v in view.volumes:
            seen.add((v.shape, tuple(v.spacing), tuple(v.origin), v.array.dtype.str, v.source))
            assert v.meta == {} and v.source is None
        study.record("real", 3, 1.0)
    assert len(seen) == 1  # one shape, spacing, origin and dtype for every case
    shape, spacing = next(iter(seen))[:2]
    assert shape == (24, 24, 24) and spacing == (4.0, 4.0, 3.9)  # coarsest per axis
    assert study.display["shape"] == [24, 24, 24] and len(study.display["window"]) == 2


def test_cases_in_other_units_are_refused():
    real = _vols("real", 2)
    fake = [v.with_array(v.array * 1000 + 3000) for v in _vols("synthetic", 2)]
    with pytest.raises(StudyGridError, match="different units"):
        make_study(real, fake).prepare()


# --------------------------------------------------------------------------- ROC, kappa, pooling
def test_auc_and_kappa_match_hand_computed_values():
    from napari_medgan.study_stats import cohen_kappa, fleiss_kappa, rating, roc_auc

    assert [rating("synthetic", 5, "single"), rating("synthetic", 1, "single"),
            rating("real", 1, "single"), rating("real", 5, "single")] == [10, 6, 5, 1]
    assert rating("A", 4, "2afc") == 9 and rating("B", 4, "2afc") == 2
    # 7.5 of 9 pairs ordered; DeLong: V10 = (1, 1, .5), V01 = (1, 5/6, 2/3)
    roc = roc_auc([10, 8, 4], [1, 4, 7])
    assert roc["auc"] == pytest.approx(7.5 / 9)
    se = np.sqrt((1 / 12) / 3 + (1 / 36) / 3)
    assert roc["se"] == pytest.approx(se)
    assert roc["ci95"] == pytest.approx([7.5 / 9 - 1.959964 * se, 1.0], abs=1e-6)
    assert roc_auc([1], [2])["ci95"] is None and roc_auc([], [2])["auc"] is None
    # po = 4/6, pe = .5 * .5 + .5 * .5 -> (2/3 - 1/2) / (1/2)
    assert cohen_kappa(list("RRSSRS"), list("RSSSRR")) == pytest.approx(1 / 3)
    # P_i = 1, 1/3, 1, 1/3; p_R = 6/12 -> (2/3 - 1/2) / (1/2)
    assert fleiss_kappa([list("RRR"), list("RRS"), list("SSS"), list("RSS")]) == \
        pytest.approx(1 / 3)
    assert cohen_kappa(["R", "R"], ["R", "R"]) is None  # every answer the same


def _write_rows(path, reader, answers):
    import csv

    truths = {"r1": "real", "r2": "real", "r3": "real",
              "s1": "synthetic", "s2": "synthetic", "s3": "synthetic"}
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for i, (case, (answer, conf)) in enumerate(answers.items()):
            writer.writerow({"trial": i + 1, "mode": "single", "reader": reader, "seed": i,
                             "case_a": case, "truth_a": truths[case], "case_b": "",
                             "truth_b": "", "truth": truths[case], "answer": answer,
                             "correct": int(answer == truths[case]), "confidence": conf,
                             "seconds": 2})
    return path


def test_two_readers_pool_into_one_result_with_auc_and_kappa(tmp_path):
    from napari_medgan.study import pool_csvs

    # ratings of "synthetic": synthetic+c -> 5+c, real+c -> 6-c
    one = _write_rows(tmp_path / "one.csv", "R1", {  # synthetic rated 10, 8, 4; real 1, 4, 7
        "r1": ("real", 5), "r2": ("real", 2), "r3": ("synthetic", 2),
        "s1": ("synthetic", 5), "s2": ("synthetic", 3), "s3": ("real", 2)})
    two = _write_rows(tmp_path / "two.csv", "R2", {  # synthetic rated 9, 5, 3; real 2, 6, 8
        "s3": ("real", 3), "r1": ("real", 4), "r2": ("synthetic", 1),
        "r3": ("synthetic", 3), "s1": ("synthetic", 4), "s2": ("real", 1)})
    report = tmp_path / "pooled.html"
    res = pool_csvs([one, two], report=report)
    r1, r2, pooled = res["readers"]["R1"], res["readers"]["R2"], res["pooled"]
    assert (r1["correct"], r1["n"], r2["correct"], r2["n"]) == (4, 6, 2, 6)
    assert (pooled["correct"], pooled["n"], pooled["accuracy"]) == (6, 12, 0.5)
    assert r1["roc"]["auc"] == pytest.approx(7.5 / 9)
    assert r2["roc"]["auc"] == pytest.approx(5 / 9)
    assert pooled["roc"]["auc"] == pytest.approx(25 / 36)  # 25 of 36 pairs, ties half
    assert pooled["mean_reader_auc"] == pytest.approx((7.5 / 9 + 5 / 9) / 2)
    agree = res["agreement"]  # same answer on r1, r3, s1, s3 of 6 cases
    assert agree["method"] == "Cohen's kappa" and agree["n_items"] == 6
    assert agree["kappa"] == pytest.approx(1 / 3)
    assert res["interpretation"].startswith("2 readers pooled.")
    assert "fair agreement" in res["interpretation"]
    page = report.read_text()
    assert "<table>" in page and "R1" in page and "R2" in page and "pooled" in page
    assert "0.694" in page and "Cohen" in page
    assert (tmp_path / "pooled_roc.png").is_file() or "<svg" in page
    three = _write_rows(tmp_path / "three.csv", "R1", {"r1": ("real", 3), "s1": ("real", 3)})
    res3 = pool_csvs([one, two, three])
    assert res3["agreement"]["method"] == "Fleiss' kappa"
    assert res3["agreement"]["n_items"] == 2  # the cases all three answered
    assert "R1 (three.csv)" in res3["readers"]


def test_report_without_matplotlib_draws_svg(tmp_path, monkeypatch):
    import napari_medgan.study_report as report

    monkeypatch.setattr(report, "_roc_png", lambda pooled, path: False)
    study = make_study(_vols("real", 3), _vols("synthetic", 3), seed=2, reader="solo")
    _answer_all(study, lambda t: t.truth)
    study.save_csv(tmp_path / "solo.csv", report=True)
    page = (tmp_path / "solo_report.html").read_text()
    assert "<svg" in page and "<polyline" in page and "solo" in page


@pytest.mark.parametrize("k, n, phrase", [
    (2, 2, "too small to conclude"), (10, 10, "better than chance"),
    (100, 200, "no evidence that readers told"),
])
def test_wording_says_what_the_interval_allows(k, n, phrase):
    rows = [{"answer": "real", "truth": "real" if i < k else "synthetic", "confidence": 3}
            for i in range(n)]
    text = summarize_rows(rows, "single")["interpretation"]
    assert phrase in text
    assert "could not tell" not in text


# --------------------------------------------------------------------------- resume
def test_resume_continues_where_the_csv_stopped(tmp_path):
    from napari_medgan.study import resume_study

    real, fake = _vols("real", 3), _vols("synthetic", 3)
    study = make_study(real, fake, seed=7, reader="R")
    study.record(study.trials[0].truth, 4, 2.0)
    study.record("real", 2, 3.0)
    path = study.save_csv(tmp_path / "r.csv")
    again = resume_study(path, real, fake)
    assert again.position == 2 and again.reader == "R" and again.seed == 7
    assert _order(again) == _order(study)
    assert [(t.answer, t.confidence) for t in again.trials[:2]] == \
        [(study.trials[0].truth, 4), ("real", 2)]
    assert again.current().number == 3
    _answer_all_left = [again.record("synthetic", 3, 1.0) for _ in range(4)]
    assert again.done and len(_answer_all_left) == 4
    again.save_csv(path)
    rows = read_study_csv(path)
    assert [r["answer"] != "" for r in rows] == [True] * 6
    assert rows[0]["confidence"] == "4" and rows[1]["answer"] == "real"
    with pytest.raises(ValueError, match="not among the chosen cases"):
        resume_study(path, real[:2], fake)
