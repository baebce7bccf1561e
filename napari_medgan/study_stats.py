"""Statistics of a reader study: accuracy, ROC AUC from confidence ratings, agreement.

Pure numpy/scipy, on the rows of the study CSV (:data:`napari_medgan.study.CSV_FIELDS`,
values as strings or numbers).

* Accuracy with a 95 % Wilson score interval (Wilson 1927, JASA 22(158)) and a one-sided
  exact binomial test against 50 % (``scipy.stats.binomtest``).
* ROC AUC from the answers and their 1-5 confidence: each answer becomes a 10-step rating
  of "this is synthetic" (*synthetic, sure* = 10 ... *real, sure* = 1; in 2AFC, of "A is the
  synthetic one"), and the AUC is the Mann-Whitney probability that a synthetic case rates
  higher than a real one, with DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988,
  Biometrics 44(3)) for a 95 % interval.
* Agreement between readers on the cases they all answered: Cohen's kappa for two readers
  (Cohen 1960, Educ. Psychol. Meas. 20(1)), Fleiss' kappa for more (Fleiss 1971,
  Psychol. Bull. 76(5)). In 2AFC the category is which case of the pair was picked.

Pooled figures put every reader's trials together; they treat trials as independent, so
the pooled interval is narrower than a full multi-reader multi-case analysis would give
(Obuchowski-Rockette); per-reader figures are reported beside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ANSWERS = {"single": ("real", "synthetic"), "2afc": ("A", "B")}
#: The class a high rating points to: "synthetic" (single), "A is synthetic" (2afc).
POSITIVE = {"single": "synthetic", "2afc": "A"}
_Z95 = 1.959963984540054  # two-sided 95 % normal quantile
#: Wider than this, an interval covering 50 % says "too small to conclude".
WIDE = 0.3


# ----------------------------------------------------------------------------- accuracy
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


def answered(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if str(r.get("answer", "")) != ""]


# ----------------------------------------------------------------------------- ROC
def rating(answer: str, confidence: float, mode: str) -> float:
    """The answer and its confidence as one rating of the positive class, 1..10."""
    c = float(confidence)
    return 5.0 + c if answer == POSITIVE[mode] else 6.0 - c


def rating_scores(rows: Sequence[dict], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Ratings of the answered rows whose truth is the positive class, and of the others."""
    pos, neg = [], []
    for r in answered(rows):
        score = rating(str(r["answer"]), float(r["confidence"]), mode)
        (pos if str(r["truth"]) == POSITIVE[mode] else neg).append(score)
    return np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> dict:
    """Mann-Whitney AUC with DeLong's variance.

    Returns ``{"auc", "se", "ci95", "n_positive", "n_negative"}``; ``auc`` is None without
    cases of both classes, ``se``/``ci95`` None with fewer than two of either.
    """
    x, y = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    out = {"auc": None, "se": None, "ci95": None, "n_positive": int(x.size),
           "n_negative": int(y.size)}
    if not x.size or not y.size:
        return out
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    auc = float(psi.mean())
    out["auc"] = auc
    if x.size < 2 or y.size < 2:
        return out
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)  # DeLong's structural components
    var = float(np.var(v10, ddof=1) / x.size + np.var(v01, ddof=1) / y.size)
    se = math.sqrt(max(var, 0.0))
    out["se"] = se
    out["ci95"] = [max(0.0, auc - _Z95 * se), min(1.0, auc + _Z95 * se)]
    return out


def roc_curve(positive: Sequence[float], negative: Sequence[float]) -> tuple[list, list]:
    """``(false positive rates, true positive rates)`` over every rating threshold,
    from (0, 0) to (1, 1)."""
    x, y = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if not x.size or not y.size:
        return [0.0, 1.0], [0.0, 1.0]
    thresholds = np.unique(np.concatenate([x, y]))[::-1]
    fpr = [0.0] + [float(np.mean(y >= t)) for t in thresholds]
    tpr = [0.0] + [float(np.mean(x >= t)) for t in thresholds]
    return fpr, tpr


