"""Generated images with names, IDs and dates burned into their pixels, and clean controls.

Deterministic (a seed per case; DejaVu fonts from Debian's fonts-dejavu-core): ultrasound (grey
and colour, one small cine), secondary captures and 16-bit DX, text at varied positions, sizes and
contrasts, half of the text-bearing ones without BurnedInAnnotation. Each case keeps the planted
tokens and the mask of every pixel the text was drawn on (the ground truth the tests check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

FONTS = Path("/usr/share/fonts/truetype/dejavu")
_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf")
_SURNAMES = ("KOWALSKI", "OKAFOR", "LINDQVIST", "MARTINEZ", "HASEGAWA", "DUBOIS", "ABERNATHY")
_GIVEN = ("JOHANNA", "PETER", "AMINA", "GUSTAV", "ROSALIND", "TOBIAS", "MIREILLE")


@dataclass
class Case:
    """One generated instance: what was planted, where (ink mask per frame), and its kind."""

    name: str
    ds: Dataset
    tokens: list[str]
    ink: np.ndarray  # bool, (frames, rows, cols): pixels the planted text covers
    kind: str

    @property
    def has_text(self) -> bool:
        return bool(self.tokens)


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / _FONT_FILES[int(rng.integers(len(_FONT_FILES)))]), size)


def _lines(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    surname = _SURNAMES[int(rng.integers(len(_SURNAMES)))]
    given = _GIVEN[int(rng.integers(len(_GIVEN)))]
    mrn = str(int(rng.integers(10_000_000, 99_999_999)))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    dob = f"{month:02d}/{day:02d}/{int(rng.integers(1930, 2010))}"
    lines = [f"{surname}, {given}", f"MRN {mrn}", f"DOB {dob}"]
    return lines, [surname, given, mrn, dob]


def _background(rng: np.random.Generator, rows: int, cols: int, kind: str) -> np.ndarray:
    """Float image in [0, 1]: a speckled sector (US), soft anatomy blobs (DX), flat UI (SC)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    if kind == "US":
        cy, cx = rows * 0.12, cols / 2
        r = np.hypot(y - cy, x - cx)
        ang = np.arctan2(x - cx, y - cy)
        sector = (r > rows * 0.15) & (r < rows * 0.92) & (np.abs(ang) < 0.5)
        speckle = rng.gamma(2.0, 0.18, size=(rows, cols)).astype(np.float32)
        img = np.where(sector, np.clip(speckle * (1 - r / rows * 0.6), 0, 1), 0.0)
        return img.astype(np.float32)
    if kind == "DX":
        img = np.full((rows, cols), 0.15, np.float32)
        for _ in range(6):
            cy, cx = rng.uniform(0.2, 0.8) * rows, rng.uniform(0.2, 0.8) * cols
            sy, sx = rng.uniform(0.08, 0.25) * rows, rng.uniform(0.08, 0.25) * cols
            img += 0.35 * np.exp(-(((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2))
        img = 0.1 + 0.5 * (img - img.min()) / (img.max() - img.min())  # anatomy below the text
        img += rng.normal(0, 0.01, size=(rows, cols)).astype(np.float32)
        return np.clip(img, 0, 1).astype(np.float32)
    img = np.full((rows, cols), 0.1, np.float32)  # SC: a dark viewer with a rendered image
    cy, cx = rows / 2, cols / 2
    img += 0.6 * np.exp(-(((y - cy) / (rows / 4)) ** 2 + ((x - cx) / (cols / 4)) ** 2))
    return np.clip(img, 0, 1).astype(np.float32)


def _draw(
    rng: np.random.Generator, rows: int, cols: int, lines: list[str], kind: str
) -> tuple[np.ndarray, float]:
    """(ink mask, text level in [0, 1]) for the lines at a random position, size and contrast."""
    size = int(rng.integers(14, 30)) if kind != "DX" else int(rng.integers(22, 44))
    font = _font(rng, size)
    canvas = Image.new("L", (cols, rows), 0)
    draw = ImageDraw.Draw(canvas)
    widths = [draw.textbbox((0, 0), t, font=font)[2] for t in lines]
    height = int(size * 1.3) * len(lines)
    corner = int(rng.integers(4))
    margin = int(rng.integers(6, 24))
    x = margin if corner in (0, 2) else max(margin, cols - max(widths) - margin)
    y = margin if corner in (0, 1) else max(margin, rows - height - margin)
    if kind == "US":
        y = margin  # ultrasound text stays off the sector: the header band, left or right
    for i, t in enumerate(lines):
        draw.text((x, y + i * int(size * 1.3)), t, fill=255, font=font)
    ink = np.asarray(canvas) > 96
    level = float(rng.choice([1.0, 0.85, 0.7])) if kind != "SC" else float(rng.choice([1.0, 0.05]))
    return ink, level


def _dataset(kind: str, modality: str, sop_class: str, index: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    uid = f"1.2.826.0.1.3680043.10.999.{index + 1}"
    ds.file_meta.MediaStorageSOPInstanceUID = uid + ".3"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid + ".3"
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.Modality = modality
    ds.PatientName = f"PLANTED^CASE{index}"
    ds.PatientID = f"PID{index:05d}"
    ds.PatientBirthDate = "19620314"
    ds.StudyDate = "20240105"
    ds.Manufacturer = "GENERATED"
    return ds


def make_case(index: int, kind: str, text: bool, declare: bool, seed: int = 0) -> Case:
    """One case: ``kind`` US, USRGB, USCINE, SC or DX; ``declare`` sets BurnedInAnnotation YES."""
    rng = np.random.default_rng([seed, index])
    base = "US" if kind.startswith("US") else kind
    rows, cols = {"US": (480, 640), "SC": (512, 512), "DX": (1024, 896)}[base]
    frames = 3 if kind == "USCINE" else 1
    sop = {
        "US": str(UltrasoundImageStorage),
        "USRGB": str(UltrasoundImageStorage),
        "USCINE": str(UltrasoundMultiFrameImageStorage),
        "SC": str(SecondaryCaptureImageStorage),
        "DX": str(DigitalXRayImageStorageForPresentation),
    }[kind]
    ds = _dataset(kind, "OT" if base == "SC" else base, sop, index)
    lines, tokens = _lines(rng) if text else ([], [])
    ink = np.zeros((frames, rows, cols), bool)
    level = 1.0
    imgs = []
    for f in range(frames):
        img = _background(rng, rows, cols, base)
        if text:
            mask, level = _draw(rng, rows, cols, lines, base) if f == 0 else (ink[0], level)
            ink[f] = mask
            if level < 0.5:
                img = 1.0 - 0.5 * img  # dark text on a light window
            img = np.where(mask, level, img)
        imgs.append(img)
    arr = np.stack(imgs)
    if base == "DX":
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = (arr[0] * 4095).astype(np.uint16)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    elif kind == "USRGB" or base == "SC":
        ds.PhotometricInterpretation = "RGB"
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        grey = (arr * 255).astype(np.uint8)
        tint = np.array([1.0, 0.95, 0.6 if text else 1.0])  # yellowish text, as on consoles
        rgb = np.where(ink[..., None], (grey[..., None] * tint).astype(np.uint8), grey[..., None])
        pixels = rgb[0] if frames == 1 else rgb
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        grey = (arr * 255).astype(np.uint8)
        pixels = grey[0] if frames == 1 else grey
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 40.0
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if text and declare:
        ds.BurnedInAnnotation = "YES"
    elif not text and declare:
        ds.BurnedInAnnotation = "NO"
    return Case(f"{kind.lower()}-{index:03d}", ds, tokens, ink, kind)


def make_set(n: int, seed: int = 0) -> list[Case]:
    """``n`` cases cycling kinds; 3 of every 4 carry text (half of those undeclared), 1 is clean."""
    kinds = ("US", "DX", "SC", "USRGB", "US", "DX", "SC", "USCINE")
    cases = []
    for i in range(n):
        kind = kinds[(i + i // 4) % len(kinds)]
        text = i % 4 != 3
        cases.append(make_case(i, kind, text=text, declare=(i // 4) % 2 == 0, seed=seed))
    return cases


def write_set(cases: list[Case], folder: Path) -> dict[str, Case]:
    """Each case as ``<name>.dcm`` under ``folder``; name -> case."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in cases:
        c.ds.save_as(folder / f"{c.name}.dcm", enforce_file_format=True)
    return {c.name: c for c in cases}
