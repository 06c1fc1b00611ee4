from pathlib import Path

import pytest

from medcurate.config import ConfigError, MissingSaltError, Zones, deid_salt, medcurate_home, zones


def test_home_from_environment(tmp_path: Path) -> None:
    assert medcurate_home({"MEDCURATE_HOME": str(tmp_path)}) == tmp_path.resolve()
    assert zones({"MEDCURATE_HOME": str(tmp_path)}).restricted == tmp_path.resolve() / "restricted"


def test_zones_keep_identifying_data_under_restricted(tmp_path: Path) -> None:
    z = Zones(tmp_path).ensure()
    for p in (z.raw, z.quarantine, z.duplicates, z.catalog):
        assert p.is_relative_to(z.restricted)
        assert p.is_dir()
    for p in (z.deid, z.volumes, z.labels, z.releases):
        assert not p.is_relative_to(z.restricted)


def test_missing_salt_is_a_clear_error() -> None:
    with pytest.raises(MissingSaltError, match="MEDCURATE_DEID_SALT"):
        deid_salt({})


def test_short_salt_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as err:
        deid_salt({"MEDCURATE_DEID_SALT": "abc"})
    assert "abc" not in str(err.value)


def test_salt_bytes() -> None:
    # was "0123456789": a run of digits is now refused as guessable (issue 9, row 9)
    assert deid_salt({"MEDCURATE_DEID_SALT": "k3Jq-9vXw_T2mZ8r"}) == b"k3Jq-9vXw_T2mZ8r"


def test_zones_own_the_paths_of_ingest_deid_and_normalize(tmp_path: Path) -> None:
    z = Zones(tmp_path)
    restricted = [
        z.raw_batch("b1"), z.quarantine_batch("b1"), z.duplicates_batch("b1"),
        z.catalog_file("b1"), z.catalog_pending("b1"), z.catalog_lock, z.claim_lock,
        z.ingest_reasons("b1"), z.deid_quarantine_batch("b1"), z.deid_reasons("b1"),
        z.crosswalk("b1"),
    ]  # fmt: skip
    assert all(p.is_relative_to(z.restricted) for p in restricted)
    assert len(set(restricted)) == len(restricted)
    assert z.deid_manifest("b1") == z.deid / "manifests" / "b1.parquet"
    assert z.volumes_quarantine.parent == z.volumes == z.volume_file("x.nii.gz").parent
    assert z.volumes_lock.parent == z.volumes
    # the reasons file sits beside the batch's quarantine folder, never inside it
    assert not z.ingest_reasons("b1").is_relative_to(z.quarantine_batch("b1"))
