"""Time `ncfm split_train_val` on N real photos and record its peak memory (docs/folds.md, "Big
competitions").

    apt-get install dataset-fashion-mnist
    python scripts/bench_split.py WORK [--sizes 10000 50000 100000 200000] [--groups boat auto]
        [--folds 5] [--table docs/raw/cpu-2026-12-05/split_scaling.md]

WORK gets one data folder per N, fm-N/, in Dog Breed Identification's layout (train/<id>.png,
labels.csv, a small test/ and sample_submission.csv): Fashion-MNIST's photos at 56x56, all of one
size, so every image lands in one size bucket of the boat grouping, which is the hard case. The 70,000
photos of both of the data set's splits are used first; beyond them each further image is a
photo shifted by a few pixels (odd copies also mirrored), as consecutive frames of a camera are.
The images are written once into WORK/pool/ and hard-linked into each fm-N/train/.

Each split runs in a process of its own (`ncfm split_train_val ... --force`); the table
gives its wall time and peak memory: the largest resident set of the command or any of its
decoding workers (os.wait4's ru_maxrss), the figure `/usr/bin/time -v` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASSES, SOURCE, read_idx  # noqa: E402

SIDE = 56
N_TEST = 100


def _photos(source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    """Both splits of Fashion-MNIST: (70,000 x 28 x 28 uint8, labels)."""
    images = [read_idx(source / f"{s}-images-idx3-ubyte.gz") for s in ("train", "t10k")]
    labels = [read_idx(source / f"{s}-labels-idx1-ubyte.gz") for s in ("train", "t10k")]
    return np.concatenate(images), np.concatenate(labels)


def _picture(photos: np.ndarray, i: int) -> np.ndarray:
    """Image i of the pool at SIDE x SIDE: photo i % 70,000, copy k = i // 70,000 shifted by 2k
    pixels (and mirrored when k is odd)."""
    from PIL import Image

    base, copy = i % len(photos), i // len(photos)
    big = np.asarray(Image.fromarray(photos[base]).resize((SIDE, SIDE), Image.BILINEAR))
    if copy:
        big = np.roll(big, (2 * copy, -2 * copy), axis=(0, 1))
        if copy % 2:
            big = big[:, ::-1]
    return big


def _write_range(args) -> int:
    pool, start, stop = args
    from PIL import Image

    photos, _ = _photos()
    for i in range(start, stop):
        path = pool / f"{i:06d}.png"
        if not path.exists():
            Image.fromarray(np.ascontiguousarray(_picture(photos, i))).save(path)
    return stop - start


def write_pool(work: Path, n: int, workers: int) -> None:
    from concurrent.futures import ProcessPoolExecutor

    pool = work / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    have = sum(1 for _ in pool.glob("*.png"))
    if have >= n:
        return
    step = 5000
    jobs = [(pool, a, min(n, a + step)) for a in range(0, n, step)]
    print(f"writing {n} images into {pool} ({workers} processes)", flush=True)
    with ProcessPoolExecutor(workers) as ex:
        done = 0
        for k in ex.map(_write_range, jobs):
            done += k
            print(f"  {done}/{n}", flush=True)


def write_layout(work: Path, n: int, labels: np.ndarray) -> Path:
    """fm-N/: train/ hard links to the pool's first N images, labels.csv, a test folder and its sample
    submission (the test images are the pool's last N_TEST real photos; they are not part of any split)."""
    out = work / f"fm-{n}"
    if (out / "labels.csv").exists():
        return out
    pool = work / "pool"
    for folder in ("train", "test"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        target = out / "train" / f"{i:06d}.png"
        if not target.exists():
            os.link(pool / f"{i:06d}.png", target)
        rows.append(f"{i:06d},{CLASSES[labels[i % len(labels)]]}\n")
    test_ids = range(len(labels) - N_TEST, len(labels))
    for i in test_ids:
        target = out / "test" / f"t{i:06d}.png"
        if not target.exists():
            os.link(pool / f"{i:06d}.png", target)
    uniform = ",".join([f"{1 / len(CLASSES):.6f}"] * len(CLASSES))
    (out / "sample_submission.csv").write_text(
        "id," + ",".join(CLASSES) + "\n" + "".join(f"t{i:06d},{uniform}\n" for i in test_ids))
    (out / "labels.csv").write_text("id,label\n" + "".join(rows))
    return out


def time_split(data: Path, groups: str, folds: int) -> dict:
    out = data / f"folds-{groups}.csv"
    cmd = [sys.executable, "-c", "import sys; from ncfm.cli import main; sys.exit(main())", "split_train_val", "--data-dir", str(data), "--folds", str(folds),
           "--groups", groups, "--out", str(out), "--force"]
    log = data / f"split-{groups}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}; see {log}")
    meta = json.loads(out.with_suffix(".json").read_text())
    return {"images": meta["n_images"], "groups_asked": groups, "groups": meta["groups"],
            "n_groups": meta["n_groups"], "wall_s": round(wall, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 2)}


def table(rows: list[dict]) -> str:
    lines = ["| training images | --groups | wall s | peak memory (RSS) | groups used | groups |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['images']:,} | {r['groups_asked']} | {r['wall_s']} | {r['peak_rss_gb']} GB | {r['groups']} | "
              f"{r['n_groups']:,} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="folder for the images (about 2 GB for 200,000)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000, 200_000])
    p.add_argument("--groups", nargs="+", default=["boat", "auto"], choices=["auto", "boat", "size", "none"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing the images")
    p.add_argument("--table", type=Path, help="also write the table (markdown) and the rows (JSON beside it)")
    args = p.parse_args(argv)
    missing = [s for s in ("train", "t10k") if not (SOURCE / f"{s}-images-idx3-ubyte.gz").is_file()]
    if missing:
        raise SystemExit(f"{SOURCE}: Fashion-MNIST not found; install Debian's dataset-fashion-mnist")
    _, labels = _photos()
    write_pool(args.work, max(args.sizes), args.workers)
    rows = []
    for n in sorted(args.sizes):
        data = write_layout(args.work, n, labels)
        for groups in args.groups:
            row = time_split(data, groups, args.folds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = table(rows)
    print(text)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text + "\n")
        args.table.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
