"""The pre-annotation UNet learns a tiny set, predicts in the volume's grid, scores doubt, and a
round writes predictions and scores (proposal in round 1, a trained model later)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from annotation.model import (
    ModelConfig,
    TrainExample,
    binary_entropy,
    dice,
    earlier_labels,
    input_window,
    load_model,
    model_version,
    predict,
    run_annotation_model,
    sample_scores,
    save_model,
    to_mask,
    train,
)
from annotation.rounds import round_number
from medcurate.config import Zones

# 225 steps, most patches on a lesion: learns the tiny set as well as 400 steps did (Dice ~0.87)
TINY = ModelConfig(epochs=15, steps_per_epoch=15, batch_size=8, patch=32, lr=1e-2, pos_fraction=0.7)
# for tests of the round's bookkeeping, not of what the network learns
QUICK = ModelConfig(epochs=2, steps_per_epoch=5, batch_size=4, patch=32)


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


@pytest.mark.slow
def test_run_annotation_model_round_1_then_2(tmp_path: Path) -> None:
    vdir, ldir = _home(tmp_path)
    z = Zones(tmp_path)  # volumes/ and labels/ are the zones' folders
    out1 = tmp_path / "annotation" / "round-1" / "model"
    o1 = run_annotation_model(z, "round-1")
    assert o1.method == "proposal" and o1.predictions == 6
    s1 = pd.read_parquet(out1 / "scores.parquet")
    assert list(s1.columns) == ["sample_id", "uncertainty", "p_abnormal", "model_version"]
    pred = nib.load(out1 / "pred" / "s000.nii.gz")
    vol = nib.load(vdir / "s000.nii.gz")
    assert pred.get_data_dtype() == np.uint8 and pred.shape == vol.shape
    assert np.allclose(pred.affine, vol.affine)
    assert (
        dice(np.asarray(pred.dataobj), np.asarray(nib.load(tmp_path / "truth-s000.nii.gz").dataobj))
        > 0.5
    )

    # round 1's labels: four samples, two of them abnormal with masks
    (ldir / "masks").mkdir()
    labs = []
    for i in range(4):
        sid = f"s{i:03d}"
        mp = None
        if i % 2 == 0:
            mp = f"masks/{sid}.nii.gz"
            (ldir / mp).write_bytes((tmp_path / f"truth-{sid}.nii.gz").read_bytes())
        labs.append(dict(sample_id=sid, label="abnormal" if mp else "normal", mask_path=mp,
                         source_round="round-1", agreement=1.0))  # fmt: skip
    pd.DataFrame(labs).to_parquet(ldir / "labels.parquet")
    out2 = tmp_path / "annotation" / "round-2" / "model"
    o2 = run_annotation_model(z, "round-2", config=QUICK)
    assert o2.method == "unet" and o2.train_size == 4 and o2.train_positives == 2
    assert o2.predictions == 2  # only the unlabelled samples
    assert sorted(p.name for p in (out2 / "pred").iterdir()) == ["s004.nii.gz", "s005.nii.gz"]
    s2 = pd.read_parquet(out2 / "scores.parquet")
    assert set(s2["model_version"]) == {o2.model_version}
    assert (out2 / "model.pt").exists()
    # same labels and config: same bytes
    files = ["scores.parquet", "pred/s004.nii.gz", "model.pt"]
    first = [(out2 / f).read_bytes() for f in files]
    run_annotation_model(z, "round-2", config=QUICK)
    again = [(out2 / f).read_bytes() for f in files]
    assert first == again
