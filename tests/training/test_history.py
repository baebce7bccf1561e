"""history.jsonl: a record per logged step and per event, strict JSON, relative paths, every
step once across resumes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from napari_medgan.training.history import HISTORY_FILE, read_history
from napari_medgan.training.trainer import Trainer


def _strict(line: str) -> dict:
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def test_every_logged_step_and_event_is_recorded(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "run", steps=6, log_every=1, preview_every=3, checkpoint_every=3)
    for _ in Trainer(run).run():
        pass
    text = (tmp_path / "run" / HISTORY_FILE).read_text()
    records = [_strict(line) for line in text.splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "done" and records[-1]["reason"] == "finished"
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert set(steps[0]["losses"]) >= {"D", "G"} and steps[0]["seconds_per_step"] > 0
    assert all(np.isfinite(v) for r in steps for v in r["losses"].values())
    checkpoints = [r for r in records if r["kind"] == "checkpoint"]
    assert [(r["step"], r["name"]) for r in checkpoints if not r["best"]] == [
        (3, "step-000003"), (6, "step-000006")]
    assert checkpoints[-1]["quality"] is not None
    previews = [r for r in records if r["kind"] == "preview"]
    assert [r["step"] for r in previews] == [3, 6]
    with np.load(tmp_path / "run" / previews[0]["file"]) as npz:
        assert npz["0_axial"].shape == (16, 16) and np.isfinite(npz["0_axial"]).all()
    assert str(tmp_path) not in text  # paths are relative: a record can be shared
    elapsed = [r["elapsed"] for r in records]
    assert elapsed == sorted(elapsed) and all(r["time"].endswith("Z") for r in records)


def test_a_resumed_run_has_every_step_once(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "run", steps=4, log_every=1, checkpoint_every=2)
    for _ in Trainer(run).run():
        pass
    path = tmp_path / "run" / HISTORY_FILE
    before = read_history(tmp_path / "run")
    with open(path, "a") as fh:  # what a kill after step 4's checkpoint could leave
        fh.write(json.dumps({"kind": "step", "step": 5, "losses": {}}) + "\n")
        fh.write('{"kind": "step", "st')
    for _ in Trainer(dataclasses.replace(run, resume=True,
                                         train=dataclasses.replace(run.train, steps=6))).run():
        pass
    records = read_history(tmp_path / "run")
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert records[: len(before)] == before  # the first session's record is kept as it was
    starts = [r for r in records if r["kind"] == "start"]
    assert [(r["step"], r["resumed"]) for r in starts] == [(0, False), (4, True)]
    assert records[-1]["elapsed"] > before[-1]["elapsed"]
    for line in path.read_text().splitlines():
        _strict(line)  # the cut-off line is gone


def test_report_command_writes_csv_picture_and_page(tmp_path, tiny_run, capsys):
    import csv

    from napari_medgan.cli import main

    run = tiny_run(tmp_path / "run", steps=6, log_every=2, preview_every=3, checkpoint_every=3)
    for _ in Trainer(run).run():
        pass
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert '"steps": 6' in printed and '"ended": "finished"' in printed
    rows = list(csv.reader((tmp_path / "rep" / "history.csv").open()))
    assert rows[0][:2] == ["step", "elapsed_s"] and "D" in rows[0] and "G" in rows[0]
    assert [int(r[0]) for r in rows[1:]] == [2, 3, 4, 6]  # log_every 2, and at checkpoints
    assert (tmp_path / "rep" / "report.png").stat().st_size > 20_000
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in page and "finished" in page


def test_report_of_a_folder_without_a_record_is_one_line(tmp_path, capsys):
    from napari_medgan.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"napari-medgan: error: {tmp_path}: no history.jsonl; not a run folder, or the " \
                  "run has not logged a step yet"


def test_tensorboard_gets_the_same_record_and_a_resume_replaces_what_it_redoes(tmp_path,
                                                                              tiny_run):
    pytest.importorskip("tensorboard")  # the [tensorboard] extra; make test installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tiny_run(tmp_path / "run", steps=4, log_every=1, preview_every=2, checkpoint_every=2)
    for _ in Trainer(run).run():
        pass
    longer = dataclasses.replace(run, resume=True, train=dataclasses.replace(run.train, steps=6))
    for _ in Trainer(longer).run():
        pass
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    g = [(e.step, e.value) for e in events.Scalars("loss/G")]
    record = [(r["step"], r["losses"]["G"]) for r in read_history(tmp_path / "run")
              if r["kind"] == "step"]
    assert [s for s, _ in g] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in g], [v for _, v in record], rtol=1e-6)
    assert [e.step for e in events.Images("preview/axial")] == [2, 4, 6]
