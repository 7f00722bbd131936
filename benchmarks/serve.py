"""``ris serve`` vs ``ris query``: latency and throughput on one dataset, one run.

    .venv/bin/python benchmarks/serve.py                 # 1M synthetic fingerprints
    .venv/bin/python benchmarks/serve.py --n 100000      # quicker

Builds a dataset of ``--n`` synthetic fingerprints (ris_ray.sample), then:

1. ``ris query --json`` as a process per question (wall time, and the
   search time it reports), without an index;
2. ``ris serve`` started once (start-up time to the first answer), then warm
   ``GET /api/query?tile_id=..&exact=true`` (the in-memory exact scan);
3. ``ris index`` (IVF_PQ) built while the server runs: the server picks the
   new version up by itself (reload time measured), then warm queries through
   the index, sequential and from 1, 2, 4, 8 concurrent clients;
4. ``ris query`` again, now with the index.

Every request goes to 127.0.0.1; every loop is bounded. Prints a Markdown
table and writes ``bench-out/serve.json``. Timings on a shared machine are
noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ris_ray.sample import synthetic_fingerprints, write_fingerprint_dataset  # noqa: E402
from ris_ray.search.index import build_index  # noqa: E402

Row = dict[str, Any]
K = 10
RIS = [sys.executable, "-m", "ris_ray.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ids(n: int, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{int(i):020x}" for i in rng.choice(n, size=count, replace=False)]


def _cli(db: Path, ids: list[str], extra: list[str]) -> Row:
    walls, search = [], []
    for tid in ids:
        t0 = time.perf_counter()
        out = subprocess.run(
            [*RIS, "query", "--db", str(db), "--tile-id", tid, "-k", str(K), "--json", *extra],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        walls.append((time.perf_counter() - t0) * 1000)
        search.append(json.loads(out)["search_ms"])
    return {"p50 ms": float(np.median(walls)), "search ms": float(np.median(search))}


def _latencies(url: str, ids: list[str], params: dict[str, str]) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for tid in ids:
            t0 = time.perf_counter()
            r = client.get("/api/query", params={"tile_id": tid, "k": str(K), **params})
            out.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
    return out


def _summary(lat: list[float], seconds: float | None = None) -> Row:
    row: Row = {
        "p50 ms": float(np.percentile(lat, 50)),
        "p95 ms": float(np.percentile(lat, 95)),
    }
    if seconds is not None:
        row["queries/s"] = len(lat) / seconds
    return row


def _concurrent(url: str, ids: list[str], clients: int, params: dict[str, str]) -> Row:
    parts: list[list[float]] = [[] for _ in range(clients)]

    def work(i: int) -> None:
        parts[i] = _latencies(url, ids[i::clients], params)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary([v for p in parts for v in p], time.perf_counter() - t0)


def _wait(url: str, proc: subprocess.Popen[bytes], limit_s: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        if proc.poll() is not None:
            raise RuntimeError("ris serve exited")
        try:
            if httpx.get(f"{url}/api/info", timeout=5).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("ris serve did not come up")


def _wait_index(url: str, limit_s: float = 600) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        if httpx.get(f"{url}/api/info", timeout=60).json()["indexes"].get("l2"):
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise TimeoutError("the server did not pick up the index")


def run(n: int, queries: int, work: Path) -> list[Row]:
    db = work / f"serve{n}.lance"
    shutil.rmtree(db, ignore_errors=True)
    write_fingerprint_dataset(str(db), synthetic_fingerprints(n, seed=n))
    ids = _ids(n, queries, seed=1)
    rows: list[Row] = []
    cli_ids = ids[:3]
    rows.append({"path": "ris query (process per query), exact", **_cli(db, cli_ids, ["--exact"])})

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*RIS, "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        start = _wait(url, proc)
        rows.append({"path": "ris serve start-up to first answer", "p50 ms": start * 1000})
        exact = {"exact": "true"}
        _latencies(url, ids[:5], exact)  # warm-up
        few = ids[: max(20, queries // 5)]
        rows.append(
            {"path": "ris serve, exact in-memory scan", **_summary(_latencies(url, few, exact))}
        )
        rows.append({"path": "ris serve, exact, 8 clients", **_concurrent(url, few, 8, exact)})

        t0 = time.perf_counter()
        info = build_index(str(db))
        built = time.perf_counter() - t0
        reload_s = _wait_index(url)
        rows.append(
            {
                "path": f"ris index ({info['partitions']} partitions) built; server reloaded",
                "p50 ms": reload_s * 1000,
                "note": f"index build {built:.1f} s",
            }
        )
        _latencies(url, ids[:5], {})
        rows.append({"path": "ris serve, IVF_PQ index", **_summary(_latencies(url, ids, {}))})
        for clients in (1, 2, 4, 8):
            rows.append(
                {
                    "path": f"ris serve, IVF_PQ, {clients} clients",
                    **_concurrent(url, ids, clients, {}),
                }
            )
    finally:
        proc.terminate()
        proc.wait(30)
    rows.append({"path": "ris query (process per query), IVF_PQ", **_cli(db, cli_ids, [])})
    shutil.rmtree(db, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="fingerprints in the dataset")
    ap.add_argument("--queries", type=int, default=200, help="queries per measured row")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    ap.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = ap.parse_args()
    rows = run(args.n, args.queries, args.work)
    cols = ["path", "p50 ms", "p95 ms", "queries/s", "search ms", "note"]
    print(f"\n**ris serve vs ris query, {args.n} fingerprints, k={K}**\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [r.get(c) for c in cols]
        print(
            "| "
            + " | ".join(
                "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells
            )
            + " |"
        )
    args.out.mkdir(exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps({"n": args.n, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
