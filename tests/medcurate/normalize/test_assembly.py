"""Series assembly: slice order from geometry, and a split or a reason for every edge case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcurate.io import age_years
from medcurate.normalize import assembly as A
from medcurate.normalize.config import AssemblyConfig
from medcurate.normalize.phantom import PhantomSeries, write_projection, write_series

CFG = AssemblyConfig()


def _assemble(paths: list[Path]) -> list[A.Outcome]:
    infos = [A.read_instance(p) for p in paths]
    assert all(i is not None for i in infos)
    return A.assemble([i for i in infos if i is not None], CFG)


def _reasons(outcomes: list[A.Outcome]) -> list[str]:
    return sorted(o.reason for o in outcomes if isinstance(o, A.Rejection))


def _plans(outcomes: list[A.Outcome]) -> list[A.VolumePlan]:
    return [o for o in outcomes if isinstance(o, A.VolumePlan)]


def _covered(outcomes: list[A.Outcome]) -> int:
    return sum(len(o.instances) for o in outcomes)


def test_sorted_by_position_along_normal_not_by_instance_number(tmp_path: Path) -> None:
    # Flipped row direction and reversed InstanceNumbers: the normal points to -z here.
    s = PhantomSeries(
        row_dir=(-1, 0, 0), col_dir=(0, 1, 0), origin=(20, -24, 18), reverse_instance_numbers=True
    )
    (plan,) = _plans(_assemble(write_series(tmp_path, s)))
    normal = np.cross(s.row_dir, s.col_dir)
    d = [float(np.dot(i.ipp, normal)) for i in plan.instances]
    assert d == sorted(d)
    numbers = [i.instance_number for i in plan.instances]
    assert numbers == sorted(numbers, reverse=True)  # InstanceNumber order would be backwards
    assert plan.slice_spacing == pytest.approx(3.0)
    assert plan.tilt_deg == pytest.approx(0.0, abs=1e-6)


def test_missing_slice_is_quarantined(tmp_path: Path) -> None:
    out = _assemble(write_series(tmp_path, PhantomSeries(drop_slices=[5])))
    assert _reasons(out) == [A.MISSING_SLICES] and not _plans(out)
    assert "1 slice(s) missing" in out[0].message  # type: ignore[union-attr]
    assert _covered(out) == 11


def test_uneven_spacing_is_quarantined(tmp_path: Path) -> None:
    out = _assemble(write_series(tmp_path, PhantomSeries(slices=6, extra_positions=[16.3])))
    assert _reasons(out) == [A.UNEVEN_SPACING]


def test_duplicate_positions_without_time_key_are_quarantined(tmp_path: Path) -> None:
    s = PhantomSeries(slices=5, overrides={2: {"ImagePositionPatient": ["-20", "-24", "-15"]}})
    out = _assemble(write_series(tmp_path, s))
    assert _reasons(out) == [A.DUPLICATE_POSITIONS]
    assert _covered(out) == 5


def test_several_acquisitions_are_split(tmp_path: Path) -> None:
    out = _assemble(write_series(tmp_path, PhantomSeries(slices=6, acquisitions=3)))
    plans = _plans(out)
    assert [p.part for p in plans] == ["a1", "a2", "a3"]
    assert all(len(p.instances) == 6 for p in plans)
    assert len({p.sample_id for p in plans}) == 3


def test_time_points_split_before_acquisitions(tmp_path: Path) -> None:
    paths = write_series(tmp_path, PhantomSeries(slices=4, acquisitions=2))
    for p in paths:  # both stacks in one acquisition, told apart by temporal position only
        ds = pydicom.dcmread(p)
        ds.TemporalPositionIdentifier = ds.AcquisitionNumber
        ds.AcquisitionNumber = 1
        ds.save_as(p)
    assert [p.part for p in _plans(_assemble(paths))] == ["t1", "t2"]


def test_mixed_orientation_is_split_and_single_slices_quarantined(tmp_path: Path) -> None:
    uid = "1.2.3.4.5.6.7"
    axial = write_series(tmp_path / "ax", PhantomSeries(name="ax", slices=4, series_uid=uid))
    sag = write_series(
        tmp_path / "sag",
        PhantomSeries(name="sag", slices=1, series_uid=uid, row_dir=(0, 1, 0), col_dir=(0, 0, -1)),
    )
    out = _assemble(axial + sag)
    plans = _plans(out)
    assert len(plans) == 1 and plans[0].part.startswith("g") and len(plans[0].instances) == 4
    assert _reasons(out) == [A.SINGLE_SLICE]
    assert _covered(out) == 5


def test_single_slice_series(tmp_path: Path) -> None:
    assert _reasons(_assemble(write_series(tmp_path, PhantomSeries(slices=1)))) == [A.SINGLE_SLICE]


def test_multiframe_and_enhanced_are_quarantined(tmp_path: Path) -> None:
    plain = write_series(tmp_path / "m", PhantomSeries(name="m", slices=1))[0]
    ds = pydicom.dcmread(plain)
    ds.NumberOfFrames = 2
    ds.save_as(plain)
    enhanced = write_series(tmp_path / "e", PhantomSeries(name="e", slices=1))[0]
    ds = pydicom.dcmread(enhanced)
    ds.NumberOfFrames = 2
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), Dataset()])
    ds.save_as(enhanced)
    assert _reasons(_assemble([plain, enhanced])) == [A.MULTIFRAME, A.MULTIFRAME_ENHANCED]


def test_localizer_and_missing_geometry(tmp_path: Path) -> None:
    loc = write_series(tmp_path / "l", PhantomSeries(name="l", slices=3, image_type=["LOCALIZER"]))
    nog = write_series(tmp_path / "n", PhantomSeries(name="n", slices=3))
    for p in nog:
        ds = pydicom.dcmread(p)
        del ds.ImagePositionPatient
        ds.save_as(p)
    assert _reasons(_assemble(loc + nog)) == [A.LOCALIZER, A.NO_GEOMETRY]


def test_non_collinear_positions(tmp_path: Path) -> None:
    s = PhantomSeries(slices=6, overrides={3: {"ImagePositionPatient": ["-19", "-24", "-9"]}})
    assert _reasons(_assemble(write_series(tmp_path, s))) == [A.NON_COLLINEAR]


def test_gantry_tilt_is_kept_with_its_angle(tmp_path: Path) -> None:
    (plan,) = _plans(_assemble(write_series(tmp_path, PhantomSeries(tilt_offset=(0, 0.5, 0)))))
    assert plan.tilt_deg == pytest.approx(np.degrees(np.arctan(0.5 / 3.0)), abs=0.01)
    assert "gantry tilt" in plan.notes[0]
    assert np.allclose(A.slice_step_lps(plan), [0, 0.5, 3.0])


def test_projection_is_a_2d_volume(tmp_path: Path) -> None:
    (plan,) = _assemble([write_projection(tmp_path)])
    assert isinstance(plan, A.VolumePlan) and plan.kind == A.KIND_PROJECTION


def test_unreadable_file_and_ids(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 300)
    assert A.read_instance(junk) is None
    assert A.sample_id("1.2.3") == A.sample_id("1.2.3")
    assert A.sample_id("1.2.3") != A.sample_id("1.2.3", "a1")
    assert len(A.sample_id("1.2.3")) == 16 and "1.2.3" not in A.sample_id("1.2.3")


def test_source_digest_follows_content(tmp_path: Path) -> None:
    paths = write_series(tmp_path, PhantomSeries(slices=3))
    infos = [A.read_instance(p, sha256=f"sha{k}") for k, p in enumerate(paths)]
    (plan,) = A.assemble([i for i in infos if i is not None], CFG)
    same = A.source_digest(plan)
    infos[0] = A.read_instance(paths[0], sha256="changed")
    (plan2,) = A.assemble([i for i in infos if i is not None], CFG)
    assert A.source_digest(plan) == same != A.source_digest(plan2)


def test_age_parsing() -> None:
    assert age_years("045Y") == 45.0
    assert age_years("006M") == 0.5
    assert age_years("") is None and age_years("abc") is None


def test_same_instance_twice_is_used_once(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "a", PhantomSeries(slices=4))
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(paths[1].read_bytes())
    out = _assemble([*paths, copy])
    assert _reasons(out) == [A.DUPLICATE_INSTANCE]
    assert len(_plans(out)[0].instances) == 4 and _covered(out) == 5


def _pydicom_files() -> list[Path]:
    files = [Path(f) for f in pydicom.data.get_testdata_files()]
    data_store = pytest.importorskip("data_store")
    return files + sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))


@pytest.mark.filterwarnings("ignore")
def test_header_values_are_pydicoms_whatever_the_encoding() -> None:
    """``_get`` converts plain-VR elements itself: for every element of pydicom's test files
    (implicit and explicit VR, big endian, odd values) it gives ``Dataset.get``'s value and type."""
    checked = 0
    for path in _pydicom_files():
        try:
            mine = pydicom.dcmread(path, stop_before_pixels=True)
            theirs = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # not DICOM on purpose
        for tag in list(mine.keys()):
            keyword = pydicom.datadict.keyword_for_tag(tag)
            if not keyword:
                continue
            value, expected = A._get(mine, keyword), theirs.get(keyword)
            assert type(value) is type(expected) and value == expected, (path.name, keyword)
            checked += 1
    assert checked > 10_000