# ----------------------------------------------------------------------------- agreement
def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """Cohen's kappa of two raters' categories on the same items (None if undefined)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} and {len(b)} ratings; expected the same items")
    if not len(a):
        return None
    cats = sorted(set(a) | set(b))
    po = float(np.mean([x == y for x, y in zip(a, b)]))
    pe = sum((list(a).count(c) / len(a)) * (list(b).count(c) / len(b)) for c in cats)
    return None if pe >= 1.0 else (po - pe) / (1.0 - pe)


def fleiss_kappa(ratings: Sequence[Sequence]) -> float | None:
    """Fleiss' kappa; ``ratings[i]`` holds every rater's category for item ``i``."""
    items = [list(r) for r in ratings]
    if not items or len({len(r) for r in items}) != 1 or len(items[0]) < 2:
        return None
    n = len(items[0])
    cats = sorted({c for r in items for c in r})
    counts = np.array([[r.count(c) for c in cats] for r in items], dtype=float)
    p_item = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    pe = float((p_cat ** 2).sum())
    return None if pe >= 1.0 else (float(p_item.mean()) - pe) / (1.0 - pe)


def item_key(row: dict) -> str:
    """The case (single) or the unordered pair of cases (2afc) a row showed."""
    if str(row.get("case_b", "")):
        return " | ".join(sorted((str(row["case_a"]), str(row["case_b"]))))
    return str(row["case_a"])


def _category(row: dict) -> str:
    if str(row.get("case_b", "")):  # 2afc: which case was picked, real or synthetic
        return "picked synthetic" if str(row["answer"]) == str(row["truth"]) else "picked real"
    return str(row["answer"])


def agreement(rows_by_reader: dict[str, Sequence[dict]]) -> dict:
    """Kappa over the items every reader answered (Cohen for 2 readers, Fleiss for more)."""
    readers = list(rows_by_reader)
    out = {"method": None, "kappa": None, "n_items": 0, "n_readers": len(readers)}
    if len(readers) < 2:
        return out
    answers = [{item_key(r): _category(r) for r in answered(rows)}
               for rows in rows_by_reader.values()]
    common = sorted(set.intersection(*(set(a) for a in answers)))
    out["n_items"] = len(common)
    if len(readers) == 2:
        out["method"] = "Cohen's kappa"
        out["kappa"] = cohen_kappa([answers[0][k] for k in common],
                                   [answers[1][k] for k in common])
    else:
        out["method"] = "Fleiss' kappa"
        out["kappa"] = fleiss_kappa([[a[k] for a in answers] for k in common])
    return out


# ----------------------------------------------------------------------------- summaries
def summarize_rows(rows: Sequence[dict], mode: str) -> dict:
    """Accuracy, 95 % Wilson CI, one-sided binomial p (better than 50 %), ROC AUC from the
    ratings with its 95 % CI, per-class accuracy and mean confidence, from answered rows.

    Per class: ``single`` gives accuracy on real and on synthetic volumes; ``2afc`` when
    the synthetic volume was ``A`` and when ``B`` (a large gap means a side preference).
    """
    from scipy.stats import binomtest

    done = answered(rows)
    correct = [str(r["answer"]) == str(r["truth"]) for r in done]
    n, k = len(done), int(sum(correct))
    per_class = {}
    for cls in ANSWERS[mode]:
        hits = [c for r, c in zip(done, correct) if r["truth"] == cls]
        per_class[cls] = {"n": len(hits), "accuracy": _mean(hits)}
    conf = [float(r["confidence"]) for r in done]
    secs = [float(r["seconds"]) for r in done if str(r.get("seconds", "")) != ""]
    lo, hi = wilson_interval(k, n)
    pos, neg = rating_scores(done, mode)
    fpr, tpr = roc_curve(pos, neg)
    result = {
        "n": n, "correct": k, "accuracy": k / n if n else None,
        "ci95": [lo, hi] if n else None,
        "p_value": float(binomtest(k, n, 0.5, alternative="greater").pvalue) if n else None,
        "roc": {**roc_auc(pos, neg), "fpr": fpr, "tpr": tpr},
        "per_class": per_class,
        "mean_confidence": _mean(conf),
        "mean_confidence_correct": _mean([c for c, ok in zip(conf, correct) if ok]),
        "mean_confidence_wrong": _mean([c for c, ok in zip(conf, correct) if not ok]),
        "mean_seconds": _mean(secs),
    }
    result["interpretation"] = interpret(result)
    return result


def pool_readers(tables: dict[str, Sequence[dict]]) -> dict:
    """Per-reader and pooled results of several readers' rows (``{reader: rows}``), with
    agreement. All tables must share one mode."""
    modes = {str(r["mode"]) for rows in tables.values() for r in rows}
    if len(modes) != 1:
        raise ValueError(f"pooling readers: expected one study mode, got {sorted(modes)}")
    mode = modes.pop()
    if mode not in ANSWERS:
        raise ValueError(f"mode: expected one of {tuple(ANSWERS)}, got {mode!r}")
    readers = {name: summarize_rows(rows, mode) for name, rows in tables.items()}
    pooled = summarize_rows([r for rows in tables.values() for r in rows], mode)
    aucs = [r["roc"]["auc"] for r in readers.values() if r["roc"]["auc"] is not None]
    pooled["mean_reader_auc"] = _mean(aucs)
    agree = agreement(tables)
    text = pooled["interpretation"]
    if len(tables) > 1:
        text = f"{len(tables)} readers pooled. " + text + " " + interpret_agreement(agree)
    return {"mode": mode, "readers": readers, "pooled": pooled, "agreement": agree,
            "interpretation": text}


# ----------------------------------------------------------------------------- wording
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def interpret(result: dict) -> str:
    """Plain-language reading of :func:`summarize_rows`'s result.

    An interval covering 50 % is not evidence that readers cannot tell the sets apart
    unless it is narrow: a wide one (2/2 correct gives 34-100 %) means the study is too
    small to conclude.
    """
    n = result["n"]
    if not n:
        return "No answers yet."
    lo, hi = result["ci95"]
    head = (f"Accuracy {_pct(result['accuracy'])} (95% CI {100 * lo:.1f}-{100 * hi:.1f}%, "
            f"{result['correct']}/{n} correct, one-sided p={result['p_value']:.3g} "
            "against 50%). ")
    if lo > 0.5:
        text = "Readers told synthetic from real volumes apart better than chance."
    elif hi < 0.5:
        text = ("Readers were wrong more often than chance: they systematically took one class "
                "for the other (a misleading cue, or the sets swapped?).")
    elif hi - lo > WIDE:
        text = ("The interval includes 50% and is wide: the study is too small to conclude "
                "whether readers can tell synthetic from real volumes; more trials narrow it.")
    else:
        text = ("The interval includes 50% and is narrow: no evidence that readers told "
                f"synthetic from real volumes apart; their accuracy is at most {_pct(hi)} "
                "(95% upper bound).")
    roc = result.get("roc") or {}
    if roc.get("auc") is not None:
        ci = roc.get("ci95")
        text += (f" ROC AUC from the confidence ratings {roc['auc']:.2f}"
                 + (f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})." if ci else
                    " (too few cases of one class for an interval)."))
    return head + text


def interpret_agreement(agree: dict) -> str:
    kappa = agree.get("kappa")
    if agree.get("method") is None:
        return ""
    if kappa is None:
        return (f"{agree['method']}: not defined ({agree['n_items']} case(s) answered by every "
                "reader, or every answer the same).")
    # Landis & Koch (1977) bands
    words = ((0.0, "no more than chance"), (0.2, "slight"), (0.4, "fair"), (0.6, "moderate"),
             (0.8, "substantial"), (1.01, "almost perfect"))
    band = next(w for cut, w in words if kappa <= cut)
    shown = f"{kappa:.2f}".replace("-0.00", "0.00")
    return (f"{agree['method']} {shown} over {agree['n_items']} case(s) every reader "
            f"answered: {band} agreement.")
