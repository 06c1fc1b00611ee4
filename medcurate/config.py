"""Settings read once from the environment, and the data zones under MEDCURATE_HOME.

Everything that decides where data lives goes through :class:`Zones`, so the rule that nothing
identifying leaves ``restricted/`` has one place to be checked. :meth:`Zones.ensure` is also the
start-up check every command and asset goes through: the home must be writable (checked up front,
so no half-done copy fails later with a path that names a patient folder) and ``restricted/``,
Dagster's home and Label Studio's folders must be owner-only.
"""

from __future__ import annotations

import math
import os
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medcurate.perms import open_to_others, private_dir, private_tree

DEFAULT_HOME = ".medcurate"
MIN_SALT_BITS = 64
SALT_ADVICE = "make a good one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# File names inside a zone, shared with the commands that write the same layout into any folder
# (``medcurate deid SRC DST``, ``medcurate normalize SRC DST``).
DEID_MANIFESTS = "manifests"  # deid/manifests/<batch>.parquet
DEID_TREE_MANIFEST = "deid.parquet"  # DST/deid.parquet of the deid command
DEID_REASONS = "reasons.csv"  # in each de-identification quarantine folder
DEID_CROSSWALK = "crosswalk.csv"  # RDIR/crosswalk/crosswalk.csv of the deid command
VOLUMES_TABLE = "volumes.parquet"
VOLUMES_QUARANTINE = "quarantine.parquet"
VOLUMES_LOCK = ".normalize.lock"


class ConfigError(RuntimeError):
    """A required setting is missing or invalid."""


class MissingSaltError(ConfigError):
    """MEDCURATE_DEID_SALT is not set; de-identification must not start without it."""


class WeakSaltError(ConfigError):
    """MEDCURATE_DEID_SALT is guessable (too short, repetitive or whitespace)."""


class HomeNotWritableError(ConfigError):
    """MEDCURATE_HOME (or one of its zones) cannot be written."""


class OpenZoneError(ConfigError):
    """restricted/, Dagster's home or Label Studio's folders are readable by other users."""