def test_pixel_layout_is_recorded_for_native_grey_frames_only(tmp_path: Path) -> None:
    (ct, *_) = write_series(tmp_path / "ct", PhantomSeries(slices=2))
    info = A.read_instance(ct)
    assert info is not None and info.pixels is not None
    ds = pydicom.dcmread(ct)
    layout = info.pixels
    assert (layout.dtype, layout.shift, layout.rows, layout.cols) == ("<i2", 0, ds.Rows, ds.Columns)
    assert layout.rescale == (1.0, -1024.0) and not layout.monochrome1
    raw = np.fromfile(ct, dtype="<i2", count=ds.Rows * ds.Columns, offset=layout.offset)
    assert raw.tobytes() == ds.PixelData[: raw.nbytes]
    proj = A.read_instance(write_projection(tmp_path / "cr"))
    assert proj is not None and proj.pixels is not None and proj.pixels.monochrome1
    for name in ("MR_small_bigendian.dcm", "JPEG2000.dcm", "emri_small.dcm", "SC_rgb.dcm"):
        other = A.read_instance(pydicom.data.get_testdata_file(name))  # type: ignore[arg-type]
        assert other is not None and other.pixels is None, name
    ds.PixelData = ds.PixelData[:100]  # shorter than its frame: pydicom decides (and fails)
    ds.save_as(tmp_path / "short.dcm")
    short = A.read_instance(tmp_path / "short.dcm")
    assert short is not None and short.pixels is None
