"""The segmentation baseline learns generated blobs, scores volumes exactly, repeats itself."""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import fields, replace

import numpy as np
import pytest

from medcurate.evaluate.cohort import UNKNOWN, SliceSet
from medcurate.evaluate.segmenter import (
    SegmenterConfig,
    build_unet,
    deterministic,
    dice_per_sample,
    lesion_detection,
    load_model,
    predict_masks,
    save_model,
    score_volumes,
    train_or_load,
    train_segmenter,
    volume_stacks,
)
from medcurate.torchrun import untimed

# lr 1e-2: the default 2e-3 needs about 45 epochs of these 11 steps to stop firing on normal volumes
FAST = SegmenterConfig(epochs=20, lr=1e-2, threads=1)


def slice_set(
    volumes: list[np.ndarray], masks: list[np.ndarray], known: list[bool], order=None
) -> SliceSet:
    """Slices of (Z, S, S) volumes; ``order`` permutes the slices (arrival order)."""
    imgs, msk, labels, sample, pos = [], [], [], [], []
    for s, (v, m, k) in enumerate(zip(volumes, masks, known, strict=True)):
        for z in range(v.shape[0]):
            imgs.append(v[z])
            msk.append(m[z])
            labels.append(int(m[z].any()) if k else UNKNOWN)
            sample.append(s)
            pos.append(z)
    idx = np.arange(len(labels)) if order is None else np.asarray(order)
    return SliceSet(
        np.stack(imgs).astype(np.float32)[:, None][idx],
        np.stack(msk).astype(np.uint8)[:, None][idx],
        np.asarray(labels, dtype=np.int8)[idx],
        np.asarray(sample, dtype=np.int64)[idx],
        np.asarray(pos, dtype=np.int64)[idx],
    )


