"""The pre-annotation UNet learns a tiny set, predicts in the volume's grid, scores doubt, and a
round writes predictions and scores (proposal in round 1, a trained model later)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from annotation.model import (
    SCORE_COLUMNS,
    ModelConfig,
    TrainExample,
    binary_entropy,
    build_network,
    dice,
    earlier_labels,
    fit_calibration,
    input_window,
    label_prior,
    load_model,
    model_version,
    offer_decision,
    planned_epochs,
    predict,
    read_outcome,
    run_annotation_model,
    sample_scores,
    save_model,
    to_mask,
    train,
    warm_epochs,
)
from annotation.rounds import round_number
from medcurate.config import Zones

# 225 steps, most patches on a lesion: learns the tiny set as well as 400 steps did (Dice ~0.87)
TINY = ModelConfig(epochs=15, steps_per_epoch=15, batch_size=8, patch=32, lr=1e-2, pos_fraction=0.7)
# for tests of the round's bookkeeping, not of what the network learns
QUICK = ModelConfig(epochs=2, steps_per_epoch=5, batch_size=4, patch=32)
QUICK_NO_FLOOR = dataclasses.replace(QUICK, min_validation_dice=0.0)


def _volume(seed: int, lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like 64x64x12 body with a dark ellipsoid (30 HU in 60 HU tissue) when ``lesion``."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[:64, :64, :12]
    v = np.where((x - 32) ** 2 + (y - 32) ** 2 < 28**2, 0.53, 0.0).astype(np.float32)
    m = np.zeros(v.shape, np.uint8)
    if lesion:
        cx, cy = rng.integers(20, 44, 2)
        cz = int(rng.integers(4, 8))
        m = (((x - cx) ** 2 + (y - cy) ** 2) / 36 + (z - cz) ** 2 / 4 < 1).astype(np.uint8)
        v[m > 0] = 0.514
    v += rng.normal(0, 0.003, v.shape).astype(np.float32)
    return v, m


@pytest.fixture(scope="session")
def trained():  # type: ignore[no-untyped-def]
    data = [_volume(i) for i in range(3)]
    examples = [TrainExample(v, "CT", m) for v, m in data]
    examples.append(TrainExample(_volume(9, lesion=False)[0], "CT", None))
    return train(examples, TINY), data


@pytest.mark.slow
def test_model_overfits_a_tiny_set(trained) -> None:  # type: ignore[no-untyped-def]
    result, data = trained
    assert result.losses[-1] < 0.7 * result.losses[0]
    for v, m in data:
        prob = predict(result.model, v, "CT", TINY)
        assert prob.shape == v.shape and prob.dtype == np.float32
        assert dice(to_mask(prob, TINY), m) > 0.6
    normal = _volume(9, lesion=False)[0]
    assert to_mask(predict(result.model, normal, "CT", TINY), TINY).sum() == 0


@pytest.mark.slow
def test_training_is_deterministic(trained) -> None:  # type: ignore[no-untyped-def]
    _result, data = trained
    short = ModelConfig(epochs=1, steps_per_epoch=3, batch_size=4, patch=32)
    ex = [TrainExample(v, "CT", m) for v, m in data[:1]]
    a, b = train(ex, short), train(ex, short)
    assert a.losses == b.losses
    pa = predict(a.model, data[0][0], "CT", short)
    assert np.array_equal(pa, predict(b.model, data[0][0], "CT", short))


def test_uncertainty_separates_confident_from_doubtful() -> None:
    confident = np.zeros((32, 32, 4), np.float32)
    confident[10:14, 10:14, 1:3] = 0.99
    doubtful = np.zeros((32, 32, 4), np.float32)
    doubtful[10:14, 10:14, 1:3] = 0.5
    u_conf, p_conf = sample_scores(confident, top_k=32)
    u_doubt, p_doubt = sample_scores(doubtful, top_k=32)
    assert u_doubt > 0.9 > 0.2 > u_conf
    assert p_conf > p_doubt
    assert sample_scores(np.zeros((8, 8, 2), np.float32))[1] == 0.0
    assert binary_entropy(np.array([0.5]))[0] == pytest.approx(1.0)


@pytest.mark.slow
def test_mc_dropout_and_2d(trained) -> None:  # type: ignore[no-untyped-def]
    result, data = trained
    v2d = data[0][0][:, :, 6]
    prob = predict(result.model, v2d, "CT", TINY, mc_samples=3)
    assert prob.shape == v2d.shape and prob.min() >= 0.0 and prob.max() <= 1.0
    plain = predict(result.model, v2d, "CT", TINY)
    assert not np.array_equal(prob, plain)  # dropout was on
    assert not any(m.training for m in result.model.modules())  # and is off again
    assert np.array_equal(plain, predict(result.model, v2d, "CT", TINY))


@pytest.mark.slow
def test_save_and_load_round_trip(tmp_path: Path, trained) -> None:  # type: ignore[no-untyped-def]
    result, data = trained
    result.version = model_version(TINY, ["b", "a"])
    assert result.version == model_version(TINY, ["a", "b"])
    path = save_model(tmp_path / "round-2" / "model" / "model.pt", result)
    net, cfg, meta = load_model(path)
    assert cfg == TINY and meta["config_hash"] == TINY.config_hash()
    assert meta["version"] == result.version
    v = data[0][0]
    assert np.array_equal(predict(net, v, "CT", cfg), predict(result.model, v, "CT", TINY))
    import torch

    payload = torch.load(path, weights_only=True)
    payload["config"]["lr"] = 0.5
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="hash"):
        load_model(tmp_path / "edited.pt")


def test_helpers() -> None:
    assert round_number("round-3") == 3 and round_number(2) == 2
    with pytest.raises(ValueError):
        round_number("r3")
    labels = pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "source_round": ["round-1", "round-2", "imported"]}
    )
    assert earlier_labels(labels, 2)["sample_id"].tolist() == ["a", "c"]
    ct = input_window(np.array([0.0, 0.5, 1.0], np.float32), "CT")
    assert ct[0] == 0.0 and ct[2] == 1.0 and 0.0 < ct[1] < 1.0
    assert ModelConfig().config_hash() != TINY.config_hash()


def _home(root: Path, n: int = 6) -> tuple[Path, Path]:
    """volumes/ with volumes.parquet and n NIfTI volumes; labels/ empty."""
    vdir, ldir = root / "volumes", root / "labels"
    vdir.mkdir(parents=True)
    ldir.mkdir(parents=True)
    rows = []
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [-40.0, -50.0, 10.0]
    for i in range(n):
        v, m = _volume(i, lesion=i % 2 == 0)
        sid = f"s{i:03d}"
        nib.save(nib.Nifti1Image(v, aff), vdir / f"{sid}.nii.gz")
        nib.save(nib.Nifti1Image(m, aff), root / f"truth-{sid}.nii.gz")
        rows.append(dict(sample_id=sid, patient=f"p{i}", site="A", modality="CT",
                         nifti_path=f"{sid}.nii.gz", status="ok"))  # fmt: skip
    pd.DataFrame(rows).to_parquet(vdir / "volumes.parquet")
    return vdir, ldir


def _shown(p_abnormal: float) -> set[float]:
    """The scores Label Studio shows for a sample's slices (rounds._slice_prediction)."""
    return {round(p_abnormal, 4), round(1.0 - p_abnormal, 4)}


