"""Round selection: a stratified seed set first, then uncertainty plus a random control group."""

from __future__ import annotations

import pandas as pd
import pytest

from annotation.selection import select_for_round, stratified_sample


def _volumes(n: int = 60) -> pd.DataFrame:
    sites = ["site-a", "site-a", "site-b", "site-c"]  # site-a twice as common
    mods = ["CT", "CT", "MR"]
    return pd.DataFrame(
        {
            "sample_id": [f"s{i:03d}" for i in range(n)],
            "site": [sites[i % 4] for i in range(n)],
            "modality": [mods[i % 3] for i in range(n)],
        }
    )


def _scores(vols: pd.DataFrame) -> pd.DataFrame:
    # uncertainty rises with the index: the top ones are the last ids
    return pd.DataFrame(
        {"sample_id": vols["sample_id"], "uncertainty": [i / len(vols) for i in range(len(vols))]}
    )


def test_round_1_is_a_stratified_deterministic_seed_set() -> None:
    vols = _volumes()
    a = select_for_round(vols, set(), 1, 24, seed=7, scores=None)
    b = select_for_round(vols, set(), 1, 24, seed=7, scores=None)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 24 and set(a["reason"]) == {"seed"} and a["sample_id"].is_unique
    picked = vols[vols["sample_id"].isin(a["sample_id"])]
    share = picked.groupby(["site", "modality"]).size() / len(picked)
    expected = vols.groupby(["site", "modality"]).size() / len(vols)
    for key, exp in expected.items():
        assert abs(share.get(key, 0.0) - exp) <= 1 / 24 + 1e-9  # within one sample of proportional
    c = select_for_round(vols, set(), 1, 24, seed=8, scores=None)
    assert set(c["sample_id"]) != set(a["sample_id"])  # the seed matters


def test_later_round_takes_the_most_uncertain_plus_controls() -> None:
    vols = _volumes()
    labelled = {f"s{i:03d}" for i in range(50, 60)}  # the most uncertain are already labelled
    sel = select_for_round(vols, labelled, 2, 12, seed=1, scores=_scores(vols))
    assert len(sel) == 12 and sel["sample_id"].is_unique
    assert not set(sel["sample_id"]) & labelled
    counts = sel["reason"].value_counts()
    assert counts["control"] == 3 and counts["uncertainty"] == 9
    top = sel.loc[sel["reason"] == "uncertainty", "sample_id"].tolist()
    assert top == [f"s{i:03d}" for i in range(49, 40, -1)]
    controls = set(sel.loc[sel["reason"] == "control", "sample_id"])
    assert not controls & set(top)
    again = select_for_round(vols, labelled, 2, 12, seed=1, scores=_scores(vols))
    pd.testing.assert_frame_equal(sel, again)


def test_control_fraction_and_disagreement() -> None:
    vols = _volumes(20)
    dis = pd.DataFrame({"sample_id": ["s005", "s006"], "disagreement": [0.9, 0.4]})
    sel = select_for_round(vols, set(), 3, 8, seed=0, scores=dis, control_fraction=0.5)
    assert sel["reason"].tolist()[:2] == ["disagreement", "disagreement"]
    assert sel["sample_id"].tolist()[:2] == ["s005", "s006"]  # only two have a score
    assert (sel["reason"] == "control").sum() == 6
    allc = select_for_round(vols, set(), 2, 8, seed=0, scores=_scores(vols), control_fraction=1.0)
    assert set(allc["reason"]) == {"control"}


def test_budget_larger_than_pool_and_bad_input() -> None:
    vols = _volumes(10)
    sel = select_for_round(vols, {"s000", "s001"}, 2, 50, seed=0, scores=_scores(vols))
    assert sorted(sel["sample_id"]) == [f"s{i:03d}" for i in range(2, 10)]
    empty = select_for_round(vols, set(vols["sample_id"]), 2, 5, seed=0, scores=_scores(vols))
    assert empty.empty and list(empty.columns) == ["sample_id", "reason"]
    with pytest.raises(ValueError):
        select_for_round(vols, set(), 0, 5, seed=0, scores=None)
    with pytest.raises(ValueError):
        select_for_round(vols, set(), 2, 5, seed=0, scores=_scores(vols), control_fraction=1.5)


def test_stratified_sample_without_strata_columns() -> None:
    import numpy as np

    pool = pd.DataFrame({"sample_id": [f"x{i}" for i in range(9)]})
    ids = stratified_sample(pool, 4, np.random.default_rng(0))
    assert len(ids) == 4 and len(set(ids)) == 4


def test_volumes_that_were_not_written_are_never_picked() -> None:
    vols = pd.DataFrame(
        {
            "sample_id": [f"s{i:02d}" for i in range(6)],
            "site": ["A", "B"] * 3,
            "modality": ["CT"] * 6,
            "status": ["ok"] * 5 + ["load_error"],
        }
    )
    picked = select_for_round(vols, set(), 1, 6, seed=0, scores=None)
    assert set(picked["sample_id"]) == {f"s{i:02d}" for i in range(5)}
