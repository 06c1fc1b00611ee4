"""Simulated annotators: real Label Studio users who label from the generator's ground truth.

They exist so that ``make demo`` and the tests exercise the whole annotation loop (sign-up through
the invite link, per-user tokens, submissions through the API, overlap, export, agreement,
consensus) without people. Their labels are the truth with realistic, seeded noise:

- boundary jitter: a lesion's outline on a slice is dilated or eroded by a pixel now and then;
- missed small lesions: a lesion below ``small_voxels`` is skipped with some probability;
- wrong class: the slice's class is flipped now and then (a flipped slice keeps no mask).

Truth masks live in the original series geometry; the normalized volume was resampled to RAS, so
the truth is carried over by nearest neighbour through the two affines. The truth is keyed by the
ORIGINAL series UID, which the de-identified volumes table no longer holds: the salt's
:class:`~medcurate.deid.uids.UIDMapper` maps originals to the new UIDs the same way deid did.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
from numpy.typing import NDArray
from scipy import ndimage

from annotation.client import LabelStudioClient
from annotation.render import AXIAL_RAS, LEGACY_AXIAL, SliceMapping, volume_mask_slice
from annotation.rounds import read_round_info
from annotation.tasks import brush_result, choice_result
from medcurate.config import ConfigError, deid_salt, zones
from medcurate.io import nifti_geometry, read_nifti, sha256_text
from medcurate.perms import private_dir, write_private_bytes
from medcurate.services.labelstudio import ServicePaths

SIM_DOMAIN = "medcurate.local"


@dataclass(frozen=True)
class Noise:
    """Probabilities of the three kinds of error a simulated annotator makes."""

    jitter: float  # per lesion and slice: chance of a one-pixel dilation or erosion
    miss_small: float  # per small lesion: chance it is not drawn at all
    small_voxels: int  # "small": fewer voxels than this
    wrong_class: float  # per slice: chance of picking the wrong class


NOISE_LEVELS: dict[str, Noise] = {
    "none": Noise(0.0, 0.0, 0, 0.0),
    "low": Noise(0.3, 0.1, 30, 0.02),
    "moderate": Noise(0.6, 0.3, 60, 0.05),
    "high": Noise(0.9, 0.6, 120, 0.15),
}


def noise_level(name: str) -> Noise:
    try:
        return NOISE_LEVELS[name]
    except KeyError:
        raise ValueError(
            f"unknown noise level {name!r}; expected one of {sorted(NOISE_LEVELS)}"
        ) from None


def rng_for(seed: int, *parts: str) -> np.random.Generator:
    """A generator seeded from the seed and names (annotator, sample): stable across runs."""
    digest = sha256_text("\x00".join((str(seed), *parts)))
    return np.random.default_rng(int(digest[:16], 16))  # the digest's first 8 bytes


# --------------------------------------------------------------------------- geometry


def resample_nearest(
    src: NDArray[np.generic],
    src_affine: NDArray[np.floating[Any]],
    shape: Sequence[int],
    affine: NDArray[np.floating[Any]],
) -> NDArray[np.generic]:
    """``src`` (voxel -> world by ``src_affine``) sampled at every voxel of a grid of ``shape``
    with ``affine``, nearest neighbour; outside ``src`` is 0.

    Only the target voxels that can land on a nonzero source voxel are computed: the box around
    the source's nonzero voxels (+-0.5, what rounds into it) carried into the target grid, one
    voxel wider for rounding. A lesion mask is a few thousand voxels of a few million, so this is
    what makes the truth of a round cost milliseconds instead of a second a volume.
    """
    src3 = np.asarray(src)
    while src3.ndim < 3:
        src3 = src3[..., None]
    shape3 = tuple(int(s) for s in shape) + (1,) * (3 - len(shape))
    to_src = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(
        affine, dtype=np.float64
    )
    out = np.zeros(shape3, dtype=src3.dtype)
    box = _target_box(src3, to_src, shape3)
    if box is None:
        return out
    lo, hi = box
    idx = np.indices(tuple(hi - lo), dtype=np.float64).reshape(3, -1) + lo[:, None]
    pts = to_src[:3, :3] @ idx + to_src[:3, 3:4]
    near = np.rint(pts).astype(np.int64)
    inside = np.all((near >= 0) & (near < np.asarray(src3.shape[:3])[:, None]), axis=0)
    vals = np.zeros(idx.shape[1], dtype=src3.dtype)
    n = near[:, inside]
    vals[inside] = src3[n[0], n[1], n[2]]
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = vals.reshape(tuple(hi - lo))
    return out


def _target_box(
    src3: NDArray[np.generic], to_src: NDArray[np.floating[Any]], shape3: tuple[int, ...]
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """[lo, hi) of the target voxels whose nearest source voxel may be nonzero (None: none)."""
    nz = np.argwhere(src3 != 0)
    if nz.size == 0:
        return None
    first, last = nz.min(axis=0) - 0.5, nz.max(axis=0) + 0.5
    corners = np.array([[(first, last)[b][a] for a, b in enumerate(bits)]
                        for bits in np.ndindex(2, 2, 2)], dtype=np.float64)  # fmt: skip
    to_dst = np.linalg.inv(to_src)
    mapped = to_dst[:3, :3] @ corners.T + to_dst[:3, 3:4]
    lo = np.maximum(np.floor(mapped.min(axis=1)) - 1, 0).astype(np.int64)
    hi = np.minimum(np.ceil(mapped.max(axis=1)) + 2, np.asarray(shape3)).astype(np.int64)
    if np.any(hi <= lo):
        return None
    return lo, hi


# --------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class LesionPart:
    """One connected lesion of a truth mask, cut out with a one-voxel margin in-plane (what a
    one-pixel dilation can reach)."""

    box: tuple[slice, slice, slice]
    comp: NDArray[np.bool_]  # the lesion within ``box``
    voxels: int
    ks: NDArray[np.int64]  # the slices (within ``box``) it covers


def lesion_parts(truth: NDArray[np.generic]) -> list[LesionPart]:
    """The truth's lesions, in label order: computed once per sample, shared by annotators."""
    fg = np.asarray(truth) != 0
    labels, _ = ndimage.label(fg)
    parts = []
    for lesion, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        si, sj, sk = found
        box = (
            slice(max(si.start - 1, 0), min(si.stop + 1, fg.shape[0])),
            slice(max(sj.start - 1, 0), min(sj.stop + 1, fg.shape[1])),
            sk,
        )
        comp = labels[box] == lesion
        ks = np.flatnonzero(comp.any(axis=(0, 1)))
        parts.append(LesionPart(box, comp, int(comp.sum()), ks))
    return parts


