"""Fictional identities: name forms, sites, vendors."""

from __future__ import annotations

import numpy as np

from medcurate.synth.identities import Person, ascii_fold, make_identity, make_sites


def test_name_forms() -> None:
    p = Person("Zoë", "Van der Berg")
    assert p.pn == "VAN DER BERG^ZOË"
    assert p.plain == "Zoë Van der Berg"
    assert p.folder == "VAN_DER_BERG_ZOE"
    assert ascii_fold("Müller") == "Muller"
    dr = Person("Alice", "Okonkwo-Reyes", "Dr")
    assert dr.pn_staff == "Okonkwo-Reyes^Alice^^Dr" and dr.pn_staff in dr.forms()


def test_sites_differ_in_vendor_and_prevalence() -> None:
    sites = make_sites(np.random.default_rng(0))
    assert len(sites) == 4
    assert len({s.vendor.manufacturer for s in sites}) == 4
    assert len({s.prevalence for s in sites}) == 4
    assert min(s.prevalence for s in sites) <= 0.2 and max(s.prevalence for s in sites) >= 0.5
    staff = [p.pn for s in sites for p in s.staff]
    assert len(set(staff)) == len(staff)


def test_identity_is_fictional_and_well_formed() -> None:
    rng = np.random.default_rng(1)
    sites = make_sites(rng)
    used: set[tuple[str, str]] = set()
    ids = [make_identity(rng, sites[0], sites[1], "F", used) for _ in range(20)]
    assert len({i.person for i in ids}) == 20
    for i in ids:
        assert i.mrn.startswith(sites[0].mrn_prefix) and i.other_id.startswith(sites[1].mrn_prefix)
        assert "555-01" in i.phone  # the block reserved for fiction
        assert i.other_issuer == sites[1].institution
