from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score

from medcurate.evaluate.metrics import (
    METRICS,
    Estimate,
    _Resampler,
    binary_metrics,
    bootstrap,
    brier,
    calibration,
    choose_threshold,
    roc_band,
)

# 12 items, with a tie across classes (0.6) so AUC's half-credit for ties is exercised.
Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
S = np.array([0.95, 0.8, 0.6, 0.4, 0.3, 0.6, 0.55, 0.2, 0.15, 0.1, 0.05, 0.5])


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    return y, rng.normal(y * 1.2, 1.0)


def test_metrics_equal_scikit_learn() -> None:
    threshold = 0.5
    pred = (np.asarray(S) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(Y, pred).ravel()
    m = binary_metrics(Y, S, threshold)
    assert m["auc"] == pytest.approx(roc_auc_score(Y, S))
    assert m["sensitivity"] == pytest.approx(recall_score(Y, pred))
    assert m["specificity"] == pytest.approx(recall_score(Y, pred, pos_label=0))
    assert m["ppv"] == pytest.approx(precision_score(Y, pred))
    assert m["npv"] == pytest.approx(precision_score(Y, pred, pos_label=0))
    assert m["fnr"] == pytest.approx(fn / (fn + tp))
    assert m["fpr"] == pytest.approx(fp / (fp + tn))
    assert m["accuracy"] == pytest.approx((tp + tn) / 12)
    assert m["prevalence"] == pytest.approx(5 / 12)
    assert (m["n"], m["n_pos"], m["n_neg"]) == (12, 5, 7)
    # The threshold itself counts as positive.
    assert binary_metrics(Y, S, 0.6)["sensitivity"] == pytest.approx(0.6)


def test_one_class_is_nan_not_an_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.5)
        est = bootstrap([1, 1, 1], [0.2, 0.7, 0.9], 0.5, n_resamples=50)
        empty = binary_metrics([], [], 0.5)
    assert math.isnan(m["auc"]) and math.isnan(m["specificity"]) and math.isnan(m["fpr"])
    assert m["npv"] == 0.0  # the one predicted negative is a positive
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert (m["n"], m["n_pos"], m["n_neg"]) == (3, 3, 0)
    assert math.isnan(est["auc"].value) and math.isnan(est["auc"].low)
    assert est["auc"].n == 3 and est["auc"].fmt() == "n/a"
    assert est["sensitivity"].low <= 2 / 3 <= est["sensitivity"].high
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in METRICS)


def test_bad_input_is_explained() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        binary_metrics([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="pair up"):
        binary_metrics([0, 1], [0.1], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, np.nan], 0.5)


def test_estimate_format() -> None:
    assert Estimate(0.912, 0.8, 0.981, 10).fmt() == "0.91 (0.80–0.98)"
    assert Estimate(0.5, math.nan, math.nan, 3).fmt(1) == "0.5 (n/a)"
    assert Estimate(math.nan, math.nan, math.nan, 0).fmt() == "n/a"