def noisy_mask(
    truth: NDArray[np.generic],
    noise: Noise,
    rng: np.random.Generator,
    parts: Sequence[LesionPart] | None = None,
) -> NDArray[np.bool_]:
    """One annotator's version of a (3D) lesion mask: a small lesion may be missed as a whole;
    the outline is jittered slice by slice (people draw slice by slice), each drawn slice of a
    lesion dilated or eroded in-plane by one pixel with probability ``jitter``.

    ``parts`` are :func:`lesion_parts` of ``truth`` when the caller has them already."""
    shape = np.shape(truth)
    out = np.zeros(shape, dtype=bool)
    for part in lesion_parts(truth) if parts is None else parts:
        # the same random draws whatever happens, so one lesion's fate never shifts another's
        u_miss = rng.random()
        u = rng.random((len(part.ks), 2))
        if part.voxels < noise.small_voxels and u_miss < noise.miss_small:
            continue
        si, sj, sk = part.box
        for (u_jit, u_dir), k in zip(u, part.ks, strict=True):
            plane = part.comp[:, :, k]
            if u_jit < noise.jitter:
                if u_dir < 0.5:
                    plane = ndimage.binary_dilation(plane)
                else:
                    eroded = ndimage.binary_erosion(plane)
                    plane = eroded if eroded.any() else plane
            out[si, sj, sk.start + int(k)] |= plane
    return out


def slice_choice(has_lesion: bool, noise: Noise, rng: np.random.Generator) -> str:
    """The class an annotator picks for a slice; a wrong pick is the other of normal/abnormal."""
    truth = "abnormal" if has_lesion else "normal"
    if rng.random() < noise.wrong_class:
        return "normal" if truth == "abnormal" else "abnormal"
    return truth


def slice_result(
    mask3d: NDArray[np.generic],
    k: int,
    noise: Noise,
    rng: np.random.Generator,
    mapping: SliceMapping = AXIAL_RAS,
) -> list[dict[str, Any]]:
    """The result list one annotator submits for slice ``k``, drawn on the PNG as the task shows
    it (``mapping``: the task's own, default axial of a RAS volume)."""
    mask = volume_mask_slice(mask3d, k, mapping)
    choice = slice_choice(bool(mask.any()), noise, rng)
    result = [choice_result(choice)]
    if choice == "abnormal" and mask.any():
        result.append(brush_result(mask))
    return result


