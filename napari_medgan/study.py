"""Reader study (a "visual Turing test"): can readers tell synthetic volumes from real ones?

Two designs:

``single``
    One volume per trial; the reader answers ``"real"`` or ``"synthetic"`` with a
    confidence 1-5. Real and synthetic sets are balanced (the larger one is
    sub-sampled), so always giving the same answer scores 50 %.
``2afc``
    Two-alternative forced choice: a real and a synthetic volume side by side as
    ``A`` and ``B`` (the synthetic one on each side in half the trials); the
    reader answers which one is synthetic (``"A"`` or ``"B"``).

Which cases enter and how they are paired comes from ``design_seed`` (the same for every
reader, so their answers can be compared case by case); the trial order and the A/B
placement come from ``seed``, drawn fresh for each reader unless given.

**Blinding.** Trials carry the truth, but what a reader is shown (:meth:`ReaderStudy.current`)
does not. :meth:`ReaderStudy.prepare` (the set-up step) brings every case to one grid --
one shape, one spacing, one direction, origin at zero, float32 -- and finds one intensity
window, or raises :class:`StudyGridError` with the reason, for the person setting up the
study: cases whose fields of view differ by more than 10 % would need cropping that shows
part of a head next to whole ones, and cases whose intensities mostly fall outside the
common window (different units) would give the class away by brightness. The reader sees a
neutral title (``Trial 3/20``) and volumes stripped of names and metadata.

Statistics (accuracy, Wilson interval, binomial test, ROC AUC, kappa) are in
:mod:`napari_medgan.study_stats`; the HTML report in :mod:`napari_medgan.study_report`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medgan import __version__
from napari_medgan.io import Volume, atomic_write_text, list_volume_files, load_volume, volume_stem
from napari_medgan.io.paths import LABEL_WORDS
from napari_medgan.study_grid import (
    FOV_TOLERANCE,
    StudyGridError,
    common_grid,
    harmonize,
)
from napari_medgan.study_stats import (
    ANSWERS,
    interpret,
    pool_readers,
    summarize_rows,
    wilson_interval,
)

__all__ = [
    "ANSWERS", "CSV_FIELDS", "FOV_TOLERANCE", "MODES", "ReaderStudy", "StudyCase",
    "StudyGridError", "Trial", "TrialView", "common_grid", "draw_seed", "harmonize", "interpret",
    "list_study_files", "make_study", "pool_csvs", "pool_readers", "pooled_contrast",
    "read_reader_tables", "read_study_csv", "report_path", "results_from_csv", "resume_study",
    "summarize_rows", "summary_path", "wilson_interval", "write_study_report",
]

MODES = ("single", "2afc")
CSV_FIELDS = ("trial", "mode", "reader", "seed", "case_a", "truth_a", "case_b", "truth_b",
              "truth", "answer", "correct", "confidence", "seconds")


# ----------------------------------------------------------------------------- cases
@dataclass
class StudyCase:
    """One volume of the study: where it comes from and whether it is real (hidden)."""

    case_id: str
    truth: str  # "real" | "synthetic"
    item: Any  # Volume or path

    def load(self) -> Volume:
        return self.item if isinstance(self.item, Volume) else load_volume(self.item,
                                                                           is_label=False)


@dataclass
class TrialView:
    """What a reader may see of a trial: nothing in it tells real from synthetic."""

    number: int  # 1-based
    total: int
    mode: str
    title: str  # "Trial 3/20"
    layer_names: tuple[str, ...]  # ("Trial 3/20",) or ("A", "B")
    volumes: tuple[Volume, ...]
    choices: tuple[str, ...]


@dataclass
class Trial:
    """A trial with its hidden truth and, once answered, the reader's response."""

    index: int
    cases: tuple[StudyCase, ...]  # one (single) or two, shown as A, B (2afc)
    answer: str | None = None
    confidence: int | None = None
    seconds: float | None = None

    @property
    def truth(self) -> str:
        """``"real"``/``"synthetic"`` (single) or the position of the synthetic one (2afc)."""
        if len(self.cases) == 1:
            return self.cases[0].truth
        return "A" if self.cases[0].truth == "synthetic" else "B"

    @property
    def correct(self) -> bool | None:
        return None if self.answer is None else self.answer == self.truth


