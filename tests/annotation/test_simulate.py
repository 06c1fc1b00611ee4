"""Simulated annotators: truth carried into the volume grid exactly, and a noise model that does
what its parameters say (pure functions; the real-server run is in test_annotation_rounds)."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.simulate import (
    NOISE_LEVELS,
    Noise,
    TruthVolume,
    lesion_parts,
    noise_level,
    noisy_mask,
    plan_annotations,
    resample_nearest,
    rng_for,
    slice_choice,
    slice_result,
)


def _blobs() -> np.ndarray:
    m = np.zeros((30, 30, 8), dtype=np.uint8)
    ii, jj = np.indices((30, 30))
    for k in range(1, 7):
        m[:, :, k] = (ii - 10) ** 2 + (jj - 10) ** 2 < 36  # a big lesion
    m[24, 24, 3] = m[25, 24, 3] = 1  # a small one (2 voxels)
    return m


def test_resample_nearest_follows_both_affines() -> None:
    rng = np.random.default_rng(0)
    src = (rng.random((6, 5, 4)) > 0.5).astype(np.uint8)
    src_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    # the target grid is the source flipped along i and j (LPS vs RAS) at the same spacing
    flip = np.diag([-2.0, -2.0, 3.0, 1.0])
    flip[:3, 3] = [10.0, 8.0, 0.0]  # voxel (0,0,0) of the target = voxel (5,4,0) of the source
    out = resample_nearest(src, src_affine, src.shape, flip)
    assert np.array_equal(out, src[::-1, ::-1, :])
    # a finer target grid (half spacing): every source voxel becomes 2x2x1, outside is 0
    fine = np.diag([1.0, 1.0, 3.0, 1.0])
    up = resample_nearest(src, src_affine, (12, 10, 5), fine)
    assert up.shape == (12, 10, 5)
    assert np.array_equal(up[::2, ::2, :4], src)
    assert not up[:, :, 4].any()


def test_resample_nearest_accepts_a_2d_projection() -> None:
    src = np.eye(4, dtype=np.uint8)
    out = resample_nearest(src, np.eye(4), (4, 4, 1), np.eye(4))
    assert out.shape == (4, 4, 1) and np.array_equal(out[:, :, 0], src)


def test_no_noise_is_the_truth() -> None:
    truth = _blobs()
    assert np.array_equal(noisy_mask(truth, NOISE_LEVELS["none"], rng_for(0, "a")), truth != 0)


def test_small_lesions_are_missed_and_big_ones_kept() -> None:
    truth = _blobs()
    always_miss = Noise(jitter=0.0, miss_small=1.0, small_voxels=10, wrong_class=0.0)
    out = noisy_mask(truth, always_miss, rng_for(0, "a"))
    assert not out[24, 24, 3] and not out[25, 24, 3]
    big = truth.copy()
    big[24:26, 24, 3] = 0
    assert np.array_equal(out, big != 0)


def test_jitter_moves_the_outline_by_one_pixel_only() -> None:
    from scipy import ndimage

    truth = _blobs() != 0
    always = Noise(jitter=1.0, miss_small=0.0, small_voxels=0, wrong_class=0.0)
    out = noisy_mask(truth, always, rng_for(3, "b"))
    assert not np.array_equal(out, truth)
    for k in range(truth.shape[2]):
        lo = ndimage.binary_erosion(truth[:, :, k])
        hi = ndimage.binary_dilation(truth[:, :, k])
        assert np.all(out[:, :, k] <= hi) and np.all(lo <= out[:, :, k])
    # slice by slice: some slices grow, others shrink (independent draws per slice)
    sums = [(int(out[:, :, k].sum()), int(truth[:, :, k].sum())) for k in range(1, 7)]
    assert any(o > t for o, t in sums) and any(o < t for o, t in sums)


def test_noise_is_deterministic_per_annotator() -> None:
    truth = _blobs()
    level = NOISE_LEVELS["high"]
    a1 = noisy_mask(truth, level, rng_for(0, "1", "s"))
    a1_again = noisy_mask(truth, level, rng_for(0, "1", "s"))
    a2 = noisy_mask(truth, level, rng_for(0, "2", "s"))
    assert np.array_equal(a1, a1_again)
    assert not np.array_equal(a1, a2)


def test_wrong_class_flips_and_drops_the_mask() -> None:
    wrong = Noise(0.0, 0.0, 0, wrong_class=1.0)
    assert slice_choice(True, wrong, rng_for(0)) == "normal"
    assert slice_choice(False, wrong, rng_for(0)) == "abnormal"
    assert slice_choice(True, NOISE_LEVELS["none"], rng_for(0)) == "abnormal"
    truth = _blobs()
    flipped = slice_result(truth, 3, wrong, rng_for(0))
    assert [r["type"] for r in flipped] == ["choices"]  # a "normal" slice carries no brush
    right = slice_result(truth, 3, NOISE_LEVELS["none"], rng_for(0))
    assert [r["type"] for r in right] == ["choices", "brushlabels"]
    assert right[0]["value"]["choices"] == ["abnormal"]


def test_unknown_noise_level() -> None:
    assert noise_level("moderate") is NOISE_LEVELS["moderate"]
    with pytest.raises(ValueError, match="unknown noise level"):
        noise_level("extreme")


def test_annotate_round_needs_the_round_and_a_known_noise(zones_tmp, salt) -> None:  # type: ignore[no-untyped-def]
    from annotation.simulate import annotate_round
    from medcurate.config import ConfigError

    with pytest.raises(ConfigError, match=r"round\.json"):
        annotate_round(9)
    (zones_tmp.annotation / "round-9").mkdir(parents=True)
    (zones_tmp.annotation / "round-9" / "round.json").write_text('{"samples": [], "project_id": 1}')
    with pytest.raises(ConfigError, match="--truth"):
        annotate_round(9)
    (zones_tmp.restricted / "demo-truth" / "seed-1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="unknown noise level"):
        annotate_round(9, noise="extreme")


# --------------------------------------------------------------------------- faster, same labels


def _reference_resample(src, src_affine, shape, affine):  # type: ignore[no-untyped-def]
    """The whole-grid nearest-neighbour resampling the boxed one must equal voxel for voxel."""
    src3 = np.asarray(src)
    to_src = np.linalg.inv(src_affine) @ affine
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    near = np.rint(to_src[:3, :3] @ idx + to_src[:3, 3:4]).astype(np.int64)
    inside = np.all((near >= 0) & (near < np.asarray(src3.shape)[:, None]), axis=0)
    out = np.zeros(idx.shape[1], dtype=src3.dtype)
    n = near[:, inside]
    out[inside] = src3[n[0], n[1], n[2]]
    return out.reshape(shape)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("seed", range(6))
def test_boxed_resampling_equals_the_whole_grid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = np.zeros((20, 18, 9), dtype=np.uint8)
    c = rng.integers(2, 7, 3)
    src[c[0] : c[0] + 4, c[1] : c[1] + 5, c[2] : c[2] + 2] = 1
    if seed % 2:
        src[-1, -1, -1] = 1  # a voxel in the far corner: the box spans the volume
    src_affine = np.eye(4)
    src_affine[:3, :3] = _rotation(rng) * rng.uniform(0.7, 3.0, 3)
    src_affine[:3, 3] = rng.uniform(-20, 20, 3)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(rng) * rng.uniform(0.5, 2.5, 3)
    affine[:3, 3] = src_affine[:3, 3] + rng.uniform(-10, 10, 3)
    shape = (24, 22, 12)
    out = resample_nearest(src, src_affine, shape, affine)
    assert np.array_equal(out, _reference_resample(src, src_affine, shape, affine))


def test_resampling_an_empty_mask_or_one_outside_the_grid_is_all_zero() -> None:
    empty = np.zeros((5, 5, 5), dtype=np.uint8)
    assert not resample_nearest(empty, np.eye(4), (6, 6, 6), np.eye(4)).any()
    far = np.eye(4)
    far[:3, 3] = 1000.0  # the target grid lies far from the source
    src = np.ones((5, 5, 5), dtype=np.uint8)
    assert resample_nearest(src, np.eye(4), (6, 6, 6), far).shape == (6, 6, 6)
    assert not resample_nearest(src, np.eye(4), (6, 6, 6), far).any()


def _reference_noisy_mask(truth, noise, rng):  # type: ignore[no-untyped-def]
    """The whole-volume noise model the cut-out one must equal (same draws, same pixels)."""
    from scipy import ndimage

    fg = np.asarray(truth) != 0
    labels, n = ndimage.label(fg)
    out = np.zeros(fg.shape, dtype=bool)
    for lesion in range(1, n + 1):
        comp = labels == lesion
        u_miss = rng.random()
        ks = np.flatnonzero(comp.any(axis=(0, 1)))
        u = rng.random((len(ks), 2))
        if int(comp.sum()) < noise.small_voxels and u_miss < noise.miss_small:
            continue
        for (u_jit, u_dir), k in zip(u, ks, strict=True):
            plane = comp[:, :, k]
            if u_jit < noise.jitter:
                if u_dir < 0.5:
                    plane = ndimage.binary_dilation(plane)
                else:
                    eroded = ndimage.binary_erosion(plane)
                    plane = eroded if eroded.any() else plane
            out[:, :, k] |= plane
    return out


@pytest.mark.parametrize("level", ["low", "moderate", "high"])
def test_lesions_cut_out_once_give_the_same_noise_as_the_whole_volume(level: str) -> None:
    truth = _blobs()
    truth[0:3, 27:30, 2:5] = 1  # a lesion on the volume's edge: erosion and dilation at the border
    truth[9:11, 9:11, 3] = 0  # a hole: the big lesion's box holds background
    parts = lesion_parts(truth)
    assert len(parts) == 3 and parts[-1].voxels == 2  # the small one
    for who in ("1", "2", "3"):
        want = _reference_noisy_mask(truth, NOISE_LEVELS[level], rng_for(4, who))
        assert np.array_equal(noisy_mask(truth, NOISE_LEVELS[level], rng_for(4, who)), want)
        shared = noisy_mask(truth, NOISE_LEVELS[level], rng_for(4, who), parts)
        assert np.array_equal(shared, want)


def _tasks() -> list[dict]:  # type: ignore[type-arg]
    return [
        {"id": 10 + k, "data": {"task_key": f"s1:k{k:04d}", "sample_id": "s1", "slice_k": k}}
        for k in (5, 1, 3)  # listed out of order
    ] + [{"id": 99, "data": {"task_key": "zz:k0000", "sample_id": "zz", "slice_k": 0}}]


def test_plan_annotations_is_deterministic_and_skips_what_is_done() -> None:
    truths = {"s1": TruthVolume("abnormal", _blobs())}
    level = NOISE_LEVELS["moderate"]
    plan, skipped = plan_annotations(1, 7, _tasks(), truths, level, seed=3)
    assert skipped == 0
    assert [s.task_id for s in plan] == [11, 13, 15]  # task_key order; no truth for "zz"
    again, _ = plan_annotations(1, 7, list(reversed(_tasks())), truths, level, seed=3)
    assert again == plan
    other, _ = plan_annotations(2, 8, _tasks(), truths, level, seed=3)
    assert [s.lead_time for s in other] != [s.lead_time for s in plan]
    done = _tasks()
    done[1]["annotations"] = [{"completed_by": {"id": 7}}, {"completed_by": 8}]
    rest, skipped = plan_annotations(1, 7, done, truths, level, seed=3)
    assert skipped == 1 and rest == [s for s in plan if s.task_id != 11]


class _FakeUserClient:
    """Stands in for Label Studio in this unit test only: records who submitted what."""

    def __init__(self, uid: int, tasks: list[dict], log: list) -> None:  # type: ignore[type-arg]
        self.uid, self._tasks, self.log, self.listed = uid, tasks, log, 0

    def whoami(self) -> dict:  # type: ignore[type-arg]
        return {"id": self.uid}

    def tasks(self, project: int) -> list[dict]:  # type: ignore[type-arg]
        self.listed += 1
        return self._tasks

    def submit_annotation(self, task_id: int, result: list, lead_time: float) -> dict:  # type: ignore[type-arg]
        self.log.append((self.uid, task_id, result, lead_time))
        return {}


def test_simulate_round_submits_each_plan_as_its_own_user(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from annotation import simulate

    log: list = []  # type: ignore[type-arg]
    clients = {}

    class Admin:
        def signup(self, email: str, password: str) -> _FakeUserClient:
            uid = int(email.split("-")[2].split("@")[0])
            clients[uid] = _FakeUserClient(uid, _tasks(), log)
            return clients[uid]

    truths = {"s1": TruthVolume("abnormal", _blobs())}
    summary = simulate.simulate_round(
        Admin(),
        1,
        truths,
        3,
        "moderate",
        tmp_path / "sim.json",
        seed=3,
        in_flight=3,  # type: ignore[arg-type]
    )
    assert (summary.submitted, summary.skipped_existing, summary.tasks) == (9, 0, 4)
    assert sum(c.listed for c in clients.values()) == 1  # the task list is read once
    for i in (1, 2, 3):
        plan, _ = plan_annotations(i, i, _tasks(), truths, NOISE_LEVELS["moderate"], 3)
        mine = sorted((t, r, lt) for u, t, r, lt in log if u == i)  # type: ignore[misc]
        assert mine == sorted((s.task_id, s.result, s.lead_time) for s in plan)  # type: ignore[misc]


def test_sim_users_reuse_their_stored_tokens(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Signing in hashes the password on the server (about a second each): a stored token that
    still works is used instead; one the server refuses means signing in again."""
    import requests

    from annotation import simulate

    known: dict[str, dict[str, object]] = {}  # token -> the user the server says it is
    signups: list[str] = []

    class Client:
        def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
            self.url, self.token, self.timeout = url, token, timeout

        def whoami(self) -> dict[str, object]:
            if self.token not in known:
                raise requests.HTTPError("401")
            return known[self.token]

    class Admin:
        url, timeout = "http://ls.invalid", 5.0

        def signup(self, email: str, password: str) -> Client:
            signups.append(email)
            token = f"tok-{len(signups)}"
            known[token] = {"id": len(signups), "email": email}
            return Client(self.url, token)

    monkeypatch.setattr(simulate, "LabelStudioClient", Client)
    secrets_file = tmp_path / "restricted" / "sim.json"
    first = simulate.sim_users(Admin(), 2, secrets_file)  # type: ignore[arg-type]
    assert len(signups) == 2 and [u.uid for u in first] == [None, None]
    again = simulate.sim_users(Admin(), 2, secrets_file)  # type: ignore[arg-type]
    assert len(signups) == 2  # no new sign-in
    assert [u.uid for u in again] == [1, 2] and [u.email for u in again] == [
        simulate.sim_email(1),
        simulate.sim_email(2),
    ]
    assert (secrets_file.stat().st_mode & 0o777) == 0o600
    known.pop("tok-1")  # the server forgot a token (a new database)
    third = simulate.sim_users(Admin(), 2, secrets_file)  # type: ignore[arg-type]
    assert signups == [simulate.sim_email(1), simulate.sim_email(2), simulate.sim_email(1)]
    assert third[0].client.token == "tok-3" and third[1].uid == 2