# --------------------------------------------------------------------------- truth lookup


@dataclass(frozen=True)
class TruthVolume:
    label: str  # 'normal' | 'abnormal' as the generator knows it
    mask: NDArray[np.uint8]  # in the normalized volume's grid


def truth_index(truth: Path, salt: bytes) -> dict[str, Mapping[str, Any]]:
    """Truth rows keyed by the de-identified series UID (what volumes.parquet holds)."""
    from medcurate.deid.pseudonyms import Keyer  # lazy: medcurate.deid loads pydicom
    from medcurate.deid.uids import UIDMapper

    mapper = UIDMapper(Keyer(salt))
    rows: list[dict[str, Any]] = pd.read_parquet(Path(truth) / "labels.parquet").to_dict("records")  # type: ignore[assignment]
    return {mapper(str(r["series_uid"])): r for r in rows}


def truth_for_volume(
    row: Mapping[str, Any], index: Mapping[str, Mapping[str, Any]], truth: Path, volume: Path
) -> TruthVolume | None:
    """The generator's truth for one normalized volume, carried into its grid (None if unknown)."""
    t = index.get(str(row["series_uid"]))
    if t is None:
        return None
    full_shape, affine = nifti_geometry(volume)
    shape = full_shape[:3]
    mask_path = Path(truth) / str(t["mask_file"])
    if not mask_path.exists():
        return TruthVolume(str(t["label"]), np.zeros(shape, dtype=np.uint8))
    data, mask_affine = read_nifti(mask_path)
    mask = resample_nearest(data, mask_affine, shape, affine)
    return TruthVolume(str(t["label"]), (mask != 0).astype(np.uint8).reshape(shape))


class LazyTruths(Mapping[str, TruthVolume]):
    """Truth per sample, carried into its volume's grid only when asked for and not kept (the
    caller holds one sample's at a time; a cohort's worth of full-size masks never is)."""

    def __init__(
        self,
        rows: Mapping[str, Mapping[str, Any]],
        index: Mapping[str, Mapping[str, Any]],
        truth: Path,
        volume_of: Any,
    ) -> None:
        self.rows, self.index, self.truth, self.volume_of = dict(rows), index, truth, volume_of

    def __getitem__(self, sid: str) -> TruthVolume:
        row = self.rows[sid]
        t = truth_for_volume(row, self.index, self.truth, self.volume_of(row))
        if t is None:
            raise KeyError(sid)
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.rows))

    def __len__(self) -> int:
        return len(self.rows)


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class SimUser:
    email: str
    client: LabelStudioClient  # acting as this user (its repr hides the token)
    uid: int | None = None  # the Label Studio user id, when already known


def sim_email(i: int) -> str:
    return f"sim-annotator-{i}@{SIM_DOMAIN}"