def list_study_files(folder: str | Path) -> list[Path]:
    """Volume files of ``folder`` that are not label maps by name (``*_labels.nii.gz``...)."""
    return [p for p in list_volume_files(folder)
            if not LABEL_WORDS.intersection(re.split(r"[^a-z]+", volume_stem(p).lower()))]


def _cases(items: Any, truth: str) -> list[StudyCase]:
    if isinstance(items, (str, os.PathLike, Volume)):
        is_dir = not isinstance(items, Volume) and Path(items).is_dir()
        items = list_study_files(items) if is_dir else [items]
    out = []
    for i, item in enumerate(items or []):
        if isinstance(item, Volume):
            name = volume_stem(Path(item.source).name) if item.source else f"{truth}_{i:03d}"
        else:
            item = Path(item)
            if not item.exists():
                raise FileNotFoundError(f"{item}: no such file or folder")
            name = volume_stem(item)
        out.append(StudyCase(name, truth, item))
    return out


def _unique_ids(cases: list[StudyCase]) -> None:
    seen: dict[str, int] = {}
    for case in cases:
        count = seen.get(case.case_id, 0)
        seen[case.case_id] = count + 1
        if count:
            case.case_id = f"{case.case_id}#{count + 1}"


def draw_seed() -> int:
    """A fresh seed for one reader's order (recorded in the CSV and JSON)."""
    return secrets.randbits(31)


