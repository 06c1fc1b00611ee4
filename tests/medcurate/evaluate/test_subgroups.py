from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from medcurate.evaluate.subgroups import (
    TABLE_METRICS,
    fairness_gaps,
    flag_gaps,
    subgroup_table,
)

THRESHOLD = 0.5


def _gap(gaps: pd.DataFrame, attribute: str, metric: str) -> dict:
    match = gaps[(gaps["attribute"] == attribute) & (gaps["metric"] == metric)]
    assert len(match) == 1
    return match.to_dict("records")[0]


def _frame() -> pd.DataFrame:
    """Three sites of 6; site-b misses every positive. Sex is balanced and carries no gap."""
    rows = []
    for site in ("site-a", "site-b", "site-c"):
        for i in range(6):
            y = int(i < 3)
            if site == "site-b":
                score = 0.2 if y else 0.1 + 0.05 * i
            else:
                score = 0.8 - 0.1 * i if y else 0.1 * i - 0.2
            rows.append({"y_true": y, "score": score, "site": site, "sex": "FM"[i % 2]})
    return pd.DataFrame(rows)


def test_table_rows_columns_and_order() -> None:
    table = subgroup_table(_frame(), ["site", "sex"], THRESHOLD, n_resamples=200)
    assert list(table.columns[:6]) == ["attribute", "group", "n", "n_pos", "n_neg", "prevalence"]
    for metric in TABLE_METRICS:
        assert {metric, f"{metric}_low", f"{metric}_high"} <= set(table.columns)
    assert table[["attribute", "group"]].values.tolist()[:6] == [
        ["overall", "overall"],
        ["site", "site-a"],
        ["site", "site-b"],
        ["site", "site-c"],
        ["sex", "F"],
        ["sex", "M"],
    ]
    assert table.loc[0, "n"] == 18 and table.loc[0, "n_pos"] == 9
    pd.testing.assert_frame_equal(
        table, subgroup_table(_frame(), ["site", "sex"], THRESHOLD, n_resamples=200)
    )


def test_table_matches_manual_scikit_learn_per_group() -> None:
    frame = _frame()
    table = subgroup_table(frame, ["site"], THRESHOLD, n_resamples=100).set_index("group")
    for site, part in frame.groupby("site"):
        pred = (part["score"] >= THRESHOLD).astype(int)
        row = table.loc[site]
        assert row["sensitivity"] == pytest.approx(recall_score(part["y_true"], pred))
        assert row["specificity"] == pytest.approx(recall_score(part["y_true"], pred, pos_label=0))
        assert row["auc"] == pytest.approx(roc_auc_score(part["y_true"], part["score"]))
        assert row["fnr"] == pytest.approx(1 - row["sensitivity"])
        assert row["n"] == len(part)
    assert table.loc["site-b", "fnr"] == 1.0


def test_one_class_group_is_nan_with_its_n() -> None:
    frame = _frame()
    frame.loc[len(frame)] = {"y_true": 1, "score": 0.9, "site": "site-d", "sex": "F"}
    frame.loc[len(frame)] = {"y_true": 1, "score": 0.3, "site": "site-d", "sex": "M"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = subgroup_table(frame, ["site"], THRESHOLD, n_resamples=100)
        gaps = fairness_gaps(frame, ["site"], THRESHOLD)
    row = table[table["group"] == "site-d"].to_dict("records")[0]
    assert (row["n"], row["n_pos"], row["n_neg"]) == (2, 2, 0)
    assert math.isnan(float(row["auc"])) and math.isnan(float(row["specificity"]))
    assert math.isnan(float(row["specificity_low"])) and math.isnan(float(row["specificity_high"]))
    assert row["sensitivity"] == 0.5
    spec = gaps.set_index("metric").loc["specificity"]
    assert spec["n_groups"] == 3  # site-d has no specificity and stays out of the gap


def test_missing_values_are_unknown() -> None:
    frame = _frame()
    frame["sex"] = frame["sex"].astype(object)
    frame.loc[[0, 1], "sex"] = None
    table = subgroup_table(frame, ["sex"], THRESHOLD, n_resamples=50, intersections=False)
    assert table["group"].tolist() == ["overall", "F", "M", "unknown"]
    assert table.set_index("group").loc["unknown", "n"] == 2


def test_intersections_only_above_min_n() -> None:
    frame = _frame()
    frame["sex"] = ["F"] * 16 + ["M"] * 2  # site-c×M has 2 items
    table = subgroup_table(frame, ["site", "sex"], THRESHOLD, min_n=3, n_resamples=50)
    cross = table[table["attribute"] == "site×sex"]
    assert cross["group"].tolist() == ["site-a×F", "site-b×F", "site-c×F"]
    assert cross["n"].tolist() == [6, 6, 4]
    # The small group still has its single-attribute row.
    assert table.set_index(["attribute", "group"]).loc[("sex", "M"), "n"] == 2
    none = subgroup_table(frame, ["site", "sex"], THRESHOLD, n_resamples=50, intersections=False)
    assert "site×sex" not in set(none["attribute"])


def test_fnr_gap_found_and_flagged() -> None:
    gaps = fairness_gaps(_frame(), ["site", "sex"], THRESHOLD)
    assert set(gaps["metric"]) == {"sensitivity", "specificity", "fnr", "selection_rate"}
    fnr = _gap(gaps, "site", "fnr")
    assert fnr["difference"] == pytest.approx(1.0)
    assert fnr["worst_group"] == "site-b" and fnr["worst_value"] == 1.0
    assert fnr["worst_n"] == 6 and fnr["worst_n_pos"] == 3 and fnr["n_groups"] == 3
    sens = _gap(gaps, "site", "sensitivity")
    assert sens["worst_group"] == "site-b" and sens["ratio"] == 0.0
    messages = flag_gaps(gaps)
    assert messages == ["fnr differs by 1.00 across site (worst: site-b 1.00, n=6)"]
    assert flag_gaps(gaps, tolerance=1.0) == []
    assert len(flag_gaps(gaps, metrics=("fnr", "sensitivity"))) == 2


def test_gaps_match_manual_per_group_computation() -> None:
    frame = _frame()
    frame.loc[frame.index[:4], "score"] = [0.9, 0.3, 0.2, 0.7]
    gaps = fairness_gaps(frame, ["sex"], THRESHOLD).set_index("metric")
    per_group = {}
    for sex, part in frame.groupby("sex"):
        pred = (part["score"] >= THRESHOLD).astype(int)
        per_group[sex] = recall_score(part["y_true"], pred, pos_label=0)
    values = np.array(list(per_group.values()))
    assert gaps.loc["specificity", "difference"] == pytest.approx(values.max() - values.min())
    assert gaps.loc["specificity", "worst_group"] == min(per_group, key=per_group.__getitem__)


def test_bad_frame_is_explained() -> None:
    with pytest.raises(ValueError, match="manufacturer"):
        subgroup_table(_frame(), ["manufacturer"], THRESHOLD)
    with pytest.raises(ValueError, match="list of column names"):
        fairness_gaps(_frame(), "site", THRESHOLD)