def _passwords(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save_passwords(path: Path, data: Mapping[str, str]) -> None:
    """Passwords 0600 in a 0700 folder, whatever the umask (they live in restricted/)."""
    private_dir(path.parent)
    write_private_bytes(path, (json.dumps(dict(data), indent=1, sort_keys=True) + "\n").encode())


def _token_key(email: str) -> str:
    return f"token:{email}"


def _cached_user(admin: LabelStudioClient, email: str, token: str) -> SimUser | None:
    """The user behind a stored API token, if the server still knows it (one GET)."""
    client = LabelStudioClient(admin.url, token, admin.timeout)
    try:
        who = client.whoami()
    except requests.HTTPError:
        return None  # a token from another server's database: sign in again
    if who.get("email") != email:
        return None
    return SimUser(email, client, int(who["id"]))


def sim_users(admin: LabelStudioClient, n: int, secrets_file: Path) -> list[SimUser]:
    """``n`` simulated annotators (created on first use; passwords and API tokens kept in
    ``secrets_file``). A stored token that still works is used as it is: signing in again hashes
    the password on the server (PBKDF2, about a second of its CPU per user and round)."""
    stored = _passwords(secrets_file)
    users = []
    for i in range(1, n + 1):
        email = sim_email(i)
        if email not in stored:
            stored[email] = secrets.token_urlsafe(18)
            _save_passwords(secrets_file, stored)
        token = stored.get(_token_key(email))
        user = _cached_user(admin, email, token) if token else None
        if user is None:
            client = admin.signup(email, stored[email])
            user = SimUser(email, client)
            if isinstance(getattr(client, "token", None), str):
                stored[_token_key(email)] = client.token
                _save_passwords(secrets_file, stored)
        users.append(user)
    return users


# --------------------------------------------------------------------------- submitting


@dataclass(frozen=True)
class SimSummary:
    annotators: int
    submitted: int
    skipped_existing: int
    tasks: int

    def __str__(self) -> str:
        return (
            f"{self.annotators} simulated annotators: {self.submitted} annotations submitted, "
            f"{self.skipped_existing} already there, {self.tasks} tasks"
        )


@dataclass(frozen=True)
class Submission:
    """One annotation an annotator submits: the task, its result list and the time it took."""

    task_id: int
    result: list[dict[str, Any]]
    lead_time: float


def plan_annotations(
    index: int,
    user_id: int,
    tasks: Sequence[Mapping[str, Any]],
    truths: Mapping[str, TruthVolume],
    noise: Noise,
    seed: int,
    parts: Mapping[str, Sequence[LesionPart]] | None = None,
) -> tuple[list[Submission], int]:
    """What annotator ``index`` (Label Studio user ``user_id``) submits for the tasks they have
    not labelled yet, in task_key order; returns (submissions, tasks already labelled).

    The noisy mask is drawn once per sample (3D), so an annotator's slices of one lesion are
    consistent, as a person's would be. Every draw comes from ``rng_for(seed, index, ...)``:
    the same seed gives the same annotations, whatever order they reach the server in.
    """
    parts = {} if parts is None else parts
    # one sample's noisy mask at a time (task_key order groups a sample's slices; a mask drawn
    # again is the same mask: its RNG is keyed by the sample)
    masks: dict[str, NDArray[np.bool_]] = {}
    out: list[Submission] = []
    skipped = 0
    for task in sorted(tasks, key=lambda t: str(t["data"]["task_key"])):
        sid, k = str(task["data"]["sample_id"]), int(task["data"]["slice_k"])
        done = [
            a for a in task.get("annotations") or [] if _user_id(a.get("completed_by")) == user_id
        ]
        if done:
            skipped += 1
            continue
        if sid not in masks:
            truth = truths.get(sid)
            if truth is None:
                continue
            rng = rng_for(seed, str(index), sid, "mask")
            masks = {sid: noisy_mask(truth.mask, noise, rng, parts.get(sid))}
            del truth
        rng = rng_for(seed, str(index), str(task["data"]["task_key"]))
        result = slice_result(masks[sid], k, noise, rng, task_mapping(task["data"]))
        lead_time = float(np.round(rng.gamma(4.0, 5.0), 3))
        out.append(Submission(int(task["id"]), result, lead_time))
    return out, skipped


def annotate_as(
    user: SimUser,
    index: int,
    project: int,
    truths: Mapping[str, TruthVolume],
    noise: Noise,
    seed: int,
) -> tuple[int, int, int]:
    """Submit one annotator's labels for every task of a project they have not labelled yet,
    one by one (the slow way; :func:`simulate_round` overlaps annotators and requests).

    Returns (submitted, skipped, tasks)."""
    me = int(user.client.whoami()["id"])
    tasks = user.client.tasks(project)
    plan, skipped = plan_annotations(index, me, tasks, truths, noise, seed)
    for sub in plan:
        user.client.submit_annotation(sub.task_id, sub.result, sub.lead_time)
    return len(plan), skipped, len(tasks)


def task_mapping(data: Mapping[str, Any]) -> SliceMapping:
    """The pixel/voxel mapping a task states (tasks of older rounds state none: legacy)."""
    text = data.get("mapping")
    return SliceMapping.parse(str(text)) if text else LEGACY_AXIAL


def _user_id(completed_by: Any) -> int | None:
    if isinstance(completed_by, dict):
        return int(completed_by["id"])
    return int(completed_by) if completed_by is not None else None


#: requests in flight at once. Label Studio's development server is one process that spends
#: ~40 ms of CPU per annotation (py-spy: half of it in sqlite, Task.save and the project
#: summary) plus sqlite commits that serialize writers. Six beat three in four of four paired
#: runs of 297 submissions on a shared 2-core machine (15.7/21.3/29.2/23.1 s against
#: 22.2/25.3/41.9/28.2 s) at the same server CPU (~13 s): while some requests wait on
#: sqlite's lock, others have Python work to do. Twelve was no better (18.3 s).
IN_FLIGHT = 6


def simulate_round(
    admin: LabelStudioClient,
    project: int,
    truths: Mapping[str, TruthVolume],
    annotators: int,
    noise: str | Noise,
    secrets_file: Path,
    seed: int = 0,
    in_flight: int = IN_FLIGHT,
) -> SimSummary:
    """K simulated annotators sign up (through ``admin``'s invite link) and label every task of
    ``project``.

    Each submission goes through the API with its annotator's own token (keep-alive sessions).
    The task list is read once; sample by sample, its lesions are found once and shared by
    the annotators, whose labels are drawn here while earlier ones are being submitted (at most
    ``4 * in_flight`` submissions wait), then dropped: one sample's truth and masks are held at
    a time, whatever the cohort. ``truths`` may load each truth when asked
    (:class:`LazyTruths`).
    """
    level = noise_level(noise) if isinstance(noise, str) else noise
    users = sim_users(admin, annotators, secrets_file)
    ids = [u.uid if u.uid is not None else int(u.client.whoami()["id"]) for u in users]
    tasks = users[0].client.tasks(project) if users else []
    by_sample: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        by_sample.setdefault(str(task["data"]["sample_id"]), []).append(task)
    submitted = skipped = 0
    window = 4 * max(1, in_flight)  # submissions planned ahead of the server, at most
    with ThreadPoolExecutor(max_workers=max(1, in_flight)) as pool:
        pending: deque[Future[Any]] = deque()
        # sample by sample: its truth is read (``truths`` may load lazily), its annotators'
        # masks drawn and submitted, then all of it dropped, so memory stays flat in the cohort
        # (every draw is keyed by (seed, annotator, sample/task): the same labels in any order)
        for sid in sorted(by_sample):
            truth = truths.get(sid)
            one = {sid: truth} if truth is not None else {}
            parts = {sid: lesion_parts(truth.mask)} if truth is not None else {}
            for i, (user, uid) in enumerate(zip(users, ids, strict=True), start=1):
                plan, done = plan_annotations(i, uid, by_sample[sid], one, level, seed, parts)
                skipped += done
                submitted += len(plan)
                for s in plan:
                    pending.append(
                        pool.submit(user.client.submit_annotation, s.task_id, s.result, s.lead_time)
                    )
                    while len(pending) > window:
                        pending.popleft().result()  # the first failed submission raises here
            del truth, one, parts
        while pending:
            pending.popleft().result()
    return SimSummary(
        annotators=annotators, submitted=submitted, skipped_existing=skipped, tasks=len(tasks)
    )


def annotate_round(
    round_number: int,
    annotators: int = 3,
    noise: str = "moderate",
    truth: Path | None = None,
    seed: int = 0,
) -> SimSummary:
    """``medcurate annotate-sim``: simulated annotators label round N's project of MEDCURATE_HOME.

    Reads ``annotation/round-N/round.json`` (written by ``annotation_tasks``) and the volumes
    table, finds each sample's truth through the salt, and submits as each annotator.
    """
    z = zones().ensure()  # the start-up check: writable home, restricted/ owner-only
    round = f"round-{int(round_number)}"
    info = read_round_info(z, round)
    if info is None:
        raise ConfigError(
            f"{z.round_info(round)}: no such round yet (materialize annotation_tasks first)"
        )
    if truth is None:
        found = sorted(p for p in z.demo_truth.glob("*") if p.is_dir())
        if len(found) != 1:
            raise ConfigError("give --truth DIR (the generator's ground truth folder)")
        truth = found[0]
    if noise not in NOISE_LEVELS:
        raise ConfigError(f"unknown noise level {noise!r}; expected one of {sorted(NOISE_LEVELS)}")
    index = truth_index(truth, deid_salt())
    volumes = pd.read_parquet(z.volumes_table)
    wanted = {str(s) for s in info["samples"]}
    records: list[dict[str, Any]] = volumes.to_dict("records")  # type: ignore[assignment]
    rows = {str(r["sample_id"]): r for r in records if str(r["sample_id"]) in wanted}
    truths = LazyTruths(rows, index, truth, lambda r: z.volume_file(str(r["nifti_path"])))
    admin = LabelStudioClient.connect(home=z.home)
    secrets_file = ServicePaths(z.home).sim_annotators_file
    return simulate_round(
        admin, int(info["project_id"]), truths, annotators, noise, secrets_file, seed
    )
