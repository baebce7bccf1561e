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

Trials carry the truth, but what a reader is shown (:meth:`ReaderStudy.current`)
does not: a neutral title (``Trial 3/20``), volumes stripped of names and
metadata and cast to one dtype. Accuracy comes with a 95 % Wilson score interval
(Wilson 1927, "Probable inference, the law of succession, and statistical
inference", JASA 22(158)) and a one-sided exact binomial test against 50 %
(``scipy.stats.binomtest``). Accuracy near 50 % -- an interval covering 0.5 --
means readers could not tell synthetic from real.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medgan import __version__
from napari_medgan.io import Volume, atomic_write_text, list_volume_files, load_volume, volume_stem
from napari_medgan.io.paths import LABEL_WORDS

MODES = ("single", "2afc")
ANSWERS = {"single": ("real", "synthetic"), "2afc": ("A", "B")}
CSV_FIELDS = ("trial", "mode", "reader", "case_a", "truth_a", "case_b", "truth_b", "truth",
              "answer", "correct", "confidence", "seconds")
_Z95 = 1.959963984540054  # two-sided 95 % normal quantile


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


def make_study(real: Any, synthetic: Any, seed: int = 0, mode: str = "single",
               reader: str = "anonymous", balance: bool = True) -> "ReaderStudy":
    """Build a blinded, shuffled study.

    Parameters
    ----------
    real, synthetic : list of Volume or paths, or a folder
        The two sets (folders: their volume files, label maps by name excluded).
    seed : int
        Same seed, same trial order and A/B placement.
    mode : {"single", "2afc"}
        See the module docstring.
    reader : str
        Reader's name, written to every CSV row.
    balance : bool
        ``single``: use as many real as synthetic volumes (randomly chosen from the larger
        set), so that chance is 50 %. ``2afc`` always pairs ``min(n_real, n_synthetic)``.

    Raises
    ------
    ValueError
        Unknown mode, or an empty set.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    reals, fakes = _cases(real, "real"), _cases(synthetic, "synthetic")
    if not reals or not fakes:
        raise ValueError(f"reader study: needs real and synthetic volumes, got {len(reals)} "
                         f"real and {len(fakes)} synthetic")
    _unique_ids(reals + fakes)
    rng = np.random.default_rng(int(seed))
    reals = [reals[i] for i in rng.permutation(len(reals))]
    fakes = [fakes[i] for i in rng.permutation(len(fakes))]
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
                       seed=int(seed), notes=notes)


# ----------------------------------------------------------------------------- study
@dataclass
class ReaderStudy:
    """A sequence of trials answered one at a time: ``current()``, ``record()``, ``results()``."""

    trials: list[Trial]
    mode: str = "single"
    reader: str = "anonymous"
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    position: int = 0

    @property
    def done(self) -> bool:
        return self.position >= len(self.trials)

    @property
    def choices(self) -> tuple[str, ...]:
        return ANSWERS[self.mode]

    def current(self) -> TrialView | None:
        """The blinded view of the next unanswered trial (None when done)."""
        if self.done:
            return None
        trial = self.trials[self.position]
        number, total = self.position + 1, len(self.trials)
        title = f"Trial {number}/{total}"
        volumes = tuple(_blind(c.load(), title) for c in trial.cases)
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
        if not (math.isfinite(float(seconds)) and float(seconds) >= 0):
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
                "case_a": a.case_id, "truth_a": a.truth,
                "case_b": b.case_id if b else "", "truth_b": b.truth if b else "",
                "truth": t.truth, "answer": t.answer or "",
                "correct": "" if t.correct is None else int(t.correct),
                "confidence": "" if t.confidence is None else t.confidence,
                "seconds": "" if t.seconds is None else round(t.seconds, 3),
            })
        return rows

    def results(self) -> dict:
        """Summary of the answered trials; see :func:`summarize_rows`."""
        return summarize_rows(self.rows(), self.mode)

    def save_csv(self, path: str | Path) -> Path:
        """Write the trial table (CSV) and ``<stem>_summary.json`` beside it, atomically."""
        path = Path(path)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(path, buffer.getvalue())
        summary = {**self.results(), "reader": self.reader, "mode": self.mode, "seed": self.seed,
                   "trials_total": len(self.trials), "notes": self.notes, "csv": path.name,
                   "package_version": __version__,
                   "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(summary_path(path), json.dumps(summary, indent=2) + "\n")
        return path


def summary_path(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_summary.json")


def _blind(volume: Volume, title: str) -> Volume:
    """The voxels and geometry only: no file name, no metadata, one dtype."""
    return Volume(np.asarray(volume.array, dtype=np.float32), spacing=volume.spacing,
                  origin=volume.origin, direction=volume.direction, source=title)


def pooled_contrast(study: ReaderStudy, percentiles: tuple[float, float] = (1.0, 99.0),
                    max_voxels: int = 200_000) -> tuple[float, float]:
    """One display window for every trial: percentiles of all study volumes pooled.

    Each volume contributes the same number of voxels (a regular subsample), so
    neither class sets the window, and contrast does not give the class away.
    """
    samples = []
    for case in {id(c): c for t in study.trials for c in t.cases}.values():
        flat = np.asarray(case.load().array, dtype=np.float32).ravel()
        samples.append(flat[:: max(1, flat.size // max_voxels)][:max_voxels])
    lo, hi = np.percentile(np.concatenate(samples), percentiles)
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def geometry_cues(study: ReaderStudy) -> list[str]:
    """Warnings when real and synthetic volumes differ in grid (shape, spacing): readers could
    then tell them apart without looking at the anatomy."""
    grids: dict[str, set] = {"real": set(), "synthetic": set()}
    for case in {id(c): c for t in study.trials for c in t.cases}.values():
        vol = case.load()
        grids[case.truth].add((vol.shape, tuple(np.round(vol.spacing, 3))))
    if grids["real"].isdisjoint(grids["synthetic"]):
        return ["real and synthetic volumes never share shape and spacing "
                f"(real {sorted(grids['real'])[:2]}, synthetic {sorted(grids['synthetic'])[:2]}): "
                "readers may tell them apart by the grid alone; resample one set first"]
    return []


# ----------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (Wilson 1927)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize_rows(rows: Sequence[dict], mode: str) -> dict:
    """Accuracy, 95 % Wilson CI, one-sided binomial p (readers better than 50 %), per-class
    accuracy and mean confidence, from answered rows (``answer`` not empty).

    Per class: ``single`` gives accuracy on real and on synthetic volumes;
    ``2afc`` gives accuracy when the synthetic volume was ``A`` and when ``B``
    (a large gap there means a side preference).
    """
    from scipy.stats import binomtest

    done = [r for r in rows if str(r.get("answer", "")) != ""]
    correct = [str(r["answer"]) == str(r["truth"]) for r in done]
    n, k = len(done), int(sum(correct))
    classes = ANSWERS["single"] if mode == "single" else ANSWERS["2afc"]
    per_class = {}
    for cls in classes:
        hits = [c for r, c in zip(done, correct) if r["truth"] == cls]
        per_class[cls] = {"n": len(hits), "accuracy": _mean(hits)}
    conf = [float(r["confidence"]) for r in done]
    secs = [float(r["seconds"]) for r in done if str(r.get("seconds", "")) != ""]
    lo, hi = wilson_interval(k, n)
    result = {
        "n": n, "correct": k, "accuracy": k / n if n else None,
        "ci95": [lo, hi] if n else None,
        "p_value": float(binomtest(k, n, 0.5, alternative="greater").pvalue) if n else None,
        "per_class": per_class,
        "mean_confidence": _mean(conf),
        "mean_confidence_correct": _mean([c for c, ok in zip(conf, correct) if ok]),
        "mean_confidence_wrong": _mean([c for c, ok in zip(conf, correct) if not ok]),
        "mean_seconds": _mean(secs),
    }
    result["interpretation"] = interpret(result)
    return result


def interpret(result: dict) -> str:
    """Plain-language reading of :func:`summarize_rows`'s result."""
    n = result["n"]
    if not n:
        return "No answers yet."
    lo, hi = result["ci95"]
    head = (f"Accuracy {100 * result['accuracy']:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%, "
            f"n={n}, one-sided p={result['p_value']:.3g} against 50%). ")
    if lo <= 0.5 <= hi:
        text = ("The interval covers 50%: the readers could not tell synthetic from real "
                "volumes better than chance.")
        if hi - lo > 0.3:
            text += (" The interval is wide, so this study is too small to show the two are "
                     "indistinguishable; more trials narrow it.")
    elif lo > 0.5:
        text = "Readers told synthetic from real volumes better than chance."
    else:
        text = ("Readers were wrong more often than chance: they systematically took one class "
                "for the other (a misleading cue, or the sets swapped?).")
    return head + text


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