def _round_1_labels(tmp_path: Path, ldir: Path, n: int) -> None:
    """Round 1's labels of the first ``n`` samples: the even ones abnormal with masks."""
    (ldir / "masks").mkdir(exist_ok=True)
    labs = []
    for i in range(n):
        sid = f"s{i:03d}"
        mp = None
        if i % 2 == 0:
            mp = f"masks/{sid}.nii.gz"
            (ldir / mp).write_bytes((tmp_path / f"truth-{sid}.nii.gz").read_bytes())
        labs.append(dict(sample_id=sid, label="abnormal" if mp else "normal", mask_path=mp,
                         source_round="round-1", agreement=1.0))  # fmt: skip
    pd.DataFrame(labs).to_parquet(ldir / "labels.parquet")


@pytest.mark.slow
def test_run_annotation_model_round_1_then_2(tmp_path: Path) -> None:
    vdir, ldir = _home(tmp_path)
    z = Zones(tmp_path)  # volumes/ and labels/ are the zones' folders
    out1 = tmp_path / "annotation" / "round-1" / "model"
    o1 = run_annotation_model(z, "round-1")
    assert o1.method == "proposal" and o1.predictions == 6 and o1.scored == 6
    assert o1.pre_annotations.startswith("offered: intensity proposal")
    s1 = pd.read_parquet(out1 / "scores.parquet")
    assert list(s1.columns) == SCORE_COLUMNS
    # the proposal's score is kept away from 0 and 1: no slice shows "100%"
    assert s1["p_abnormal"].between(0.25, 0.75).all()
    assert all(1.0 not in _shown(p) for p in s1["p_abnormal"])
    assert (s1["p_abnormal_raw"] == 0.0).any()  # the raw score that made normal slices 100%
    pred = nib.load(out1 / "pred" / "s000.nii.gz")
    vol = nib.load(vdir / "s000.nii.gz")
    assert pred.get_data_dtype() == np.uint8 and pred.shape == vol.shape
    assert np.allclose(pred.affine, vol.affine)
    assert (
        dice(np.asarray(pred.dataobj), np.asarray(nib.load(tmp_path / "truth-s000.nii.gz").dataobj))
        > 0.5
    )
    assert read_outcome(z, "round-1")["offered"] is True  # type: ignore[index]

    # round 1's labels: four samples, two of them abnormal with masks: too few to validate
    _round_1_labels(tmp_path, ldir, 4)
    out2 = tmp_path / "annotation" / "round-2" / "model"
    withheld = run_annotation_model(z, "round-2", config=QUICK)
    assert withheld.method == "unet" and withheld.val_dice is None
    assert withheld.pre_annotations.startswith("withheld: no validation")
    assert withheld.predictions == 0 and withheld.scored == 2
    assert not (out2 / "pred").exists()  # no masks: the round goes without pre-annotations
    s2 = pd.read_parquet(out2 / "scores.parquet")  # ...but its uncertainty still selects
    assert sorted(s2["sample_id"]) == ["s004", "s005"]
    # unvalidated: every sample gets the training prior (2 of 4 abnormal, Laplace: 0.5)
    assert s2["p_abnormal"].tolist() == [0.5, 0.5]
    doc = json.loads((out2 / "outcome.json").read_text())
    assert doc["offered"] is False and doc["min_validation_dice"] == 0.5
    assert doc["pre_annotations"] == withheld.pre_annotations

    o2 = run_annotation_model(z, "round-2", config=QUICK_NO_FLOOR)
    assert o2.method == "unet" and o2.train_size == 4 and o2.train_positives == 2
    assert o2.model_version == withheld.model_version  # the floor is not part of the version
    assert o2.predictions == 2 and o2.pre_annotations.startswith("offered")
    assert sorted(p.name for p in (out2 / "pred").iterdir()) == ["s004.nii.gz", "s005.nii.gz"]
    s2 = pd.read_parquet(out2 / "scores.parquet")
    assert set(s2["model_version"]) == {o2.model_version}
    assert (out2 / "model.pt").exists()
    # same labels and config: same bytes
    files = ["scores.parquet", "pred/s004.nii.gz", "model.pt", "outcome.json"]
    first = [(out2 / f).read_bytes() for f in files]
    run_annotation_model(z, "round-2", config=QUICK_NO_FLOOR)
    again = [(out2 / f).read_bytes() for f in files]
    assert first == again


