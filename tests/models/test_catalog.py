"""The catalog looks one name up as its full listing would find it.

``Catalog.get`` reads only the sources that could hold the name asked for
(every routed request misses here first); ``Catalog.list`` reads them all.
Both must agree on every name, whichever source a later one overrides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blackroad.errors import ModelNotFound
from blackroad.models.bundled import bundled_models
from blackroad.models.catalog import Catalog
from blackroad.store.database import Database
from tests.conftest import SMOLLM2


def test_one_name_is_found_where_the_whole_listing_finds_it(tmp_path: Path) -> None:
    gguf = bundled_models()[SMOLLM2]
    database = Database(tmp_path / "blackroad.db")
    try:
        catalog = Catalog(tmp_path / "models", database)
        # Dropped into the directory: "dropped:latest" and "twice:latest" ...
        for stem in ("dropped", "twice"):
            (catalog.models_dir / f"{stem}.gguf").symlink_to(gguf)
        # ... and "twice" added by name as well: the added file wins the clash.
        added = tmp_path / "elsewhere.gguf"
        added.symlink_to(gguf)
        catalog.add(added, "twice")

        listed = {entry.name: (entry.source, entry.path) for entry in catalog.list()}
        assert listed["dropped:latest"][0] == "directory"
        assert listed["twice:latest"] == ("added", added.resolve())
        assert listed[SMOLLM2][0] == "bundled"
        for name, (source, path) in listed.items():
            entry = catalog.get(name)
            assert (entry.source, entry.path) == (source, path), name
        with pytest.raises(ModelNotFound):
            catalog.get("only-on-peers:1b")
    finally:
        database.close()