def test_youden_picks_the_known_threshold() -> None:
    # J is 0.5 at 0.8 and at 0.6, and 1 - 1/4 = 0.75 at 0.5, the maximum.
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.6, 0.5, 0.7, 0.3, 0.2, 0.1]
    assert choose_threshold(y, s) == pytest.approx(0.5)
    assert choose_threshold([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.8)
    # Ties in J: thresholds 0.8 and 0.3 both give J = 0.5; the higher is chosen.
    assert choose_threshold([1, 0, 1, 0], [0.8, 0.5, 0.3, 0.1]) == pytest.approx(0.8)


def test_sensitivity_rule_and_fallbacks() -> None:
    t = choose_threshold(Y, S, rule="sensitivity", target_sensitivity=0.8)
    assert t == pytest.approx(0.4)
    assert binary_metrics(Y, S, t)["sensitivity"] >= 0.8
    assert choose_threshold(Y, S, rule="sensitivity", target_sensitivity=1.0) == pytest.approx(0.3)
    assert choose_threshold([1, 1], [0.2, 0.4]) == 0.5
    assert choose_threshold([], []) == 0.5
    assert math.isfinite(choose_threshold([1, 0], [5.0, -5.0]))
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(Y, S, rule="f1")


def test_bootstrap_contains_point_and_is_deterministic() -> None:
    y, s = _data(240, 0)
    a = bootstrap(y, s, 0.5, n_resamples=1000, seed=3)
    b = bootstrap(y, s, 0.5, n_resamples=1000, seed=3)
    c = bootstrap(y, s, 0.5, n_resamples=1000, seed=4)
    assert a == b and a != c
    point = binary_metrics(y, s, 0.5)
    assert set(a) == set(METRICS)
    for key, est in a.items():
        assert est.value == pytest.approx(point[key])
        assert est.low <= est.value <= est.high, key
        assert est.n == 240
    assert a["prevalence"].low == a["prevalence"].high == pytest.approx(1 / 3)


def test_bootstrap_interval_shrinks_with_n() -> None:
    widths = []
    for n in (60, 600):
        y, s = _data(n, 1)
        est = bootstrap(y, s, 0.5, n_resamples=800)
        widths.append({k: est[k].high - est[k].low for k in ("auc", "sensitivity", "specificity")})
    for key in widths[0]:
        assert widths[1][key] < 0.6 * widths[0][key], key


def test_resampled_auc_equals_scikit_learn_on_the_same_resamples() -> None:
    y, s = _data(30, 2)
    s = np.round(s, 1)  # ties within and across resamples
    r = _Resampler(y.astype(bool), s)
    pos, neg = next(r.blocks(20, seed=5))
    aucs = r.auc(pos, neg)
    for i in range(20):
        rs = np.concatenate([np.repeat(r.values, pos[i]), np.repeat(r.values, neg[i])])
        ry = np.r_[np.ones(pos[i].sum()), np.zeros(neg[i].sum())]
        assert aucs[i] == pytest.approx(roc_auc_score(ry, rs))
    assert pos.sum(axis=1).tolist() == [r.n_pos] * 20


def test_undefined_in_some_resamples_uses_the_rest() -> None:
    # One predicted positive: PPV is defined on the data but not where that item is not drawn.
    y = [1, 0, 0, 0, 0, 1, 0, 0]
    s = [0.9, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.4]
    est = bootstrap(y, s, 0.5, n_resamples=300)
    assert est["ppv"].value == 1.0 and est["ppv"].low == est["ppv"].high == 1.0


def test_roc_band_shape_and_endpoints() -> None:
    y, s = _data(150, 3)
    band = roc_band(y, s, n_resamples=300, grid=51)
    assert band.fpr.shape == band.tpr.shape == band.tpr_low.shape == (51,)
    assert (band.fpr[0], band.tpr[0]) == (0.0, 0.0)
    assert (band.fpr[-1], band.tpr[-1]) == (1.0, 1.0)
    assert band.tpr_low[0] == 0.0 and band.tpr_high[-1] == 1.0
    assert np.all(np.diff(band.tpr) >= 0)
    assert np.all(band.tpr_low <= band.tpr_high)
    assert band.auc.value == pytest.approx(roc_auc_score(y, s))
    assert band.auc.low < band.auc.value < band.auc.high
    assert roc_band(y, s, n_resamples=300, grid=51).tpr_low.tolist() == band.tpr_low.tolist()
    with pytest.raises(ValueError, match="one class"):
        roc_band([1, 1], [0.1, 0.2])


def test_roc_band_follows_the_curve_at_its_vertices() -> None:
    # Perfect separation: the ROC goes straight up to (0, 1); every FPR > 0 has TPR 1.
    band = roc_band([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_resamples=50, grid=5)
    assert band.tpr.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert band.auc.value == 1.0


def test_calibration_and_brier() -> None:
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.12, 0.85, 0.95, 1.0]
    mean, observed, count = calibration(y, p, bins=10)
    assert count.tolist() == [1, 2, 1, 2]
    assert mean == pytest.approx([0.05, 0.135, 0.85, 0.975])
    assert observed == pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert brier(y, p) == pytest.approx(np.mean((np.array(p) - np.array(y)) ** 2))
    assert math.isnan(brier([], []))
    with pytest.raises(ValueError, match="probabilities"):
        calibration([0, 1], [-0.5, 2.0])