@pytest.mark.slow
def test_a_poorly_validated_model_is_not_offered(tmp_path: Path) -> None:
    """Four abnormal and four normal patients labelled: one of each is held out; a model
    trained for ten steps segments them badly, so its masks are withheld."""
    _vdir, ldir = _home(tmp_path, n=10)
    _round_1_labels(tmp_path, ldir, 8)
    z = Zones(tmp_path)
    out = run_annotation_model(z, "round-2", config=QUICK)
    assert out.val_size == 2 and out.val_positives == 1 and out.train_size == 6
    assert out.val_dice is not None and out.val_dice < 0.5
    assert out.pre_annotations == f"withheld: validation Dice {out.val_dice:.2f} < floor 0.50"
    assert out.metadata()["pre_annotations"] == out.pre_annotations
    assert "withheld" in out.summary_line()
    assert not z.round_predictions("round-2").exists()
    scores = pd.read_parquet(z.round_scores("round-2"))
    assert sorted(scores["sample_id"]) == ["s008", "s009"]
    assert scores["p_abnormal"].between(0.0, 1.0, inclusive="neither").all()
    assert read_outcome(z, "round-2")["val_dice"] == out.val_dice  # type: ignore[index]


def test_training_is_sized_to_its_slices() -> None:
    cfg = ModelConfig()  # 40 steps of 16 patches an epoch, about 120 patches a slice
    assert planned_epochs(cfg, 80) == 15  # the demo's round 2: 11 volumes, 80 slices
    assert planned_epochs(cfg, 10) == cfg.min_epochs  # a tiny set still gets the minimum
    assert planned_epochs(cfg, 10_000) == cfg.epochs  # a large one the cap
    assert planned_epochs(dataclasses.replace(cfg, patches_per_slice=0), 10) == cfg.epochs
    assert planned_epochs(dataclasses.replace(cfg, epochs=2), 80) == 2  # the cap wins
    assert planned_epochs(TINY, 33) == TINY.epochs  # the tests' configs run all their epochs