def make_study(real: Any, synthetic: Any, seed: int | None = None, mode: str = "single",
               reader: str = "anonymous", balance: bool = True,
               design_seed: int = 0) -> "ReaderStudy":
    """Build a blinded, shuffled study.

    Parameters
    ----------
    real, synthetic : list of Volume or paths, or a folder
        The two sets (folders: their volume files, label maps by name excluded).
    seed : int or None
        The reader's trial order and A/B placement; None draws a fresh one.
    mode : {"single", "2afc"}
        See the module docstring.
    reader : str
        Reader's name, written to every CSV row.
    balance : bool
        ``single``: use as many real as synthetic volumes (randomly chosen from the larger
        set), so that chance is 50 %. ``2afc`` always pairs ``min(n_real, n_synthetic)``.
    design_seed : int
        Which cases enter (when balancing) and how 2AFC pairs are formed: the same for
        every reader of a study, so that agreement can be measured case by case.

    Raises
    ------
    ValueError
        Unknown mode, or an empty set.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    seed = draw_seed() if seed is None else int(seed)
    reals, fakes = _cases(real, "real"), _cases(synthetic, "synthetic")
    if not reals or not fakes:
        raise ValueError(f"reader study: needs real and synthetic volumes, got {len(reals)} "
                         f"real and {len(fakes)} synthetic")
    _unique_ids(reals + fakes)
    design = np.random.default_rng(int(design_seed))
    reals = [reals[i] for i in design.permutation(len(reals))]
    fakes = [fakes[i] for i in design.permutation(len(fakes))]
    notes = []
    if mode == "2afc" or balance:
        k = min(len(reals), len(fakes))
        if len(reals) != len(fakes):
            notes.append(f"unequal sets ({len(reals)} real, {len(fakes)} synthetic): "
                         f"{k} of each used")
        reals, fakes = reals[:k], fakes[:k]
    elif len(reals) != len(fakes):
        notes.append(f"unbalanced ({len(reals)} real, {len(fakes)} synthetic): chance accuracy "
                     "is not 50%, so the binomial test against 50% is biased")
    rng = np.random.default_rng(seed)
    if mode == "single":
        groups = [(c,) for c in reals + fakes]
    else:
        # exactly half the pairs (one more at random when odd) put the synthetic one at A
        synthetic_first = np.zeros(len(reals), dtype=bool)
        synthetic_first[: len(reals) // 2 + (len(reals) % 2) * int(rng.integers(2))] = True
        rng.shuffle(synthetic_first)
        groups = [(f, r) if first else (r, f)
                  for r, f, first in zip(reals, fakes, synthetic_first)]
    order = rng.permutation(len(groups))
    trials = [Trial(i, groups[j]) for i, j in enumerate(order)]
    return ReaderStudy(trials=trials, mode=mode, reader=str(reader) or "anonymous",
                       seed=seed, notes=notes)


# ----------------------------------------------------------------------------- study
@dataclass
class ReaderStudy:
    """A sequence of trials answered one at a time: ``prepare()``, ``current()``,
    ``record()``, ``results()``."""

    trials: list[Trial]
    mode: str = "single"
    reader: str = "anonymous"
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    position: int = 0
    display: dict | None = None  # set by prepare(): common grid and window (set-up only)
    _shown: dict = field(default_factory=dict, repr=False)  # case_id -> blinded Volume

    @property
    def done(self) -> bool:
        return self.position >= len(self.trials)

    @property
    def choices(self) -> tuple[str, ...]:
        return ANSWERS[self.mode]

    def cases(self) -> list[StudyCase]:
        """Every case of the study, once."""
        return list({id(c): c for t in self.trials for c in t.cases}.values())

    def prepare(self) -> list[str]:
        """Bring every case to one grid and one window (see the module docstring).

        Returns notes for the person setting the study up (what was resampled). Raises
        :class:`StudyGridError` when the cases cannot be shown alike.
        """
        cases = self.cases()
        shown, display, notes = harmonize({c.case_id: c.load() for c in cases})
        self._shown, self.display = shown, display
        return notes

    @property
    def window(self) -> tuple[float, float]:
        """The one display window of every trial (prepares the study when needed)."""
        if self.display is None:
            self.prepare()
        return tuple(self.display["window"])  # type: ignore[return-value]

    def current(self) -> TrialView | None:
        """The blinded view of the next unanswered trial (None when done)."""
        if self.done:
            return None
        if self.display is None:
            self.prepare()
        trial = self.trials[self.position]
        number, total = self.position + 1, len(self.trials)
        title = f"Trial {number}/{total}"
        volumes = tuple(self._shown[c.case_id] for c in trial.cases)
        names = (title,) if self.mode == "single" else ("A", "B")
        return TrialView(number, total, self.mode, title, names, volumes, self.choices)

    def record(self, answer: str, confidence: int, seconds: float) -> None:
        """Answer the current trial and move on.

        ``answer``: ``"real"``/``"synthetic"`` (single) or ``"A"``/``"B"`` (which one is
        synthetic, 2afc); ``confidence``: 1 (guess) to 5 (sure); ``seconds`` spent.
        """
        if self.done:
            raise ValueError(f"reader study: all {len(self.trials)} trials are answered")
        if answer not in self.choices:
            raise ValueError(f"answer: expected one of {self.choices}, got {answer!r}")
        if isinstance(confidence, bool) or int(confidence) != confidence \
                or not 1 <= int(confidence) <= 5:
            raise ValueError(f"confidence: expected an integer 1-5, got {confidence!r}")
        if not (np.isfinite(float(seconds)) and float(seconds) >= 0):
            raise ValueError(f"seconds: expected a time >= 0, got {seconds!r}")
        trial = self.trials[self.position]
        trial.answer, trial.confidence, trial.seconds = answer, int(confidence), float(seconds)
        self.position += 1

    def rows(self) -> list[dict]:
        """One analysis row per trial (answered or not), truth included."""
        rows = []
        for t in self.trials:
            a = t.cases[0]
            b = t.cases[1] if len(t.cases) > 1 else None
            rows.append({
                "trial": t.index + 1, "mode": self.mode, "reader": self.reader,
                "seed": self.seed, "case_a": a.case_id, "truth_a": a.truth,
                "case_b": b.case_id if b else "", "truth_b": b.truth if b else "",
                "truth": t.truth, "answer": t.answer or "",
                "correct": "" if t.correct is None else int(t.correct),
                "confidence": "" if t.confidence is None else t.confidence,
                "seconds": "" if t.seconds is None else round(t.seconds, 3),
            })
        return rows

    def results(self) -> dict:
        """Summary of the answered trials; see :func:`~napari_medgan.study_stats.summarize_rows`."""
        return summarize_rows(self.rows(), self.mode)

    def save_csv(self, path: str | Path, report: bool = False) -> Path:
        """Write the trial table (CSV) and ``<stem>_summary.json`` beside it, atomically;
        with ``report``, also ``<stem>_report.html`` (:func:`write_study_report`)."""
        path = Path(path)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(path, buffer.getvalue())
        summary = {**self.results(), "reader": self.reader, "mode": self.mode, "seed": self.seed,
                   "trials_total": len(self.trials), "notes": self.notes, "csv": path.name,
                   "display": self.display, "package_version": __version__,
                   "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(summary_path(path), json.dumps(summary, indent=2) + "\n")
        if report:
            write_study_report({self.reader: self.rows()}, report_path(path))
        return path


def summary_path(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_summary.json")


def report_path(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_report.html")


def pooled_contrast(study: ReaderStudy) -> tuple[float, float]:
    """One display window for every trial: 1-99 percentiles of all study volumes pooled,
    each volume contributing the same number of voxels (neither class sets the window)."""
    return study.window


# ----------------------------------------------------------------------------- files
def write_study_report(tables: dict[str, list[dict]], path: str | Path) -> Path:
    """The HTML report (table, agreement, ROC curve) of one or several readers' rows."""
    from napari_medgan.study_report import write_report

    return write_report(pool_readers(tables), path)


