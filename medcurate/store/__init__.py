"""Immutable, content-addressed dataset versions: publish, list, show, pull, diff.

Layout under the store root (``MEDCURATE_HOME/releases`` or any fsspec URL)::

    objects/sha256/<2 hex>/<64 hex>     every file once, addressed by its sha256
    <dataset>/<vN>/manifest.parquet     one row per sample, with the sha256 of each file
    <dataset>/<vN>/dataset.json         MONAI datalist (training / validation / test)
    <dataset>/<vN>/card.md              datasheet
    <dataset>/<vN>/version.json         id, manifest digest, sha256 of the files above;
                                        written last: a version without it does not exist
"""

from medcurate.store.objects import ObjectStore, StoreError, TamperedObjectError, open_store

__all__ = ["ObjectStore", "StoreError", "TamperedObjectError", "open_store"]
