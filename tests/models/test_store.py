"""The model store's blobs when several writers add the same one at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from blackroad.models.store import ModelStore


def test_one_blob_added_by_many_writers_at_once_is_added_once_without_error(
    tmp_path: Path,
) -> None:
    # Every writer used one partial file: a second create from the same file found
    # it linked already and copied the file onto itself (SameFileError, a 500), and a
    # second upload's rename left the first's commit nothing to verify.
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" + bytes(range(256)) * 4096)
    store = ModelStore(tmp_path / "models")
    with ThreadPoolExecutor(8) as pool:
        from_files = list(pool.map(lambda _: store.add_file(source, "m"), range(32)))
        from_bytes = list(pool.map(lambda _: store.add_bytes(b"{}", "c"), range(32)))
    assert len({layer.digest for layer in from_files}) == 1
    assert len({layer.digest for layer in from_bytes}) == 1
    assert store.has_blob(from_files[0].digest) and store.has_blob(from_bytes[0].digest)
    assert sorted(p.name for p in store.blobs_dir.iterdir()) == sorted(
        store.blob_path(layer.digest).name for layer in (from_files[0], from_bytes[0])
    )
    assert source.read_bytes() == b"GGUF" + bytes(range(256)) * 4096
