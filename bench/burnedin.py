"""Burned-in text: cleaning cost per image and the issue's rates, on the generated set.

Generated US (grey, colour, 3-frame cine), SC and DX images with names, IDs and dates burned in
(half without BurnedInAnnotation) and clean controls, through the whole de-identification
(OCR, blanking, second OCR pass, header de-identification, verifier). Prints ms per image (all
images, and only the OCR step per kind), the share of text-bearing files cleaned rather than
withheld, planted text left (ink pixels not blanked, tokens read back by a second OCR), and clean
controls changed or withheld. Goals (issue 15): >= 95% cleaned, no token readable, <= 5% controls.

    .venv/bin/python bench/burnedin.py [--images N] [--workers W]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcurate.deid import deidentify_files
from medcurate.deid.burnedin import clean_pixels, to_8bit
from medcurate.deid.policy import Policy
from medcurate.io import sha256_bytes
from tests.medcurate.deid.burnedin_data import make_set, write_set

SALT = b"bench-salt-not-a-secret"
_ALNUM = re.compile(r"[^A-Z0-9]")


def _frames(ds: pydicom.Dataset) -> np.ndarray:
    a = np.asarray(ds.pixel_array)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return a.reshape(n, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import pytesseract

    cases = make_set(args.images)
    # the OCR step alone, per kind, one process
    per_kind: dict[str, list[float]] = defaultdict(list)
    for c in make_set(args.images):
        t = time.perf_counter()
        clean_pixels(c.ds, Policy())
        per_kind[c.kind + (" text" if c.has_text else " clean")].append(time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        by_name = write_set(cases, root / "src")
        files = sorted((root / "src").glob("*.dcm"))
        t = time.perf_counter()
        res = deidentify_files(files, root / "dst", root / "r", SALT, workers=args.workers)
        wall = time.perf_counter() - t
        by_sha = {r["source_sha256"]: r["path"] for r in res.rows}
        text_total = cleaned = ink_left_files = read_back = controls = controls_touched = 0
        for name, c in by_name.items():
            rel = by_sha.get(sha256_bytes((root / "src" / f"{name}.dcm").read_bytes()))
            out = pydicom.dcmread(root / "dst" / rel) if rel else None
            if not c.has_text:
                controls += 1
                controls_touched += out is None or out.PixelData != c.ds.PixelData
                continue
            text_total += 1
            if out is None:
                continue
            cleaned += 1
            frames = _frames(out)
            blank = frames.min(axis=(1, 2, 3), keepdims=True)
            ink_left_files += bool((frames != blank).any(axis=-1)[c.ink].any())
            words = []
            for f in frames:
                grey = to_8bit(f, str(out.PhotometricInterpretation))
                words.append(pytesseract.image_to_string(grey, config="--psm 11"))
            text = _ALNUM.sub("", " ".join(words).upper())
            read_back += any(_ALNUM.sub("", tok) in text for tok in c.tokens)

    print(f"burned-in bench: {len(cases)} images ({platform.processor() or platform.machine()})")
    print("OCR step alone, ms per image (one process):")
    for kind, times in sorted(per_kind.items()):
        print(f"  {kind:<12} n={len(times):<3} mean {1000 * np.mean(times):7.0f}  "
              f"max {1000 * np.max(times):7.0f}")  # fmt: skip
    print(
        f"whole deid run, {args.workers} workers: {wall:.1f} s, "
        f"{1000 * wall / len(cases):.0f} ms per image (wall)"
    )
    print(
        f"text-bearing files: {text_total}; cleaned (written) {cleaned} "
        f"= {100 * cleaned / max(1, text_total):.1f}% (goal >= 95%)"
    )
    print(f"  cleaned files with planted ink left: {ink_left_files}; token read back by OCR: "
          f"{read_back} (goal 0)")  # fmt: skip
    print(
        f"clean controls: {controls}; changed or withheld {controls_touched} "
        f"= {100 * controls_touched / max(1, controls):.1f}% (goal <= 5%)"
    )
    print(f"verifier hits: {res.verifier_hit_files}; quarantined: {dict(res.quarantined)}")
    _deid_data()


def _deid_data() -> None:
    """deid-data's ultrasound files (grey, colour, a 30-frame colour cine): outcome and cost."""
    try:
        import deid_data
    except ImportError:  # a dev dependency
        return
    folder = Path(deid_data.__file__).parent / "data" / "ultrasounds"
    for name in ("GREYSCALE_IMAGE.dcm", "RGB_IMAGE.dcm", "ultrasound-multiframe.dcm"):
        ds = pydicom.dcmread(folder / name)
        t = time.perf_counter()
        result = clean_pixels(ds, Policy())
        ms = 1000 * (time.perf_counter() - t)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        outcome = result.reason or f"cleaned, {len(result.boxes)} boxes"
        print(f"deid-data {name}: {frames} frame(s), {outcome}, {ms:.0f} ms")


if __name__ == "__main__":
    main()