@dataclass(frozen=True)
class Zones:
    """The data zones of DESIGN.md, as paths under one home folder."""

    home: Path

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def restricted(self) -> Path:
        return self.home / "restricted"

    @property
    def raw(self) -> Path:
        return self.restricted / "raw"

    @property
    def quarantine(self) -> Path:
        return self.restricted / "quarantine"

    @property
    def duplicates(self) -> Path:
        return self.restricted / "duplicates"

    @property
    def catalog(self) -> Path:
        return self.restricted / "catalog"

    @property
    def deid(self) -> Path:
        return self.home / "deid"

    @property
    def volumes(self) -> Path:
        return self.home / "volumes"

    @property
    def annotation(self) -> Path:
        return self.home / "annotation"

    @property
    def labels(self) -> Path:
        return self.home / "labels"

    @property
    def curated(self) -> Path:
        return self.home / "curated"

    @property
    def synthetic(self) -> Path:
        return self.home / "synthetic"

    @property
    def releases(self) -> Path:
        return self.home / "releases"

    @property
    def gan_models(self) -> Path:
        """Generator checkpoints (``<checkpoint id>.pt``) and ``latest.json`` naming the newest."""
        return self.synthetic / "gan"

    @property
    def synthetic_table(self) -> Path:
        """The synthetic samples (train split only) the next release adds to the real ones."""
        return self.synthetic / "samples.parquet"

    @property
    def synthetic_report(self) -> Path:
        """Quality and privacy figures and pictures of the synthetic samples."""
        return self.synthetic / "report"

    def evaluation(self, dataset: str, version: str) -> Path:
        """Working folder of the evaluation consumer for one released version (what it wrote
        and attached to the version's card, plus run timings that stay out of the report)."""
        return self.home / "evaluation" / dataset / version

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def labelstudio(self) -> Path:
        """The managed Label Studio's folder (its database holds the API token)."""
        return self.home / "labelstudio"

    # --- ingest (restricted/: raw, quarantine, duplicates, catalog) ---------------------------

    def raw_batch(self, batch: str) -> Path:
        """``restricted/raw/<batch>/``: a claimed batch's files, as the sender named them."""
        return self.raw / batch

    def quarantine_batch(self, batch: str) -> Path:
        """``restricted/quarantine/<batch>/``: the batch's files that failed validation."""
        return self.quarantine / batch

    def duplicates_batch(self, batch: str) -> Path:
        """``restricted/duplicates/<batch>/``: the batch's files already received before."""
        return self.duplicates / batch

    def catalog_file(self, batch: str) -> Path:
        """``restricted/catalog/<batch>.parquet``: one row per received entry of the batch."""
        return self.catalog / f"{batch}.parquet"

    def catalog_pending(self, batch: str) -> Path:
        """``restricted/catalog/<batch>.pending``: exists from the claim until the batch is fully
        ingested (a run killed after its claim is found by it)."""
        return self.catalog / f"{batch}.pending"

    @property
    def catalog_lock(self) -> Path:
        """Held while a batch is catalogued (duplicates are decided across batches)."""
        return self.catalog / ".lock"

    @property
    def claim_lock(self) -> Path:
        """Held while the inbox is claimed (or pending batches are listed)."""
        return self.catalog / ".claim.lock"

    def ingest_reasons(self, batch: str) -> Path:
        """``restricted/quarantine/<batch>.reasons.csv``: beside the batch folder, so it never
        collides with a received file."""
        return self.quarantine / f"{batch}.reasons.csv"

    # --- deid (deid/ and its restricted/ side) ------------------------------------------------

    @property
    def deid_manifests(self) -> Path:
        """``deid/manifests/``: one de-identification manifest per batch."""
        return self.deid / DEID_MANIFESTS

    def deid_manifest(self, batch: str) -> Path:
        """``deid/manifests/<batch>.parquet``: one row per de-identified instance."""
        return self.deid_manifests / f"{batch}.parquet"

    @property
    def deid_quarantine(self) -> Path:
        """``restricted/quarantine/deid/``: originals de-identification refused, per batch."""
        return self.quarantine / "deid"

    def deid_quarantine_batch(self, batch: str) -> Path:
        return self.deid_quarantine / batch

    def deid_reasons(self, batch: str) -> Path:
        """``restricted/quarantine/deid/<batch>/reasons.csv``: source, reason, message."""
        return self.deid_quarantine_batch(batch) / DEID_REASONS

    @property
    def crosswalks(self) -> Path:
        """``restricted/crosswalk/``: original -> pseudonym maps for an honest broker."""
        return self.restricted / "crosswalk"

    def crosswalk(self, batch: str) -> Path:
        return self.crosswalks / f"{batch}.csv"

    # --- normalize (volumes/) -----------------------------------------------------------------

    @property
    def volumes_quarantine(self) -> Path:
        """``volumes/quarantine.parquet``: series that could not become a volume, with a reason."""
        return self.volumes / VOLUMES_QUARANTINE

    @property
    def volumes_lock(self) -> Path:
        """Held while volumes.parquet and quarantine.parquet are upserted."""
        return self.volumes / VOLUMES_LOCK

    def volume_file(self, nifti_path: str) -> Path:
        """A volume's NIfTI (``nifti_path`` of volumes.parquet is relative to ``volumes/``)."""
        return self.volumes / nifti_path

    # >>> annotation paths (round-N folders and their files)
    def round_dir(self, round: str) -> Path:
        """``annotation/round-N/``: everything one annotation round writes (pseudonymous)."""
        return self.annotation / round

    def round_info(self, round: str) -> Path:
        """``round-N/round.json``: project id, overlap, samples and task keys of the round."""
        return self.round_dir(round) / "round.json"

    def round_slices(self, round: str) -> Path:
        """``round-N/slices.parquet``: one row per task, the slice and its voxel mapping."""
        return self.round_dir(round) / "slices.parquet"

    def round_images(self, round: str, sample_id: str | None = None) -> Path:
        """``round-N/images/[<sample_id>/]``: the rendered PNG slices Label Studio serves as
        local files (its document root is ``annotation/``)."""
        images = self.round_dir(round) / "images"
        return images / sample_id if sample_id else images

    def round_annotations(self, round: str) -> Path:
        """``round-N/annotations.parquet``: one row per annotator per task."""
        return self.round_dir(round) / "annotations.parquet"

    def round_adjudication(self, round: str) -> Path:
        """``round-N/adjudication.json``: the round's adjudication project and its samples."""
        return self.round_dir(round) / "adjudication.json"

    def round_model(self, round: str) -> Path:
        """``round-N/model/``: pre-annotations (``pred/``), ``scores.parquet``, ``model.pt``."""
        return self.round_dir(round) / "model"

    def round_predictions(self, round: str) -> Path:
        """``round-N/model/pred/``: one uint8 pre-annotation mask per sample."""
        return self.round_model(round) / "pred"

    def round_scores(self, round: str) -> Path:
        """``round-N/model/scores.parquet``: uncertainty and P(abnormal) per sample."""
        return self.round_model(round) / "scores.parquet"

    def round_prediction(self, round: str, sample_id: str) -> Path:
        """``round-N/model/pred/<sample_id>.nii.gz``: a sample's pre-annotation mask."""
        return self.round_predictions(round) / f"{sample_id}.nii.gz"

    def round_model_file(self, round: str) -> Path:
        """``round-N/model/model.pt``: the UNet of the round (from round 2)."""
        return self.round_model(round) / "model.pt"

    def round_proposal(self, round: str) -> Path:
        """``round-N/model/proposal.json``: the intensity proposal's version and config."""
        return self.round_model(round) / "proposal.json"

    def round_model_outcome(self, round: str) -> Path:
        """``round-N/model/outcome.json``: whether the round's pre-annotations are offered or
        withheld, and why (validation Dice against the floor)."""
        return self.round_model(round) / "outcome.json"

    def annotator_mask_relpath(self, round: str, sample_id: str, annotator: str) -> str:
        """Where an annotator's label map of a sample lives, relative to ``annotation/`` (the
        ``mask_path`` of annotations.parquet)."""
        return f"{round}/masks/{sample_id}/{annotator}.nii.gz"

    def annotator_mask(self, round: str, sample_id: str, annotator: str) -> Path:
        return self.annotation / self.annotator_mask_relpath(round, sample_id, annotator)

    def round_export(self, round: str) -> Path:
        """The raw snapshot export of a round (it names accounts by e-mail: restricted)."""
        return self.restricted / "annotation-exports" / f"{round}.json"

    @property
    def demo_truth(self) -> Path:
        """The generator's ground truth the demo's simulated annotators label from."""
        return self.restricted / "demo-truth"

    @property
    def demo_salt(self) -> Path:
        """The salt ``make demo`` generates when MEDCURATE_DEID_SALT is unset (0600)."""
        return self.restricted / "demo-salt"

    # <<< annotation paths

    # >>> release paths (curated/, labels/, releases/ files)
    @property
    def volumes_table(self) -> Path:
        """``volumes/volumes.parquet``: one row per normalized volume."""
        return self.volumes / "volumes.parquet"

    def label_file(self, mask_path: str) -> Path:
        """A label mask named by its ``mask_path`` (relative to ``labels/``) in labels.parquet."""
        return self.labels / mask_path

    def annotation_file(self, relpath: str) -> Path:
        """A file named relative to ``annotation/`` (e.g. an annotator's mask_path)."""
        return self.annotation / relpath

    @property
    def labels_table(self) -> Path:
        """``labels/labels.parquet``: the consensus label of each labelled sample."""
        return self.labels / "labels.parquet"

    @property
    def label_masks(self) -> Path:
        """``labels/masks/``: consensus masks (``mask_path`` in labels.parquet is relative to
        ``labels/``)."""
        return self.labels / "masks"

    @property
    def samples_table(self) -> Path:
        """``curated/samples.parquet``: volumes joined with their labels."""
        return self.curated / "samples.parquet"

    @property
    def splits_table(self) -> Path:
        """``curated/splits.parquet``: the samples with their split, fold and age band."""
        return self.curated / "splits.parquet"

    @property
    def balance_plot(self) -> Path:
        """``curated/balance.png``: stratum proportions per split."""
        return self.curated / "balance.png"

    def dataset_cache(self, dataset: str, version: str) -> Path:
        """Where ``medcurate.datasets.load`` pulls a version's files by default."""
        return self.home / "cache" / "datasets" / dataset / version

    @property
    def quality_docs(self) -> Path:
        """``quality/docs/``: the quality gates' Data Docs (an index and a page per suite run)."""
        return self.home / "quality" / "docs"

    # <<< release paths

    def private_roots(self) -> list[Path]:
        """Folders that must be owner-only: each guards identifying data or secrets below it."""
        r = self.restricted
        return [r, self.raw, self.quarantine, self.duplicates, self.catalog,
                self.dagster_home, self.labelstudio, self.labelstudio / "data",
                self.home / "postgres"]  # fmt: skip

    def check_private(self, roots: list[Path] | None = None) -> None:
        """Refuse (OpenZoneError) when any existing private root (or of ``roots``) is open to
        other users."""
        bad = open_to_others(self.private_roots() if roots is None else roots)
        if bad:
            listed = ", ".join(str(p) for p in bad[:3]) + (" ..." if len(bad) > 3 else "")
            fix = " && ".join(f"chmod -R go-rwx '{p}'" for p in bad[:3])
            raise OpenZoneError(
                f"restricted data under MEDCURATE_HOME is readable by other users ({listed}); "
                f"refusing to run. Fix: {fix} (or run `medcurate init-home`, which fixes it)"
            )

    def fix_private(self) -> int:
        """Make every private root and everything below it owner-only; returns how many roots
        were open before (``init-home`` calls this: homes made by older versions were 0755)."""
        before = len(open_to_others(self.private_roots()))
        for p in self.private_roots():
            if p.is_dir():
                private_tree(p)
        return before

    def ensure(self, fix: bool = False) -> Zones:
        """Create the zones (``restricted/`` ones 0700, whatever the umask) after checking that
        the home is writable and that ``restricted/`` is not open to others (``fix``: make it
        owner-only instead of refusing)."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            _probe_write(self.home)
            if fix:
                self.fix_private()
            self.check_private()
            for p in (self.inbox, self.deid):
                p.mkdir(exist_ok=True)
            for p in (self.raw, self.quarantine, self.duplicates, self.catalog):
                private_dir(p, root=self.restricted)
            for p in (self.inbox, self.deid, *self.private_roots()[:5]):
                if not os.access(p, os.W_OK | os.X_OK):
                    raise PermissionError(13, "Permission denied")
        except OSError as exc:  # never exc.filename: keep the message to the home and the cause
            raise HomeNotWritableError(
                f"MEDCURATE_HOME {self.home} is not writable "
                f"({exc.strerror or type(exc).__name__}): "
                "set MEDCURATE_HOME to a folder you can write, or fix its permissions"
            ) from None
        return self


def _probe_write(folder: Path) -> None:
    """Write one byte in ``folder`` (an unnamed temporary file: no litter if killed), so a
    read-only disk, a full quota or a file-size limit fails here, before any data is copied."""
    with tempfile.TemporaryFile(dir=folder) as f:
        f.write(b"\0")
        f.flush()


def medcurate_home(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env.get("MEDCURATE_HOME", DEFAULT_HOME)).expanduser().resolve()


def zones(env: dict[str, str] | None = None) -> Zones:
    return Zones(medcurate_home(env))


# --------------------------------------------------------------------------- the salt

_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation + " ")


def salt_entropy_bits(salt: str) -> float:
    """A deliberately simple, pessimistic estimate of a salt's entropy in bits.

    Each character is worth log2(size of the character classes the salt uses: lowercase 26,
    uppercase 26, digits 10, ASCII punctuation and space 33, anything else 64), except a
    predictable one, worth 1 bit: a repeat of the previous character, one step up or down from
    it (``abc``, ``321``), or a pair of characters already seen (``abab``, ``passpass``).
    ``secrets.token_urlsafe(32)`` scores about 200; ``aaaaaaaa`` 12; ``0123456789`` 12.
    """
    pool = sum(len(c) for c in _CLASSES if any(ch in c for ch in salt))
    if any(not any(ch in c for c in _CLASSES) for ch in salt):
        pool += 64
    per_char = math.log2(max(pool, 2))
    bits, pairs, prev = 0.0, set(), ""
    for ch in salt:
        predictable = bool(prev) and (abs(ord(ch) - ord(prev)) <= 1 or (prev, ch) in pairs)
        bits += 1.0 if predictable else per_char
        if prev:
            pairs.add((prev, ch))
        prev = ch
    return bits


def deid_salt(env: dict[str, str] | None = None) -> bytes:
    """The de-identification secret. Raises before any file is touched when it is missing or
    guessable (the message never echoes it)."""
    env = dict(os.environ) if env is None else env
    salt = env.get("MEDCURATE_DEID_SALT", "")
    if not salt:
        raise MissingSaltError(
            "MEDCURATE_DEID_SALT is not set: de-identification needs a secret salt "
            "(pseudonyms, UIDs and date shifts derive from it). Set it in the environment; "
            + SALT_ADVICE
        )
    if len(salt) < 8:
        raise WeakSaltError(f"MEDCURATE_DEID_SALT is too short (under 8 characters); {SALT_ADVICE}")
    if salt != salt.strip() or not salt.strip():
        raise WeakSaltError(
            "MEDCURATE_DEID_SALT is blank or starts or ends with whitespace (easily lost when "
            f"copied); {SALT_ADVICE}"
        )
    if len(set(salt)) == 1:
        raise WeakSaltError(f"MEDCURATE_DEID_SALT repeats one character; {SALT_ADVICE}")
    bits = salt_entropy_bits(salt)
    if bits < MIN_SALT_BITS:
        raise WeakSaltError(
            f"MEDCURATE_DEID_SALT is guessable (about {bits:.0f} bits of entropy, at least "
            f"{MIN_SALT_BITS} needed: repeats and runs like 'abc' or '123' count little); "
            + SALT_ADVICE
        )
    return salt.encode("utf-8")
