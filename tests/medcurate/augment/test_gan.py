"""The class-conditional GAN on generated discs: class 1 carries a bright central blob."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medcurate.augment.gan import (
    GanConfig,
    TrainedGan,
    build_networks,
    checkpoint_id,
    data_fingerprint,
    generate,
    load_checkpoint,
    save_checkpoint,
    train_gan,
)
from medcurate.torchrun import untimed

CENTRE = slice(12, 20)


def make_discs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noisy discs on a dim background; odd indices (class 1) add a central Gaussian blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    mid = (size - 1) / 2
    labels = np.arange(n) % 2
    images = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        cx, cy = mid + rng.normal(0, 1.5, 2)
        dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        img = 0.1 + 0.35 / (1 + np.exp(dist - rng.uniform(9, 13)))
        if labels[i]:
            img = img + 0.4 * np.exp(-(dist**2) / (2 * 2.5**2))
        images[i, 0] = np.clip(img + rng.normal(0, 0.03, (size, size)), 0, 1)
    return images, labels


def tiny_config(**overrides: object) -> GanConfig:
    base: dict[str, object] = dict(epochs=1, g_widths=(16, 8, 4), d_widths=(4, 8, 16), latent=8)
    return GanConfig.small(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained() -> TrainedGan:
    images, labels = make_discs(256)
    # 96 iterations of batch 32; seed 0 is known to condition within this budget.
    gan = train_gan(images, labels, GanConfig.small(epochs=12, seed=0))
    per_it = [h["seconds_per_iteration"] for h in gan.history]
    print(
        f"\nGAN small, 256 patches 32x32, batch 32: median {np.median(per_it):.4f} s/iteration, "
        f"{np.median([h['seconds'] for h in gan.history]):.2f} s/epoch, "
        f"last d_loss {gan.history[-1]['d_loss']:.3f} g_loss {gan.history[-1]['g_loss']:.3f}"
    )
    return gan


def test_config_hash_is_canonical_and_sensitive() -> None:
    cfg = GanConfig.small()
    assert cfg.config_hash() == GanConfig.from_dict(cfg.to_dict()).config_hash()
    assert cfg.config_hash() != replace(cfg, lr_d=1e-3).config_hash()
    assert GanConfig.full().size == 64
    assert GanConfig.full().config_hash() != cfg.config_hash()


def test_full_config_networks_have_matching_shapes() -> None:
    cfg = GanConfig.full()
    gen, disc = build_networks(cfg)
    y = torch.tensor([0, 1])
    with torch.no_grad():
        fake = gen(torch.randn(2, cfg.latent), y)
        logits = disc(fake, y)
    assert fake.shape == (2, 1, 64, 64)
    assert float(fake.min()) >= 0.0 and float(fake.max()) <= 1.0
    assert logits.shape == (2,)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="loss"):
        GanConfig(loss="bce")
    with pytest.raises(ValueError, match="divisible"):
        GanConfig(size=30)


def test_data_fingerprint_tracks_pixels_labels_and_shape() -> None:
    images, labels = make_discs(8)
    base = data_fingerprint(images, labels)
    assert base == data_fingerprint(images.copy(), labels.copy())
    changed = images.copy()
    changed[0, 0, 0, 0] += 0.01
    assert data_fingerprint(changed, labels) != base
    assert data_fingerprint(images, labels[::-1].copy()) != base
    assert data_fingerprint(images.reshape(8, 1, 16, 64), labels) != base


def test_train_rejects_bad_inputs() -> None:
    images, labels = make_discs(40)
    cfg = tiny_config()
    with pytest.raises(ValueError, match="shape"):
        train_gan(images[:, :, :16, :16], labels, cfg)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_gan(images * 2, labels, cfg)
    with pytest.raises(ValueError, match="labels"):
        train_gan(images, labels + 5, cfg)


@pytest.mark.slow
def test_training_runs_and_losses_are_finite(trained: TrainedGan) -> None:
    assert len(trained.history) == 12
    assert trained.n_train == 256
    for row in trained.history:
        assert np.isfinite([row["d_loss"], row["g_loss"]]).all()
        assert row["seconds_per_iteration"] > 0


@pytest.mark.slow
def test_samples_in_range_not_collapsed_and_conditioned(trained: TrainedGan) -> None:
    s0 = generate(trained, 128, 0, seed=1)
    s1 = generate(trained, 128, 1, seed=1)
    for s in (s0, s1):
        assert s.shape == (128, 1, 32, 32) and s.dtype == np.float32
        assert s.min() >= 0.0 and s.max() <= 1.0
        assert s.std(axis=0).mean() > 0.02  # no total mode collapse
    c0, c1 = s0[:, 0, CENTRE, CENTRE].mean(), s1[:, 0, CENTRE, CENTRE].mean()
    print(f"generated centre mean: class 0 {c0:.3f}, class 1 {c1:.3f}")
    assert c1 - c0 > 0.08
    # Most class-1 samples individually have a brighter centre than the class-0 average.
    assert (s1[:, 0, CENTRE, CENTRE].mean(axis=(1, 2)) > c0).mean() > 0.75


@pytest.mark.slow
def test_generate_is_seeded_and_leaves_global_rng(trained: TrainedGan) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = generate(trained, 16, 1, seed=7)
    assert torch.equal(torch.rand(3), expected)
    assert np.array_equal(a, generate(trained, 16, 1, seed=7))
    assert not np.array_equal(a, generate(trained, 16, 1, seed=8))
    assert generate(trained, 0, 0, seed=0).shape == (0, 1, 32, 32)
    with pytest.raises(ValueError, match="label"):
        generate(trained, 4, 2, seed=0)


def test_same_seed_trains_identically_and_restores_torch_state() -> None:
    images, labels = make_discs(64)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    a = train_gan(images, labels, tiny_config(epochs=2))
    b = train_gan(images, labels, tiny_config(epochs=2))
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert np.array_equal(generate(a, 8, 0, seed=3), generate(b, 8, 0, seed=3))
    assert [h["d_loss"] for h in a.history] == [h["d_loss"] for h in b.history]
    c = train_gan(images, labels, tiny_config(epochs=2, seed=1))
    assert not np.array_equal(generate(a, 8, 0, seed=3), generate(c, 8, 0, seed=3))


def test_wgan_gp_option_trains() -> None:
    images, labels = make_discs(64)
    gan = train_gan(images, labels, tiny_config(loss="wgan-gp", spectral_norm=False))
    assert np.isfinite([gan.history[0]["d_loss"], gan.history[0]["g_loss"]]).all()
    out = generate(gan, 4, 1, seed=0)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    images, labels = make_discs(64)
    gan = train_gan(images, labels, tiny_config())
    extra = {"data_version": "v0001", "metrics": {"mmd": 0.1}, "splits": ["train"]}
    ckpt = save_checkpoint(gan, tmp_path / "gan" / "model.pt", extra)
    loaded, loaded_extra = load_checkpoint(tmp_path / "gan" / "model.pt")
    assert loaded_extra == extra
    assert loaded.cfg == gan.cfg
    assert loaded.history == untimed(gan.history)  # wall-clock times are not saved
    assert loaded.n_train == 64 and loaded.data_fingerprint == gan.data_fingerprint
    assert loaded.checkpoint_id() == ckpt
    assert np.array_equal(generate(loaded, 8, 1, seed=5), generate(gan, 8, 1, seed=5))
    # Saving again gives the same id: it names config, data and seed, not file bytes.
    assert save_checkpoint(gan, tmp_path / "again.pt", {}) == ckpt


def test_checkpoint_rejects_non_plain_extra(tmp_path: Path) -> None:
    images, labels = make_discs(64)
    gan = train_gan(images, labels, tiny_config())
    with pytest.raises(ValueError, match="plain"):
        save_checkpoint(gan, tmp_path / "m.pt", {"array": np.zeros(2)})


def test_load_rejects_foreign_file(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_id_stable_and_sensitive() -> None:
    images, labels = make_discs(16)
    fp = data_fingerprint(images, labels)
    cfg = GanConfig.small()
    ckpt = checkpoint_id(cfg, fp)
    assert len(ckpt) == 12 and ckpt == checkpoint_id(GanConfig.small(), fp)
    assert checkpoint_id(replace(cfg, seed=1), fp) != ckpt
    assert checkpoint_id(replace(cfg, epochs=cfg.epochs + 1), fp) != ckpt
    assert checkpoint_id(cfg, data_fingerprint(images[:8], labels[:8])) != ckpt


def test_max_steps_caps_iterations_within_an_epoch() -> None:
    images, labels = make_discs(128)  # 4 batches of 32 per epoch
    cfg = tiny_config(epochs=3, max_steps=6)
    assert cfg.total_steps(128) == 6 and tiny_config(epochs=3).total_steps(128) == 12
    gan = train_gan(images, labels, cfg)
    ran = [round(h["seconds"] / h["seconds_per_iteration"]) for h in gan.history]
    assert ran == [4, 2]  # a whole epoch, then the two iterations left of the budget
    with pytest.raises(ValueError, match="max_steps"):
        tiny_config(max_steps=-1)


def test_warm_start_continues_a_parent_and_names_it(tmp_path: Path) -> None:
    images, labels = make_discs(96)
    parent = train_gan(images[:64], labels[:64], tiny_config(epochs=2))
    a = train_gan(images, labels, tiny_config(max_steps=2), init=parent)
    b = train_gan(images, labels, tiny_config(max_steps=2), init=parent)
    cold = train_gan(images, labels, tiny_config(max_steps=2))
    assert a.parent == parent.checkpoint_id() and cold.parent == ""
    assert a.checkpoint_id() == b.checkpoint_id() != cold.checkpoint_id()
    assert np.array_equal(generate(a, 8, 1, seed=2), generate(b, 8, 1, seed=2))
    assert not np.array_equal(generate(a, 8, 1, seed=2), generate(cold, 8, 1, seed=2))
    save_checkpoint(a, tmp_path / "a.pt", {})
    loaded, _ = load_checkpoint(tmp_path / "a.pt")
    assert loaded.parent == a.parent and loaded.checkpoint_id() == a.checkpoint_id()
    with pytest.raises(ValueError, match="architecture"):
        train_gan(images, labels, tiny_config(latent=16), init=parent)
