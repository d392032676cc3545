"""Object matching scores: F1 at an IoU threshold and average precision as StarDist and the DSB define it.

A predicted object matches a true one when their intersection over union (IoU) exceeds the
threshold. Above 0.5 a match is unique by construction (two objects cannot both cover more than half
of one); below it, an optimal one-to-one assignment (Hungarian, scipy) maximises the matched IoU.
From the true positives (TP), false positives (FP) and false negatives (FN):

* precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN);
* AP = TP / (TP + FP + FN) (the 2018 Data Science Bowl's and StarDist's "average precision");
* mean AP: the AP averaged over IoU thresholds 0.50, 0.55, ..., 0.90.

Several images are scored by pooling their counts (each object weighs the same).

Examples::

    >>> scores = match(truth, pred)                 # one image, default thresholds
    >>> scores.f1(0.5), scores.mean_ap
    >>> pooled = match_many(truths, preds).summary()   # {"f1@0.5": ..., "ap@0.5": ..., "mean_ap": ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from segarch.instances._checks import check_labels

__all__ = ["THRESHOLDS", "Matching", "match", "match_many", "overlaps"]

#: IoU thresholds of the mean AP: 0.50, 0.55, ..., 0.90.
THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))


@dataclass
class Matching:
    """TP/FP/FN counts per IoU threshold, with the scores derived from them."""

    thresholds: tuple[float, ...]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_true: int
    n_pred: int
    matched_iou: list[np.ndarray] = field(default_factory=list, repr=False)

    def _at(self, threshold: float) -> int:
        for i, t in enumerate(self.thresholds):
            if abs(t - threshold) < 1e-9:
                return i
        raise ValueError(f"`threshold` must be one of the matched thresholds {list(self.thresholds)}, "
                         f"got {threshold!r}.")

    def precision(self, threshold: float = 0.5) -> float:
        i = self._at(threshold)
        return _ratio(self.tp[i], self.tp[i] + self.fp[i])

    def recall(self, threshold: float = 0.5) -> float:
        i = self._at(threshold)
        return _ratio(self.tp[i], self.tp[i] + self.fn[i])

    def f1(self, threshold: float = 0.5) -> float:
        i = self._at(threshold)
        return _ratio(2 * self.tp[i], 2 * self.tp[i] + self.fp[i] + self.fn[i])

    def ap(self, threshold: float = 0.5) -> float:
        i = self._at(threshold)
        return _ratio(self.tp[i], self.tp[i] + self.fp[i] + self.fn[i])

    @property
    def mean_ap(self) -> float:
        """AP averaged over the thresholds in :data:`THRESHOLDS` (all of them must have been matched)."""
        return float(np.mean([self.ap(t) for t in THRESHOLDS]))

    def mean_matched_iou(self, threshold: float = 0.5) -> float:
        """Mean IoU of the pairs matched at ``threshold`` (segmentation quality of the found objects)."""
        ious = self.matched_iou[self._at(threshold)]
        return float(ious.mean()) if ious.size else float("nan")

    def __add__(self, other: "Matching") -> "Matching":
        if tuple(self.thresholds) != tuple(other.thresholds):
            raise ValueError("can only pool matchings made at the same thresholds.")
        return Matching(self.thresholds, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                        self.n_true + other.n_true, self.n_pred + other.n_pred,
                        [np.concatenate([a, b]) for a, b in zip(self.matched_iou, other.matched_iou)])

    def summary(self, digits: int = 4) -> dict[str, float]:
        """``{"f1@0.5", "precision@0.5", "recall@0.5", "ap@0.5", "ap@0.75", "mean_ap", "n_true", "n_pred"}``."""
        out = {"f1@0.5": self.f1(0.5), "precision@0.5": self.precision(0.5), "recall@0.5": self.recall(0.5),
               "ap@0.5": self.ap(0.5), "ap@0.75": self.ap(0.75), "mean_ap": self.mean_ap,
               "matched_iou@0.5": self.mean_matched_iou(0.5)}
        return {**{k: round(v, digits) for k, v in out.items()}, "n_true": self.n_true, "n_pred": self.n_pred}


def _ratio(a, b) -> float:
    return float(a) / float(b) if b else 1.0  # nothing to find and nothing found: perfect


def overlaps(truth, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The IoU of every overlapping (true, predicted) pair, as sparse triplets.

    Returns:
        ``(true_ids, pred_ids, rows, cols, iou)``: the object labels present in each image (sorted, no 0)
        and, for every pair that shares pixels, its row in ``true_ids``, column in ``pred_ids`` and IoU.
    """
    truth = check_labels(truth, "truth")
    pred = check_labels(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"`truth` and `pred` must have one shape, got {truth.shape} and {pred.shape}.")
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    t_area = np.bincount(t_inv, minlength=t_ids.size)
    p_area = np.bincount(p_inv, minlength=p_ids.size)
    both = (truth.ravel() != 0) & (pred.ravel() != 0)
    pairs, inter = np.unique(t_inv[both].astype(np.int64) * p_ids.size + p_inv[both], return_counts=True)
    rows, cols = pairs // p_ids.size, pairs % p_ids.size
    iou = inter / (t_area[rows] + p_area[cols] - inter)
    t_off = int(t_ids.size > 0 and t_ids[0] == 0)  # background is no object
    p_off = int(p_ids.size > 0 and p_ids[0] == 0)
    return t_ids[t_off:], p_ids[p_off:], rows - t_off, cols - p_off, iou


def match(truth, pred, thresholds: Sequence[float] = THRESHOLDS) -> Matching:
    """Match the objects of ``pred`` to those of ``truth`` (instance labels of one shape, 0 background)."""
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0 <= t < 1 for t in thresholds):
        raise ValueError(f"`thresholds` must be IoU values in [0, 1), got {thresholds!r}.")
    t_ids, p_ids, rows, cols, iou = overlaps(truth, pred)
    tp, fp, fn, matched = [], [], [], []
    for t in thresholds:
        if t >= 0.5:
            pairs = iou[iou > t]  # unique: each object has at most one partner over 0.5
        else:
            pairs = _assign(rows, cols, iou, t)
        n = int(pairs.size)
        tp.append(n)
        fp.append(p_ids.size - n)
        fn.append(t_ids.size - n)
        matched.append(np.asarray(pairs, float))
    return Matching(thresholds, np.array(tp), np.array(fp), np.array(fn), int(t_ids.size), int(p_ids.size), matched)


def _assign(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray, threshold: float) -> np.ndarray:
    """IoUs of the one-to-one assignment maximising the matched IoU among pairs over ``threshold``."""
    from scipy.optimize import linear_sum_assignment

    keep = iou > threshold
    if not keep.any():
        return np.zeros(0)
    r_ids, r = np.unique(rows[keep], return_inverse=True)
    c_ids, c = np.unique(cols[keep], return_inverse=True)
    dense = np.zeros((r_ids.size, c_ids.size))
    dense[r, c] = iou[keep]
    best_r, best_c = linear_sum_assignment(dense, maximize=True)
    picked = dense[best_r, best_c]
    return picked[picked > threshold]


def match_many(truths: Iterable, preds: Iterable, thresholds: Sequence[float] = THRESHOLDS) -> Matching:
    """:func:`match` over pairs of images, with their counts pooled."""
    total = None
    for truth, pred in zip(truths, preds, strict=True):
        m = match(truth, pred, thresholds)
        total = m if total is None else total + m
    if total is None:
        raise ValueError("`truths` and `preds` must hold at least one pair of label images.")
    return total
