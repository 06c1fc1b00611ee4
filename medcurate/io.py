"""Reading and writing files the one way the project does it.

Atomic writes (a killed run leaves a temporary file named after its process, never half a file),
deterministic NIfTI (gzip mtime 0: same input, same bytes), Parquet, content hashes and the DICOM
age string, and the cleaner of the temporary files killed runs leave behind. Every room uses these
instead of its own copy, so a fix lands once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from medcurate.perms import OWNER_FILE

if TYPE_CHECKING:  # numpy and nibabel load lazily: the CLI imports this module (hashes)
    import numpy as np

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- hashes


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return sha256_fileobj(f)[0]


def sha256_fileobj(f: BinaryIO) -> tuple[str, int]:
    """(sha256, bytes read) of an open binary file read to its end (e.g. one opened without
    following links: ``medcurate.inbox.sha256_entry``)."""
    h, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


# --------------------------------------------------------------------------- atomic writes


def temp_path(path: Path) -> Path:
    """``.<name>.tmp-<pid>`` beside ``path``: litter of a killed run is recognisable by its pid."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_target(path: str | Path, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed onto ``path``
    (0600 first when ``private``, in a folder made 0700 when it has to be made), on failure
    removed. The one way files are written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
    tmp = temp_path(path)
    try:
        yield tmp
        if private:
            os.chmod(tmp, OWNER_FILE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, private: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (0600 when ``private``,
    from the moment the file exists)."""
    with atomic_target(path, private) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_FILE if private else 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, private: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), private=private)


def atomic_write_parquet(data: Any, path: str | Path, private: bool = False) -> Path:
    """A pandas DataFrame (``to_parquet(index=False)``, as pandas writes it) or a pyarrow Table
    (schema metadata dropped: same rows, same bytes) written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_target(path, private) as tmp:
        if isinstance(data, pa.Table):
            pq.write_table(data.replace_schema_metadata(None), tmp)
        else:
            data.to_parquet(tmp, index=False)
    return Path(path)


# --------------------------------------------------------------------------- NIfTI


def nifti_bytes(
    array: np.ndarray, affine: np.ndarray, dtype: str = "float32", max_abs_error: float = 0.0
) -> bytes:
    """NIfTI-1 bytes (uncompressed) with sform and qform set from the affine.

    ``dtype="int16"`` stores the values as int16 with scl_slope/scl_inter (half the bytes, and it
    compresses better) when the round trip stays within ``max_abs_error``; otherwise float32.
    ``dtype="uint8"`` is for label maps (values must be integers 0..255).
    """
    import nibabel as nib
    import numpy as np

    if dtype == "uint8":
        labels = np.asarray(array)
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("a uint8 label map holds values outside 0..255")
        values: np.ndarray = labels.astype(np.uint8)
    else:
        values = np.asarray(array, dtype=np.float32)

    def build(on_disk: type) -> Any:
        img = nib.Nifti1Image(values, affine)
        img.set_data_dtype(on_disk)
        img.header.set_xyzt_units("mm")
        img.set_sform(affine, code=1)  # scanner anatomical
        img.set_qform(affine, code=1)
        return img

    if dtype == "uint8":
        return bytes(build(np.uint8).to_bytes())
    if dtype == "int16":
        data = bytes(build(np.int16).to_bytes())
        back = nib.Nifti1Image.from_bytes(data).get_fdata(dtype=np.float32)
        if values.size == 0 or float(np.abs(back - values).max()) <= max_abs_error:
            return data
    elif dtype != "float32":
        raise ValueError(f"unsupported output dtype {dtype!r} (float32, int16 or uint8)")
    return bytes(build(np.float32).to_bytes())


#: the gzip header's OS byte that ``nib.save`` writes (255, "unknown"; Python's gzip writes 3)
NIBABEL_GZIP_OS = 255


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    dtype: str = "float32",
    max_abs_error: float = 0.0,
    gzip_os: int | None = None,
) -> str:
    """Write ``.nii.gz`` byte-identically for identical input (gzip mtime 0); returns sha256.

    ``gzip_os`` sets the OS byte of the gzip header (RFC 1952, byte 9; no checksum covers it):
    :data:`NIBABEL_GZIP_OS` gives exactly the bytes ``nib.save`` wrote for the same image (the
    consensus label masks, which reach releases, were written that way and keep their bytes).
    """
    raw = nifti_bytes(array, affine, dtype=dtype, max_abs_error=max_abs_error)
    data = gzip.compress(raw, compresslevel=1, mtime=0)
    if gzip_os is not None:
        data = data[:9] + bytes([gzip_os]) + data[10:]
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def nifti_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, 4x4 affine) of a NIfTI file from its header alone (no voxel is read)."""
    import nibabel as nib
    import numpy as np

    img: Any = nib.load(str(path))
    return tuple(int(n) for n in img.shape), np.asarray(img.affine, dtype=np.float64)


def read_nifti(path: str | Path, dtype: Any = "float32") -> tuple[np.ndarray, np.ndarray]:
    """(voxel array with scaling applied, 4x4 affine) of a NIfTI file."""
    import nibabel as nib
    import numpy as np

    img: Any = nib.load(str(path))
    return np.asarray(img.get_fdata(dtype=dtype)), np.asarray(img.affine, dtype=np.float64)


# --------------------------------------------------------------------------- DICOM values

_AS_PER_YEAR = {"Y": 1.0, "M": 12.0, "W": 365.25 / 7.0, "D": 365.25}


def age_years(value: Any) -> float | None:
    """DICOM AS (``045Y``, ``006M``, ``010W``, ``003D``) in years, rounded to 4 places; None
    when absent or malformed. The one parser of ages: every table gets the same value."""
    s = str(value or "").strip().upper()
    if len(s) != 4 or not s[:3].isdigit():
        return None
    per_year = _AS_PER_YEAR.get(s[3])
    return None if per_year is None else round(int(s[:3]) / per_year, 4)


# --------------------------------------------------------------------------- litter of killed runs
# Every temporary output is named after the process that writes it (``*.tmp<pid>``,
# ``*.tmp<pid>-<n>``, ``.*.tmp-<pid>`` as :func:`temp_path` makes them), so a run can tell the
# litter of a killed run from the files of a run side by side: only those of processes that no
# longer exist are removed. ``*.dcm.tmpN`` (from before pids were in the name) is always litter.
# (The dataset store has its own rules: ``medcurate/store/litter.py``.)

_LEGACY_TMP = re.compile(r"\.dcm\.tmp\d+$")
_PID_TMP = re.compile(r"\.tmp(\d+)(?:-\d+)?$|\.tmp-(\d+)$|^\.write-probe-(\d+)$")


def clean_litter(folder: Path, recursive: bool = True) -> int:
    """Remove temporary files left by killed runs under ``folder``: old-style ``*.dcm.tmpN``,
    and files named after a process that is gone (``*.tmp<pid>[-n]``, ``.*.tmp-<pid>``, write
    probes). Those of live processes (a batch running side by side) are left alone."""
    removed = 0
    for dirpath, dirs, names in os.walk(folder):
        if not recursive:
            dirs.clear()
        for name in names:
            if ".tmp" not in name and not name.startswith(".write-probe-"):
                continue
            m = None if _LEGACY_TMP.search(name) else _PID_TMP.search(name)
            if m is not None and alive(int(next(g for g in m.groups() if g))):
                continue
            if m is not None or _LEGACY_TMP.search(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


def alive(pid: int) -> bool:
    """Is process ``pid`` running (ours counts as running)?"""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True
