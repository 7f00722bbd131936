"""Benchmark stages of search: exact and indexed queries, cold scans, storage, quality.

Run through ``benchmarks/run.py``; see its docstring."""

from __future__ import annotations

import io
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import Row, median_ms
from ingest_bench import window_plans

from ris_ray.model.embed import Embedder
from ris_ray.raster.reading import probe, read_patch
from ris_ray.raster.tiling import TileSpec


def bench_query(sizes: list[int], work: Path, ann_at: int | None) -> list[Row]:
    import faiss
    import lance

    from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
    from ris_ray.search.index import build_index
    from ris_ray.search.query import search
    from ris_ray.search.scan import FlatScan

    rows: list[Row] = []
    k, n_queries = 10, 5
    for n in sizes:
        x = synthetic_fingerprints(n, seed=n)
        qs = x[np.linspace(0, n - 1, n_queries).astype(int)] + 0.05
        db = work / f"q{n}.lance"
        # float32, so the Lance rows compare with FAISS on the same values
        # (stage 4b compares the float16 default against it)
        write_fingerprint_dataset(str(db), x, fingerprint="float32")

        def lance_scan(q: np.ndarray, ds: Any = None) -> list[int]:
            ds = ds or lance.dataset(str(db))
            nb, _ = search(ds, q, k, exact=True)
            return [int(t.tile_id, 16) for t in nb]

        cold = statistics.median(median_ms(lambda q=q: lance_scan(q), 1) for q in qs)
        ds = lance.dataset(str(db))
        warm_lance = statistics.median(median_ms(lambda q=q: lance_scan(q, ds), 1) for q in qs)
        scan = FlatScan(x)
        warm = statistics.median(median_ms(lambda q=q: scan.search(q, k), 3) for q in qs)
        brute = statistics.median(
            median_ms(lambda q=q: np.argpartition(((x - q) ** 2).sum(axis=1), k)[:k], 1) for q in qs
        )
        flat = faiss.IndexFlatL2(x.shape[1])
        flat.add(x)
        fa = statistics.median(median_ms(lambda q=q: flat.search(q[None], k), 3) for q in qs)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query: FAISS is often fastest single-threaded
        fa1 = statistics.median(median_ms(lambda q=q: flat.search(q[None], k), 3) for q in qs)
        faiss.omp_set_num_threads(threads)
        same = all(
            lance_scan(q, ds)
            == scan.search(q, k)[0].tolist()
            == flat.search(q[None], k)[1][0].tolist()
            for q in qs
        )
        half = FlatScan(x.astype(np.float16).astype(np.float32))
        recall16 = np.mean(
            [len(set(half.search(q, k)[0]) & set(scan.search(q, k)[0])) / k for q in qs]
        )
        rows.append(
            {
                "N": n,
                "lance cold ms": cold,
                "lance warm ms": warm_lance,
                "in-memory scan ms": warm,
                "numpy brute ms": brute,
                "faiss flat ms": fa,
                "faiss flat 1 thread ms": fa1,
                "scan/best faiss": warm / min(fa, fa1),
                "same top-k": same,
                "fp16 recall@10": float(recall16),
            }
        )
        if ann_at == n:
            info = build_index(str(db))
            ds = lance.dataset(str(db))
            hits, t_ann, t_exact = 0, [], []
            for q in qs:
                t0 = time.perf_counter()
                approx, _ = search(ds, q, k)
                t_ann.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                exact, _ = search(ds, q, k, exact=True)
                t_exact.append(time.perf_counter() - t0)
                hits += len({a.tile_id for a in approx} & {e.tile_id for e in exact})
            rows.append(
                {
                    "N": f"{n} IVF_PQ ({info['partitions']}p, built {info['seconds']} s)",
                    "lance warm ms": statistics.median(t_ann) * 1000,
                    "scan/best faiss": None,
                    "same top-k": None,
                    "fp16 recall@10": None,
                    "ann recall@10": hits / (k * len(qs)),
                    "speed-up vs exact": statistics.median(t_exact) / statistics.median(t_ann),
                }
            )
        shutil.rmtree(db, ignore_errors=True)
    return rows


