"""The slice classifier: it learns blob lesions, not noise, and is deterministic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medcurate.evaluate.classifier import (
    ClassifierConfig,
    build_classifier,
    load_model,
    predict,
    save_model,
    train_classifier,
    train_or_load,
    training_key,
)
from medcurate.evaluate.cohort import UNKNOWN, sample_scores, slices_from_volumes
from medcurate.torchrun import untimed
from tests.evaluate_helpers import blob_slices, blob_volumes

SIZE = 32
# 60 training volumes x 12 slices at 32 px: about 2 s per epoch on one core
COHORT_CFG = ClassifierConfig(size=SIZE, epochs=8, lr=3e-3, seed=0, threads=1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return blob_volumes(tmp_path_factory.mktemp("blobs"), 100, seed=0)


def _sample_auc(trained: Any, test: list[dict[str, Any]]) -> float:
    s = slices_from_volumes(test, SIZE)
    scores = sample_scores(predict(trained.model, s), s.sample, len(test))
    return float(roc_auc_score([d["class"] == "abnormal" for d in test], scores))


def test_config_round_trip() -> None:
    cfg = ClassifierConfig(size=32, widths=(4, 8, 16, 32))
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["widths"] == [4, 8, 16, 32]


def test_one_logit_per_slice() -> None:
    net = build_classifier(ClassifierConfig(size=32))
    assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 1)


@pytest.mark.slow
def test_same_seed_same_predictions_and_settings_restored() -> None:
    train, test = blob_slices(64, SIZE, seed=0), blob_slices(16, SIZE, seed=1)
    cfg = ClassifierConfig(size=SIZE, epochs=1, seed=3)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    a = predict(train_classifier(train, cfg).model, test)
    b = predict(train_classifier(train, cfg).model, test)
    assert np.array_equal(a, b)
    c = predict(train_classifier(train, ClassifierConfig(size=SIZE, epochs=1, seed=4)).model, test)
    assert not np.array_equal(a, c)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert ((a >= 0) & (a <= 1)).all() and a.shape == (16,)


def test_unknown_slices_never_train_and_history(tmp_path: Path) -> None:
    train = blob_slices(48, SIZE, seed=0)
    cfg = ClassifierConfig(size=SIZE, epochs=2)
    base = train_classifier(train, cfg, validation=blob_slices(16, SIZE, seed=1))
    assert [set(h) for h in base.history] == [{"loss", "seconds", "val_auc"}] * 2
    # the same known slices plus unknown ones (with garbage images) train the same weights
    extra = blob_slices(10, SIZE, seed=5)
    extra.labels[:] = UNKNOWN
    extra.images[:] = 1.0
    from medcurate.evaluate.cohort import SliceSet

    both = SliceSet(
        *(
            np.concatenate([getattr(train, f), getattr(extra, f)])
            for f in ("images", "masks", "labels", "sample", "position")
        )
    )
    test = blob_slices(8, SIZE, seed=2)
    assert np.array_equal(
        predict(train_classifier(both, cfg).model, test), predict(base.model, test)
    )


def test_refuses_bad_input() -> None:
    s = blob_slices(8, SIZE)
    with pytest.raises(ValueError, match="size=64"):
        train_classifier(s, ClassifierConfig(size=64))
    s.labels[:] = UNKNOWN
    with pytest.raises(ValueError, match="known label"):
        train_classifier(s, ClassifierConfig(size=SIZE))


def test_save_load_round_trip(tmp_path: Path) -> None:
    train, test = blob_slices(32, SIZE, seed=0), blob_slices(8, SIZE, seed=1)
    trained = train_classifier(train, ClassifierConfig(size=SIZE, epochs=1))
    path = save_model(trained, tmp_path / "clf.pt")
    back = load_model(path)
    assert back.cfg == trained.cfg and back.history == untimed(trained.history)
    assert all("seconds" not in h for h in back.history)
    again = save_model(train_classifier(train, trained.cfg), tmp_path / "again.pt")
    assert again.read_bytes() == path.read_bytes()  # same inputs and seed, same file
    assert np.array_equal(predict(back.model, test), predict(trained.model, test))
    torch.save({"arch": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"not a resnet2d.* model file"):
        load_model(tmp_path / "x.pt")


@pytest.mark.slow
def test_learns_lesions_on_held_out_volumes(cohort: list[dict[str, Any]]) -> None:
    trained = train_classifier(slices_from_volumes(cohort[:60], SIZE), COHORT_CFG)
    auc = _sample_auc(trained, cohort[60:])
    print(f"held-out sample AUC {auc:.3f}")
    assert auc > 0.85


@pytest.mark.slow
def test_shuffled_labels_learn_nothing(cohort: list[dict[str, Any]]) -> None:
    """Sample labels (class and mask together) permuted among the training volumes: the
    held-out AUC, averaged over two permutations, stays near chance."""
    train = cohort[:60]
    aucs = []
    for seed in (7, 8):
        perm = np.random.default_rng(seed).permutation(len(train))
        shuffled = []
        for d, src in zip(train, (train[j] for j in perm), strict=True):
            e = {k: v for k, v in d.items() if k != "label"}
            e["class"] = src["class"]
            if "label" in src:
                e["label"] = src["label"]
            shuffled.append(e)
        trained = train_classifier(slices_from_volumes(shuffled, SIZE), COHORT_CFG)
        aucs.append(_sample_auc(trained, cohort[60:]))
    print(f"held-out sample AUC with shuffled labels {np.round(aucs, 3)}")
    assert abs(float(np.mean(aucs)) - 0.5) < 0.25


def test_train_or_load_reads_what_the_same_slices_and_config_trained(tmp_path: Path) -> None:
    train, val = blob_slices(32, SIZE, seed=0), blob_slices(8, SIZE, seed=1)
    cfg = ClassifierConfig(size=SIZE, epochs=1)
    fresh, hit = train_or_load(train, cfg, val, tmp_path)
    assert not hit and len(list(tmp_path.glob("classifier-*.pt"))) == 1
    again, hit = train_or_load(train, cfg, val, tmp_path)
    assert hit and again.history == untimed(fresh.history)
    assert np.array_equal(predict(again.model, val), predict(fresh.model, val))
    # another seed, other train slices or no validation: another classifier, trained
    assert not train_or_load(train, ClassifierConfig(size=SIZE, epochs=1, seed=1), val, tmp_path)[1]
    assert not train_or_load(blob_slices(32, SIZE, seed=2), cfg, val, tmp_path)[1]
    assert not train_or_load(train, cfg, None, tmp_path)[1]
    assert training_key(train, cfg, val) != training_key(train, cfg, None)
    assert len(list(tmp_path.glob("classifier-*.pt"))) == 4


def test_a_grown_train_split_warm_starts_from_the_last_classifier(tmp_path: Path) -> None:
    """v1 trains from scratch; v2 (v1's samples and more) starts from v1's weights for a share
    of the epochs and records it as parent; the same history in a fresh cache gives the same
    weights; a v1 sample gone from train forces scratch."""
    cfg = ClassifierConfig(size=SIZE, epochs=4)
    v1, v2 = blob_slices(24, SIZE, seed=0), blob_slices(32, SIZE, seed=0)
    keys1, keys2 = [f"k{i}" for i in range(24)], [f"k{i}" for i in range(32)]
    val = blob_slices(8, SIZE, seed=1)
    runs = []
    for cache in (tmp_path / "a", tmp_path / "b"):
        first, _ = train_or_load(v1, cfg, val, cache, train_samples=keys1)
        second, hit = train_or_load(v2, cfg, val, cache, train_samples=keys2)
        runs.append((first, second))
        assert first.parent == "" and len(first.history) == 4
        assert not hit and second.parent == first.model_id and len(second.history) == 1
        assert load_model(cache / f"classifier-{second.model_id}.pt").parent == first.model_id
        # a rerun of v2 reuses v2's classifier, it does not warm-start from it
        again, hit = train_or_load(v2, cfg, val, cache, train_samples=keys2)
        assert hit and again.model_id == second.model_id
    (_, a), (_, b) = runs
    assert np.array_equal(predict(a.model, val), predict(b.model, val))
    # sample k3 left train (moved to validation): from scratch
    moved = [k for k in keys2 if k != "k3"] + ["k99"]
    scratch, _ = train_or_load(blob_slices(32, SIZE, seed=3), cfg, val, tmp_path / "a", moved)
    assert scratch.parent == "" and len(scratch.history) == 4