def read_study_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV written by :meth:`ReaderStudy.save_csv` (values as strings)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def results_from_csv(path: str | Path) -> dict:
    """Recompute the summary from a saved CSV (for pooling readers, re-analysis)."""
    rows = read_study_csv(path)
    if not rows:
        raise ValueError(f"{path}: no trials in the file")
    return summarize_rows(rows, rows[0]["mode"])


def read_reader_tables(paths: list[str | Path]) -> dict[str, list[dict]]:
    """``{reader: rows}`` from several CSVs (one reader each; a name seen twice gets the file
    name added)."""
    tables: dict[str, list[dict]] = {}
    for path in paths:
        rows = read_study_csv(path)
        if not rows or "answer" not in rows[0] or "truth" not in rows[0]:
            raise ValueError(f"{path}: not a reader-study CSV (expected the columns "
                             f"{', '.join(CSV_FIELDS)})")
        name = rows[0].get("reader") or Path(path).stem
        if name in tables:
            name = f"{name} ({Path(path).name})"
        tables[name] = rows
    return tables


def pool_csvs(paths: list[str | Path], report: str | Path | None = None) -> dict:
    """Per-reader and pooled results, with agreement, of several readers' CSVs; with
    ``report``, the HTML report is written there."""
    if not paths:
        raise ValueError("pooling readers: choose at least one reader-study CSV")
    tables = read_reader_tables(paths)
    result = pool_readers(tables)
    if report is not None:
        from napari_medgan.study_report import write_report

        write_report(result, report)
    return result


def resume_study(csv_path: str | Path, real: Any, synthetic: Any) -> ReaderStudy:
    """The study a CSV was saved from, answers included, ready at its first unanswered trial.

    ``real`` and ``synthetic`` are the same sets the study was made from (their case ids
    must be those in the CSV); the trial order, A/B placement, reader and seed come from the
    file.

    Raises
    ------
    ValueError
        Empty or foreign CSV, or a case of the CSV missing from the sets (or on the other
        side).
    """
    rows = read_study_csv(csv_path)
    if not rows or "case_a" not in rows[0]:
        raise ValueError(f"{csv_path}: no trials in the file")
    mode = rows[0]["mode"]
    if mode not in MODES:
        raise ValueError(f"{csv_path}: mode {mode!r}, expected one of {MODES}")
    cases = _cases(real, "real") + _cases(synthetic, "synthetic")
    _unique_ids(cases)
    by_id = {c.case_id: c for c in cases}
    trials = []
    for i, row in enumerate(sorted(rows, key=lambda r: int(r["trial"]))):
        group = []
        for key in ("a", "b") if mode == "2afc" else ("a",):
            case = by_id.get(row[f"case_{key}"])
            if case is None or case.truth != row[f"truth_{key}"]:
                raise ValueError(f"{csv_path}: case {row[f'case_{key}']!r} "
                                 f"({row[f'truth_{key}']}) of trial {row['trial']} is not among "
                                 "the chosen cases: choose the same sets as when it started")
            group.append(case)
        trial = Trial(i, tuple(group))
        if row["answer"]:
            trial.answer, trial.confidence = row["answer"], int(row["confidence"])
            trial.seconds = float(row["seconds"]) if row.get("seconds") else None
        trials.append(trial)
    position = next((i for i, t in enumerate(trials) if t.answer is None), len(trials))
    if any(t.answer is not None for t in trials[position:]):
        raise ValueError(f"{csv_path}: answered trials after an unanswered one; cannot resume")
    seed = rows[0].get("seed")
    return ReaderStudy(trials=trials, mode=mode, reader=rows[0]["reader"] or "anonymous",
                       seed=int(seed) if seed else 0, position=position,
                       notes=[f"resumed from {Path(csv_path).name} at trial {position + 1}"])