def _drop_caches() -> bool:
    """Empty the page cache (root only): ``sync; echo 3 > /proc/sys/vm/drop_caches``."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def bench_cold_scan(n: int, work: Path, queries: int = 3) -> list[Row]:
    """Exact Lance scan of ``n`` rows with a truly cold page cache, float32 vs
    float16 fingerprints, beside a raw read of the same data files
    (``cat files > /dev/null`` after another drop). Needs root."""
    import subprocess

    import lance

    from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset
    from ris_ray.search.query import search

    if not _drop_caches():
        return [{"fingerprint": "skipped: cannot drop the page cache (not root)"}]
    x = synthetic_fingerprints(n, seed=n)
    qs = x[np.linspace(0, n - 1, queries).astype(int)] + 0.05
    rows: list[Row] = []
    for fp in ("float32", "float16"):
        db = work / f"cold-{fp}.lance"
        write_fingerprint_dataset(str(db), x, fingerprint=fp)
        files = sorted(str(p) for p in (db / "data").glob("*.lance"))
        scan_ms, raw_ms = [], []
        for q in qs:
            _drop_caches()
            t0 = time.perf_counter()
            search(lance.dataset(str(db)), q, 10, exact=True)
            scan_ms.append((time.perf_counter() - t0) * 1000)
            _drop_caches()
            t0 = time.perf_counter()
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            raw_ms.append((time.perf_counter() - t0) * 1000)
        ds = lance.dataset(str(db))
        search(ds, qs[0], 10, exact=True)
        warm = statistics.median(
            median_ms(lambda q=q: search(ds, q, 10, exact=True), 1) for q in qs
        )
        rows.append(
            {
                "N": n,
                "fingerprint": fp,
                "data MB": _data_bytes(db) / 1e6,
                "cold exact scan ms": statistics.median(scan_ms),
                "cold raw read ms": statistics.median(raw_ms),
                "scan / raw read": statistics.median(scan_ms) / statistics.median(raw_ms),
                "warm exact scan ms": warm,
            }
        )
        shutil.rmtree(db, ignore_errors=True)
    return rows


# ------------------------------------------------------------------ 6. storage


def _data_bytes(uri: Path) -> int:
    """Bytes of a Lance dataset's data files (``data/*.lance``), without the
    manifests, transactions and the ingest manifest beside them."""
    return sum(p.stat().st_size for p in (uri / "data").glob("*.lance"))


def bench_storage(db: Path, data: Path, work: Path) -> list[Row]:
    """Bytes per tile in the data files of a real ingest (``db``: shared data,
    shipped defaults) beside the same rows as earlier code stored them,
    written the same way: "before" issue 11 (96 px JPEG q85 thumbnails from
    ``legacy_read_tiles``, float32 fingerprints) and "previous" (64 px
    thumbnails made in the tiling task, ``tiler_read_tiles``; float16)."""
    import lance
    from legacy_tiling import legacy_read_tiles, tiler_read_tiles

    from ris_ray.store.schema import cast_fingerprints

    ds = lance.dataset(str(db))
    table = ds.to_table()
    spec = TileSpec(256, 256, 0.5, ds.schema.metadata[b"ris_ray.model"].decode())
    versions: list[tuple[str, Path, Any]] = []
    for name, read, fingerprint in (
        ("before", lambda i, j: legacy_read_tiles(i, j, spec, 96), "float32"),
        ("previous", lambda i, j: tiler_read_tiles(i, j, spec), "float16"),
    ):
        thumbs: dict[tuple[str, int, int], bytes] = {}
        for info, j in window_plans(data, 2048):
            batch, _ = read(info, j)
            keys = zip(batch.source, batch.row.tolist(), batch.col.tolist(), strict=True)
            thumbs.update(zip((_tile_key(*k) for k in keys), batch.thumbnail, strict=True))
        old = cast_fingerprints(table, fingerprint)
        i = old.schema.get_field_index("thumbnail")
        where = zip(*(old[c].to_pylist() for c in ("source", "row", "col")), strict=True)
        column = pa_binary([thumbs.get(_tile_key(*k)) for k in where])
        old = old.set_column(i, old.schema.field(i), column)
        uri = work / f"storage-{name}.lance"
        lance.write_dataset(old, str(uri), data_storage_version=ds.data_storage_version)
        versions.append((name, uri, old))
    rows: list[Row] = []
    for name, uri, t in (*versions, ("after", db, table)):
        n = t.num_rows
        fp = t.schema.field("fingerprint").type.value_type
        rows.append(
            {
                "code": name,
                "rows": n,
                "data bytes/tile": _data_bytes(uri) / n,
                "thumbnail bytes/tile": sum(len(b or b"") for b in t["thumbnail"].to_pylist()) / n,
                "fingerprint": f"{fp}[512]",
                "float32 tile (786432 B) / ours": 786432 / (_data_bytes(uri) / n),
            }
        )
    return rows


def _tile_key(source: str, row: int, col: int) -> tuple[str, int, int]:
    """A tile by file name (without the end-to-end stage's ``copyN_`` prefix) and origin."""
    return re.sub(r"^copy\d+_", "", Path(source).name), row, col


def pa_binary(values: list[bytes | None]) -> Any:
    import pyarrow as pa

    return pa.array(values, pa.binary())


# ------------------------------------------------------------------ quality


def bench_quality(db: Path, weights: list[str]) -> list[Row]:
    """Recall@1/@10 of perturbed queries; relevant = the stored tile overlapping most."""
    import lance
    from PIL import Image, ImageEnhance

    from ris_ray.search.scan import FlatScan

    rows: list[Row] = []
    ds = lance.dataset(str(db))
    meta = ds.to_table(columns=["source", "row", "col"]).to_pylist()
    scan = FlatScan.from_dataset(ds)

    def jpeg(px: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="JPEG", quality=75)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    def bright(f: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda px: np.asarray(ImageEnhance.Brightness(Image.fromarray(px)).enhance(f))

    infos: dict[str, Any] = {}
    for w in weights:
        emb = Embedder(w, device="cpu")
        if emb.model_id != ds.schema.metadata[b"ris_ray.model"].decode():
            continue  # the dataset's vectors come from another model
        perturb: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray] | None]] = {
            "shift 16 px": (16, None),
            "shift 32 px": (32, None),
            "shift 64 px": (64, None),
            "brightness +10%": (0, bright(1.1)),
            "brightness -10%": (0, bright(0.9)),
            "JPEG q75": (0, jpeg),
        }
        for name, (shift, fn) in perturb.items():
            queries, relevant = [], []
            for i, m in enumerate(meta):
                if m["source"] not in infos:
                    infos[m["source"]] = probe(m["source"])
                info = infos[m["source"]]
                c = m["col"] + shift if m["col"] + shift + 256 <= info.width else m["col"] - shift
                r = m["row"] + shift if m["row"] + shift + 256 <= info.height else m["row"] - shift
                if c < 0 or r < 0:
                    continue
                px = read_patch(m["source"], (c, r, 256, 256), 256)
                queries.append(fn(px) if fn else px)
                relevant.append(_most_overlap(meta, m["source"], r, c, i))
            vecs = emb.embed(np.stack(queries))
            top = [scan.search(v, 10)[0] for v in vecs]
            rows.append(
                {
                    "weights": emb.model_id,
                    "perturbation": name,
                    "queries": len(queries),
                    "recall@1": np.mean([t[0] == rel for t, rel in zip(top, relevant)]),
                    "recall@10": np.mean([rel in t for t, rel in zip(top, relevant)]),
                }
            )
    return rows


def _most_overlap(meta: list[Row], source: str, r: int, c: int, default: int) -> int:
    best, best_area = default, -1
    for j, m in enumerate(meta):
        if m["source"] != source:
            continue
        area = max(0, 256 - abs(m["row"] - r)) * max(0, 256 - abs(m["col"] - c))
        if area > best_area:
            best, best_area = j, area
    return best


# ------------------------------------------------------------------ main