def blob_cohort(samples: int = 20, depth: int = 8, size: int = 32, seed: int = 0) -> SliceSet:
    """Noisy volumes; every second one holds a bright ellipsoid (its mask), 2-4 slices deep."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.arange(depth), np.arange(size), np.arange(size), indexing="ij")
    vols, masks = [], []
    for s in range(samples):
        vol = rng.normal(0.0, 0.3, (depth, size, size)).astype(np.float32)
        m = np.zeros((depth, size, size), dtype=np.uint8)
        if s % 2:
            zlo, zhi = (2, depth - 3) if depth >= 6 else (0.5, depth - 1.5)
            c = rng.uniform([zlo, size // 4, size // 4], [zhi, size - size // 4, size - size // 4])
            r = rng.uniform(size / 8, size * 7 / 32)
            d2 = ((zz - c[0]) * 2.5) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
            m = (d2 <= r * r).astype(np.uint8)
            vol += m
        vols.append(vol)
        masks.append(m)
    return slice_set(vols, masks, [True] * samples)


@pytest.fixture(scope="module")
def cohort() -> tuple[SliceSet, SliceSet]:
    cs = blob_cohort()
    return cs.subset(cs.sample < 14), cs.subset(cs.sample >= 14)


@pytest.fixture(scope="module")
def trained(cohort):
    return train_segmenter(cohort[0], FAST)


@pytest.mark.slow
def test_learns_blobs_on_held_out_samples(cohort, trained):
    # measured: mean Dice 0.93-0.96 over cohort seeds 0-4, every held-out lesion found, no false
    # positive component
    _, test = cohort
    prob = predict_masks(trained.model, test)
    assert prob.shape == (len(test), 32, 32) and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    dice = dice_per_sample(test, prob, FAST.lesion_threshold)
    assert sorted(dice) == [14, 15, 16, 17, 18, 19]
    assert np.nanmean(list(dice.values())) > 0.6
    det = lesion_detection(test, prob, FAST.lesion_threshold, FAST.min_lesion_voxels)
    assert det.true_lesions == 3 and det.samples == 6
    assert det.sensitivity >= 0.8
    assert det.false_positives_per_sample <= 0.5
    assert len(trained.history) == FAST.epochs
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]


@pytest.mark.slow
def test_save_and_load_give_the_same_predictions(cohort, trained, tmp_path):
    _, test = cohort
    path = save_model(trained, tmp_path / "segmenter.pt")
    loaded = load_model(path)  # torch.load(weights_only=True) inside
    assert loaded.cfg == FAST and loaded.history == untimed(trained.history)
    np.testing.assert_array_equal(
        predict_masks(loaded.model, test), predict_masks(trained.model, test)
    )


def test_load_refuses_another_file(tmp_path):
    import torch

    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a unet2d-segmenter model file"):
        load_model(path)


def test_same_seed_same_predictions_and_torch_state_restored():
    import torch

    cs = blob_cohort(samples=6, depth=4, size=16, seed=3)
    cfg = SegmenterConfig(epochs=2, seed=7)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_before = torch.get_rng_state()
    a = predict_masks(train_segmenter(cs, cfg).model, cs)
    b = predict_masks(train_segmenter(cs, cfg).model, cs)
    c = predict_masks(train_segmenter(cs, SegmenterConfig(epochs=2, seed=8)).model, cs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_trains_on_known_slices_with_lesion_slices_oversampled():
    cs = blob_cohort(samples=4, depth=4, size=16, seed=1)
    unknown = blob_cohort(samples=2, depth=4, size=16, seed=2)
    unknown.labels[:] = UNKNOWN
    unknown.sample += 10
    both = SliceSet(
        *(np.concatenate([getattr(cs, f.name), getattr(unknown, f.name)]) for f in fields(SliceSet))
    )
    lesion = int((cs.labels == 1).sum())
    assert 0 < lesion < len(cs) - lesion
    result = train_segmenter(both, SegmenterConfig(epochs=1))
    # every known slice once plus lesion slices up to the lesion-free count; unknown ones never
    assert result.history[0]["slices"] == 2 * (len(cs) - lesion)
    assert result.history[0]["seconds"] >= 0.0


def test_training_needs_known_slices():
    cs = blob_cohort(samples=2, depth=2, size=16)
    cs.labels[:] = UNKNOWN
    with pytest.raises(ValueError, match="no slices with a known label"):
        train_segmenter(cs, SegmenterConfig(epochs=1))


def test_predict_pads_sizes_the_strides_do_not_divide():
    cs = blob_cohort(samples=2, depth=3, size=30)
    cfg = SegmenterConfig()
    with deterministic(0, 1):
        net = build_unet(cfg)
    prob = predict_masks(net, cs, batch_size=4)
    assert prob.shape == (6, 30, 30)
    assert np.all((prob >= 0) & (prob <= 1))


def _hand_made() -> tuple[SliceSet, np.ndarray]:
    """Sample 0: lesions A and B; the prediction covers half of A, misses B, adds one component
    away from both and a stray voxel. Sample 1: normal, nothing predicted. Sample 2: label
    unknown, with a prediction that must not count. Slices arrive shuffled."""
    z, s = 4, 8
    truth0 = np.zeros((z, s, s), dtype=np.uint8)
    truth0[0:2, 1:3, 1:3] = 1  # A: 8 voxels
    truth0[2:4, 5:7, 5:7] = 1  # B: 8 voxels
    pred0 = np.zeros((z, s, s), dtype=bool)
    pred0[1, 1:3, 1:3] = True  # half of A: 4 voxels
    pred0[3, 1:3, 5:7] = True  # false positive component: 4 voxels
    pred0[0, 7, 0] = True  # stray voxel: under min_voxels, counts for Dice only
    empty = np.zeros((z, s, s), dtype=np.uint8)
    pred2 = np.zeros((z, s, s), dtype=bool)
    pred2[:, 2:5, 2:5] = True
    order = np.random.default_rng(0).permutation(3 * z)
    slices = slice_set(
        [np.zeros((z, s, s), dtype=np.float32)] * 3, [truth0, empty, truth0], [True, True, False]
    )
    prob_zyx = np.concatenate([pred0, np.zeros((z, s, s), dtype=bool), pred2]).astype(np.float32)
    prob = np.where(prob_zyx > 0, 0.9, 0.1).astype(np.float32)
    return slices.subset(order), prob[order]


def test_dice_matches_hand_count():
    slices, prob = _hand_made()
    dice = dice_per_sample(slices, prob, 0.5)
    assert set(dice) == {0, 1}  # sample 2's labels are all unknown
    assert dice[0] == pytest.approx(2 * 4 / (16 + 9))
    assert math.isnan(dice[1])  # both empty: NaN, not 1


def test_normal_sample_with_a_false_positive_scores_zero():
    slices, prob = _hand_made()
    prob = prob.copy()
    prob[(slices.sample == 1) & (slices.position == 2), 0, 0] = 0.8
    assert dice_per_sample(slices, prob, 0.5)[1] == 0.0


def test_lesion_detection_matches_hand_count():
    slices, prob = _hand_made()
    det = lesion_detection(slices, prob, 0.5, 3)
    assert det.per_sample == {
        0: {"true_lesions": 2, "detected": 1, "false_positive_components": 1},
        1: {"true_lesions": 0, "detected": 0, "false_positive_components": 0},
    }
    assert (det.samples, det.true_lesions, det.detected) == (2, 2, 1)
    assert det.false_positive_components == 1
    assert det.sensitivity == 0.5
    assert det.false_positives_per_sample == 0.5
    # with no size floor the stray voxel is a second false positive
    assert lesion_detection(slices, prob, 0.5, 1).false_positive_components == 2


def test_detection_uses_26_connectivity_across_slices():
    truth = np.zeros((2, 6, 6), dtype=np.uint8)
    truth[0, 1, 1] = truth[1, 2, 2] = 1  # corner neighbours in adjacent slices: one lesion
    pred = np.zeros((2, 6, 6), dtype=np.float32)
    pred[0, 1, 1] = 1.0
    slices = slice_set([np.zeros((2, 6, 6), dtype=np.float32)], [truth], [True])
    det = lesion_detection(slices, pred, 0.5, 1)
    assert (det.true_lesions, det.detected) == (1, 1)


def test_sensitivity_is_nan_without_lesions():
    slices, prob = _hand_made()
    normal = slices.subset(slices.sample == 1)
    det = lesion_detection(normal, prob[slices.sample == 1], 0.5, 3)
    assert det.true_lesions == 0 and math.isnan(det.sensitivity)


def test_volume_stacks_order_slices_by_position():
    vols = [
        np.arange(3.0)[:, None, None] * np.ones((3, 2, 2)),
        (10.0 + np.arange(2.0))[:, None, None] * np.ones((2, 2, 2)),
    ]
    slices = slice_set(vols, [np.zeros_like(v, dtype=np.uint8) for v in vols], [True, True])
    order = [4, 2, 0, 3, 1]  # slices arrive out of order
    shuffled = slices.subset(np.asarray(order))
    stacks = volume_stacks(shuffled, shuffled.images)
    assert sorted(stacks) == [0, 1]
    assert stacks[0].shape == (2, 2, 3) and stacks[1].shape == (2, 2, 2)
    assert stacks[0][0, 0].tolist() == [0, 1, 2]
    assert stacks[1][0, 0].tolist() == [10, 11]


def test_volume_stacks_need_one_array_per_slice():
    slices, prob = _hand_made()
    with pytest.raises(ValueError, match="one per slice"):
        volume_stacks(slices, prob[:-1])


def test_config_round_trips_through_a_dict():
    cfg = SegmenterConfig(channels=(4, 8), strides=(2,), epochs=3)
    d = cfg.to_dict()
    assert d["channels"] == [4, 8] and d["epochs"] == 3
    assert SegmenterConfig.from_dict(d) == cfg


def test_a_grown_train_split_warm_starts_from_the_last_unet(cohort, tmp_path):
    """The line's last UNet saw samples 0-9; with 0-13 it starts from it (parent recorded, a
    share of the epochs), the same training again is read from the cache, and a sample gone
    from train forces a start from scratch."""
    train, test = cohort
    cfg = SegmenterConfig(epochs=4, lr=1e-2, threads=1)
    keys = [f"s{i}" for i in range(14)]
    first, _ = train_or_load(train.subset(train.sample < 10), cfg, tmp_path, keys[:10])
    second, hit = train_or_load(train, cfg, tmp_path, keys)
    assert not hit and first.parent == "" and len(first.history) == 4
    assert second.parent == first.model_id and len(second.history) == 2  # ceil(4 * 4/14)
    assert load_model(tmp_path / f"segmenter-{second.model_id}.pt").parent == first.model_id
    again, hit = train_or_load(train, cfg, tmp_path, keys)
    assert hit and np.array_equal(
        predict_masks(again.model, test), predict_masks(second.model, test)
    )
    gone, _ = train_or_load(train.subset(train.sample > 0), cfg, tmp_path, [*keys[1:], "new"])
    assert gone.parent == "" and len(gone.history) == 4


def _scoring_net(size: int = 30):  # type: ignore[no-untyped-def]
    """An untrained UNet whose output at a low threshold marks some voxels: enough to count."""
    with deterministic(0, 1):
        return build_unet(SegmenterConfig())


def test_score_volumes_is_dice_and_detection_of_predict_masks():
    """Batch-by-batch scoring gives exactly what the full probability array gives: slices in
    shuffled order, a sample of unknown truth, sizes the strides do not divide, odd batches."""
    cs = blob_cohort(samples=6, depth=5, size=30, seed=3)
    unknown = np.isin(cs.sample, [2])
    cs = replace(cs, labels=np.where(unknown, UNKNOWN, cs.labels).astype(np.int8))
    cs = cs.subset(np.random.default_rng(1).permutation(len(cs)))
    net = _scoring_net()
    prob = predict_masks(net, cs, batch_size=7)
    th = float(np.quantile(prob, 0.9))  # about a tenth of the voxels predicted
    dice, det = score_volumes(net, cs, th, 2, batch_size=7)
    want = dice_per_sample(cs, prob, th)
    assert dice.keys() == want.keys() == {0, 1, 3, 4, 5}
    for k, v in want.items():
        assert (math.isnan(v) and math.isnan(dice[k])) or dice[k] == v
    assert det == lesion_detection(cs, prob, th, 2) and det.false_positive_components > 0


def test_scoring_memory_does_not_grow_with_the_split():
    """Issue 16: scoring held an (N, S, S) probability array and a padded copy of the images.
    Now one batch and the stacks of the samples not yet finished are held: the traced peak for
    2N samples is about the peak for N."""
    net = _scoring_net()
    peaks = []
    for n in (8, 16):
        cs = blob_cohort(samples=n, depth=8, size=30, seed=4)
        tracemalloc.start()
        try:
            score_volumes(net, cs, 0.5, 3, batch_size=16)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # the old way's probability array alone was as large as the images (2N: 460 KB)
    assert peaks[1] < 1.3 * peaks[0] + 2**16, peaks
