"""One file, one identity: symlinks and hard links to one file are read and stored once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lance

from ris_ray.ingest.inputs import discover


def test_discover_resolves_links_and_deduplicates_inodes(gen_dir: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    shutil.copytree(gen_dir, real)
    (tmp_path / "via").symlink_to(real)  # the same directory by another path
    os.link(real / "rgb.tif", real / "rgb_hardlink.tif")
    (real / "link.tif").symlink_to(real / "fill.tif")
    (real / "broken.tif").symlink_to(real / "does-not-exist.tif")
    plain = discover([str(real)])
    assert discover([str(tmp_path / "via")]) == plain
    assert discover([str(real), str(tmp_path / "via"), str(real / "rgb.tif")]) == plain
    names = [Path(p).name for p in plain]
    assert "link.tif" not in names and names.count("fill.tif") == 1
    assert "rgb.tif" in names and "rgb_hardlink.tif" not in names  # first real path wins
    assert str(real / "broken.tif") in plain  # a broken link keeps its path (and fails)
    assert all(p == os.path.realpath(p) for p in plain if not p.endswith("broken.tif"))


def test_reingest_through_a_symlinked_path_stores_nothing_twice(
    ray_session: None, gen_dir: Path, tmp_path: Path
) -> None:
    from ris_ray.core.config import IngestConfig
    from ris_ray.ingest.pipeline import ingest

    real = tmp_path / "real"
    shutil.copytree(gen_dir, real)
    (tmp_path / "via").symlink_to(real)
    db = str(tmp_path / "t.lance")
    first = ingest(IngestConfig(inputs=(str(real),), db=db, weights="random", progress=False))
    assert first.tiles_written == 7
    again = ingest(
        IngestConfig(inputs=(str(tmp_path / "via"),), db=db, weights="random", progress=False)
    )
    assert again.tiles_written == 0 and not again.files_read and not again.missing
    assert lance.dataset(db).count_rows() == 7