def _cohort_tasks(n: int) -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "id": 100 * s + k,
            "data": {"task_key": f"p{s:03d}:k{k:04d}", "sample_id": f"p{s:03d}", "slice_k": k},
        }
        for s in range(n)
        for k in (2, 4)
    ]


class _CountingTruths(dict):  # type: ignore[type-arg]
    """Truths made when asked; records how many of them were alive at once (weakly)."""

    def __init__(self, n: int) -> None:
        import weakref

        super().__init__()
        self.n, self.peak, self.made = n, 0, 0
        self.alive: list[weakref.ref[TruthVolume]] = []

    def get(self, sid, default=None):  # type: ignore[no-untyped-def]
        import gc
        import weakref

        gc.collect()
        self.peak = max(self.peak, sum(r() is not None for r in self.alive) + 1)
        self.made += 1
        t = TruthVolume("abnormal", _blobs())
        self.alive.append(weakref.ref(t))
        return t


@pytest.mark.parametrize("n", [4, 8])
def test_simulate_round_holds_one_sample_truth_at_a_time(tmp_path, n) -> None:  # type: ignore[no-untyped-def]
    """Issue 16: a round's truths are loaded sample by sample and dropped after its annotators'
    labels are submitted, so the truths held at once do not grow with the cohort; and the labels
    are those each annotator's own plan over all tasks gives."""
    from annotation import simulate

    log: list = []  # type: ignore[type-arg]

    class Admin:
        def signup(self, email: str, password: str) -> _FakeUserClient:
            uid = int(email.split("-")[2].split("@")[0])
            return _FakeUserClient(uid, _cohort_tasks(n), log)

    truths = _CountingTruths(n)
    summary = simulate.simulate_round(
        Admin(),  # type: ignore[arg-type]
        1,
        truths,
        3,
        "moderate",
        tmp_path / "sim.json",
        seed=3,
        in_flight=2,
    )
    assert summary.submitted == 3 * 2 * n
    assert truths.made == n  # once per sample, not per annotator or task
    assert truths.peak == 1
    full = {f"p{s:03d}": TruthVolume("abnormal", _blobs()) for s in range(n)}
    for i in (1, 2, 3):
        plan, _ = plan_annotations(i, i, _cohort_tasks(n), full, NOISE_LEVELS["moderate"], 3)
        mine = sorted((t, r, lt) for u, t, r, lt in log if u == i)  # type: ignore[misc]
        assert mine == sorted((s.task_id, s.result, s.lead_time) for s in plan)  # type: ignore[misc]


def test_lazy_truths_carry_each_truth_when_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """annotate-sim's truths: read per sample when asked (none up front); a sample the
    generator has no truth for is missing, as it was from the eager dict."""
    import nibabel as nib

    from annotation.simulate import LazyTruths

    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    m = np.zeros((5, 4, 3), np.uint8)
    m[1, 2, 0] = 1
    nib.save(nib.Nifti1Image(m, np.eye(4)), tmp_path / "m.nii.gz")
    rows = {"s1": {"series_uid": "u1"}, "s2": {"series_uid": "u2"}}
    index = {"u1": {"label": "abnormal", "mask_file": "m.nii.gz"}}
    asked: list[str] = []

    def volume_of(row):  # type: ignore[no-untyped-def]
        asked.append(row["series_uid"])
        return tmp_path / "v.nii.gz"

    truths = LazyTruths(rows, index, tmp_path, volume_of)
    assert asked == [] and len(truths) == 2 and list(truths) == ["s1", "s2"]
    t = truths["s1"]
    assert t.label == "abnormal" and np.array_equal(t.mask, m)
    assert truths.get("s2") is None and truths.get("s3") is None
