"""medcurate: the domain core (io, ingest, deid, normalize, synth, splits, store, services, cli).

It imports none of the rooms above it (annotation, quality, assets, pipelines) and never dagster:
tests/test_layout.py checks it. Rooms above add CLI commands through the ``medcurate.commands``
entry point group (see :mod:`medcurate.cli`)."""