def test_a_warm_start_is_sized_to_the_new_slices() -> None:
    cfg = ModelConfig()
    full = planned_epochs(cfg, 160)  # 30 epochs for a fresh model on 160 slices
    assert warm_epochs(cfg, 160, 80, 0.1) == -(-full // 2)  # half the slices new: half the epochs
    assert warm_epochs(cfg, 160, 0, 0.1) == -(-full // 10)  # nothing new: the floor
    assert warm_epochs(cfg, 160, 1, 0.0) == 1  # at least one epoch
    assert warm_epochs(cfg, 160, 160, 0.1) == full  # all new: never more than a fresh model


def _add_labels(ldir: Path, tmp_path: Path, ids: list[int], source_round: str) -> None:
    """Append labels (even ids abnormal, with their true masks) from ``source_round``."""
    old = pd.read_parquet(ldir / "labels.parquet")
    labs = []
    for i in ids:
        sid = f"s{i:03d}"
        mp = None
        if i % 2 == 0:
            mp = f"masks/{sid}.nii.gz"
            (ldir / mp).write_bytes((tmp_path / f"truth-{sid}.nii.gz").read_bytes())
        labs.append(dict(sample_id=sid, label="abnormal" if mp else "normal", mask_path=mp,
                         source_round=source_round, agreement=1.0))  # fmt: skip
    pd.concat([old, pd.DataFrame(labs)]).to_parquet(ldir / "labels.parquet")


@pytest.mark.slow
def test_a_later_round_warm_starts_from_the_last_model(tmp_path: Path) -> None:
    """Round 3 starts from round 2's weights when round 2's labels are all still there with the
    same content, for epochs sized to the new slices; a changed label or config starts fresh."""
    import torch

    _vdir, ldir = _home(tmp_path, n=8)
    _round_1_labels(tmp_path, ldir, 4)
    z = Zones(tmp_path)
    cfg = dataclasses.replace(QUICK_NO_FLOOR, epochs=4)
    o2 = run_annotation_model(z, "round-2", config=cfg)
    assert o2.warm_start_from == "none" and o2.warm_start == "fresh: no earlier model"
    assert o2.epochs == 4 and o2.new_slices is not None and o2.new_slices > 0
    _add_labels(ldir, tmp_path, [4, 5], "round-2")

    o3 = run_annotation_model(z, "round-3", config=cfg)
    assert o3.warm_start_from == o2.model_version
    assert o3.warm_start == f"warm: from {o2.model_version}"
    assert o3.metadata()["warm_start_from"] == o2.model_version  # the asset's metadata
    assert o3.epochs is not None and 1 <= o3.epochs < o2.epochs  # a third of the slices are new
    saved = torch.load(z.round_model_file("round-3"), weights_only=True)
    assert saved["extra"]["parent"] == o2.model_version
    assert sorted(saved["extra"]["train_labels"]) == [f"s{i:03d}" for i in range(6)]
    assert json.loads(z.round_model_outcome("round-3").read_text())["warm_start_from"] == (
        o2.model_version
    )
    # the parent is part of the version; the same inputs give the same bytes
    fresh_version = model_version(cfg, [f"s{i:03d}" for i in range(6)])
    assert o3.model_version != fresh_version
    first = z.round_model_file("round-3").read_bytes()
    assert run_annotation_model(z, "round-3", config=cfg).model_version == o3.model_version
    assert z.round_model_file("round-3").read_bytes() == first

    # another config: fresh, the full length
    other = dataclasses.replace(cfg, seed=1)
    o3b = run_annotation_model(z, "round-3", config=other)
    assert o3b.warm_start_from == "none" and "another config" in o3b.warm_start
    assert o3b.epochs == 4

    # a round-1 label changed (s000's mask now empty: normal): its old mask must not linger
    labels = pd.read_parquet(ldir / "labels.parquet")
    labels.loc[labels["sample_id"] == "s000", ["label", "mask_path"]] = ["normal", None]
    labels.to_parquet(ldir / "labels.parquet")
    o3c = run_annotation_model(z, "round-3", config=cfg)
    assert o3c.warm_start_from == "none"
    assert o3c.warm_start.startswith("fresh: 1 of") and "removed or changed" in o3c.warm_start
    assert o3c.model_version == model_version(cfg, [f"s{i:03d}" for i in range(6)])


@pytest.mark.slow
def test_a_patient_the_parent_trained_on_is_never_held_out(tmp_path: Path) -> None:
    """The held-out fifth is ranked by a hash of the pseudonym, so adding patients can move a
    patient round 2 trained on into round 3's held-out set (here p3). Warm-started, p3 stays
    in training and only the new p6 is held out: no held-out Dice of a patient the weights saw."""
    _vdir, ldir = _home(tmp_path, n=8)
    _round_1_labels(tmp_path, ldir, 6)  # three abnormal patients: too few to hold any out
    z = Zones(tmp_path)
    cfg = dataclasses.replace(QUICK_NO_FLOOR, epochs=4)
    o2 = run_annotation_model(z, "round-2", config=cfg)
    assert o2.val_size == 0 and o2.train_size == 6
    _add_labels(ldir, tmp_path, [6, 7], "round-2")
    o3 = run_annotation_model(z, "round-3", config=cfg)
    assert o3.warm_start_from == o2.model_version
    assert o3.val_size == 1 and o3.train_size == 7  # p6 held out; p3 (trained on) kept
    # without the parent, the plain split holds out p3 and p6
    z.round_model_file("round-2").unlink()
    fresh = run_annotation_model(z, "round-3", config=cfg)
    assert fresh.warm_start_from == "none" and fresh.val_size == 2 and fresh.train_size == 6


def test_volumes_are_read_ahead_in_order(tmp_path: Path) -> None:
    from annotation.model import _read_ahead

    paths = []
    for i in range(3):
        v, _ = _volume(i)
        paths.append(tmp_path / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(v, np.diag([1.5, 1.5, 2.0, 1.0])), paths[-1])
    got = list(_read_ahead(paths))
    assert len(got) == 3 and list(_read_ahead([])) == []
    for (vol, aff), (want, _) in zip(got, [_volume(i) for i in range(3)], strict=True):
        assert np.array_equal(vol, want) and aff[2, 2] == 2.0


def test_training_examples_are_read_when_iterated(tmp_path: Path) -> None:
    """The round's training set is a sequence whose volumes are read as train() walks it (two
    at a time), with the same arrays an eager read gives, in order."""
    from annotation.model import _Item, _LazyExamples

    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    items = []
    for i in range(3):
        v, m = _volume(i, lesion=i != 1)
        nib.save(nib.Nifti1Image(v, aff), tmp_path / f"v{i}.nii.gz")
        mask_file = None
        if i != 1:
            mask_file = tmp_path / f"m{i}.nii.gz"
            nib.save(nib.Nifti1Image(m, aff), mask_file)
        items.append(_Item(f"p{i}", f"s{i}", "CT", tmp_path / f"v{i}.nii.gz", mask_file))
    lazy = _LazyExamples(items)
    assert len(lazy) == 3 and len(lazy[1:]) == 2 and lazy[1].mask is None
    got = list(lazy)
    for i, ex in enumerate(got):
        v, m = _volume(i, lesion=i != 1)
        assert np.array_equal(ex.volume, v) and ex.modality == "CT"
        assert (ex.mask is None) == (i == 1)
        assert ex.mask is None or np.array_equal(ex.mask, m)
    assert list(_LazyExamples([])) == []


def test_shrinkage_without_validation_says_the_prior() -> None:
    cal = fit_calibration([], [], [], label_prior(3, 8))
    assert cal.method == "shrinkage" and cal.weight == 0.0
    assert cal(1.0) == cal(0.0) == pytest.approx(0.4)  # (3 + 1) / (8 + 2)
    assert "prior 0.400" in cal.describe()


def test_shrinkage_trusts_a_model_as_far_as_held_out_cases_show() -> None:
    prior = label_prior(1, 2)
    one = fit_calibration([0.99], [True], [True], prior)
    five = fit_calibration([0.99] * 5, [True] * 5, [True] * 5, prior)
    wrong = fit_calibration([0.99, 0.99], [False, False], [True, True], prior)
    assert 0.0 < one.weight < five.weight < 1.0 and wrong.weight == 0.0
    for cal in (one, five, wrong):  # never the overconfident model's 0 or 1
        assert 0.0 < cal(0.0) <= cal(1.0) < 1.0
        assert 1.0 not in _shown(cal(1.0)) | _shown(cal(0.0))
    assert five(1.0) > one(1.0) > 0.5 > one(0.0) > five(0.0)


def test_platt_scaling_on_enough_held_out_cases() -> None:
    """An overconfident model (raw 0 or 1) right 7 times in 10 when it fires: calibrated near
    0.7, not 1.0; deterministic."""
    raw = [0.999] * 10 + [0.001] * 10
    truth = [True] * 7 + [False] * 3 + [False] * 8 + [True] * 2
    called = [r > 0.5 for r in raw]
    cal = fit_calibration(raw, truth, called, 0.5)
    assert cal.method == "platt" and cal.cases == 20
    assert 0.6 < cal(0.999) < 0.8 and 0.1 < cal(0.001) < 0.35
    assert cal(0.2) < cal(0.5) < cal(0.8)  # monotone
    assert fit_calibration(raw, truth, called, 0.5) == cal
    # separable classes: Platt's smoothed targets keep the output off 0 and 1
    sep = fit_calibration(raw, [r > 0.5 for r in raw], called, 0.5)
    assert 0.0 < sep(0.001) < 0.1 and 0.9 < sep(0.999) < 1.0


def test_offer_decision_and_a_floor_outside_the_version() -> None:
    assert offer_decision(0.26, 0.5) == (False, "withheld: validation Dice 0.26 < floor 0.50")
    assert offer_decision(0.71, 0.5) == (True, "offered: validation Dice 0.71 >= floor 0.50")
    ok, why = offer_decision(None, 0.5, "2 abnormal patients labelled")
    assert not ok and why == "withheld: no validation (2 abnormal patients labelled), floor 0.50"
    assert offer_decision(None, 0.0)[0] and offer_decision(0.01, 0.0)[0]
    assert ModelConfig().min_validation_dice == 0.5
    floorless = dataclasses.replace(ModelConfig(), min_validation_dice=0.0)
    assert floorless.config_hash() == ModelConfig().config_hash()
    assert model_version(floorless, ["a"]) == model_version(ModelConfig(), ["a"])


@pytest.mark.parametrize("n", [3, 6])
def test_training_slices_hold_a_few_volumes_whatever_the_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """Issue 16: the labelled volumes are read as the training slices are cut from them, so
    the full-size volumes alive at once do not grow with the labels; the slice set keeps its
    masks as 0/1 bytes (the patches cut from them are the float32 ones of before)."""
    import gc
    import weakref

    from annotation import model
    from annotation.model import _Item, _LazyExamples, _training_slices

    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    items = []
    for i in range(n):
        v, m = _volume(i)
        nib.save(nib.Nifti1Image(v, aff), tmp_path / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(m, aff), tmp_path / f"m{i}.nii.gz")
        items.append(_Item(f"p{i}", f"s{i}", "CT", tmp_path / f"v{i}.nii.gz",
                           tmp_path / f"m{i}.nii.gz"))  # fmt: skip
    alive: list[weakref.ref[np.ndarray]] = []
    held: list[int] = []
    real = model._load

    def counting(path: Path):  # type: ignore[no-untyped-def]
        gc.collect()
        held.append(sum(r() is not None for r in alive))
        vol, aff = real(path)
        alive.append(weakref.ref(vol))
        return vol, aff

    monkeypatch.setattr(model, "_load", counting)
    slices = _training_slices(_LazyExamples(items), QUICK, np.random.default_rng(0))
    assert len(held) == 2 * n  # a volume and a mask per example
    assert max(held) <= 4  # the current example and the one read ahead (volume and mask each)
    assert all(m.dtype == np.uint8 for m in slices.masks) and slices.positives
    eager = list(_LazyExamples(items))  # every volume in memory: the same slices
    ref = _training_slices(eager, QUICK, np.random.default_rng(0))
    assert [a.tobytes() for a in ref.imgs] == [a.tobytes() for a in slices.imgs]
    assert [a.tobytes() for a in ref.masks] == [a.tobytes() for a in slices.masks]


def test_predict_keeps_no_second_full_size_copy() -> None:
    """Issue 16: predict's numpy peak is the windowed input and the output (was 3.3 volumes
    with a transposed copy of the output)."""
    import tracemalloc

    cfg = ModelConfig()
    net = build_network(cfg)
    vol = np.random.default_rng(0).normal(0, 100, (96, 96, 24)).astype(np.float32)
    predict(net, vol, "CT", cfg)  # warm: lazy imports and caches are not this call's memory
    tracemalloc.start()
    try:
        prob = predict(net, vol, "CT", cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prob.shape == vol.shape and prob.flags["C_CONTIGUOUS"]
    assert peak <= 2.5 * vol.nbytes
