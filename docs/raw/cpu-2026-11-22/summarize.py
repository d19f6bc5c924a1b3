#!/usr/bin/env python3
"""Medians over the repeated bench runs in docs/raw/cpu-2026-11-22/*.json -> markdown tables (stdout)."""
import glob
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = [("train_images_per_s", "train img/s", ".1f"),
        ("train_images_per_cpu_s", "train img/CPU-s", ".2f"), ("time_to_first_step_s", "first step s", ".1f"),
        ("decode_images_per_s", "decode img/s (wall, 2 cores)", ".0f"),
        ("decode_images_per_cpu_s", "decode img/CPU-s (per core)", ".0f"),
        ("predict_views_per_s", "predict views/s", ".1f")]


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def fmt(v, f):
    return "" if v is None else format(v, f)


for group in ("tf_75", "jax_75", "tf_299"):
    files = sorted(glob.glob(str(HERE / f"{group}_run*.json")))
    if not files:
        continue
    runs = [json.loads(Path(f).read_text()) for f in files]
    print(f"### {group} ({len(runs)} run(s); load averages at start/end: "
          + "; ".join(f"{r['meta']['machine'].get('loadavg_start')} / {r['meta']['machine'].get('loadavg_end')}" for r in runs) + ")\n")
    by = {}
    for r in runs:
        for row in r["rows"]:
            by.setdefault(row["label"], []).append(row)
    print("| run | " + " | ".join(h for _, h, _ in KEYS) + " | per-run train img/s |")
    print("|---" * (len(KEYS) + 2) + "|")
    for label, rows in by.items():
        cells = [fmt(med([x.get(k) for x in rows]), f) for k, _, f in KEYS]
        per = ", ".join(fmt(x.get("train_images_per_s"), ".1f") for x in rows)
        print(f"| {label} | " + " | ".join(cells) + f" | {per} |")
    labels = list(by)
    if len(labels) == 2:
        a, b = (by[labels[0]], by[labels[1]])
        ratios = [x["train_images_per_s"] / y["train_images_per_s"] for x, y in zip(a, b)
                  if x.get("train_images_per_s") and y.get("train_images_per_s")]
        print(f"\ntrain ratio {labels[0]} / {labels[1]} per run: "
              + ", ".join(f"{v:.2f}x" for v in ratios) + f"; median {fmt(med(ratios), '.2f')}x")
        d = [x.get("decode_images_per_cpu_s") / y.get("decode_images_per_cpu_s") for x, y in zip(a, b)
             if x.get("decode_images_per_cpu_s") and y.get("decode_images_per_cpu_s")]
        if d:
            print(f"decode per core ratio: " + ", ".join(f"{v:.2f}x" for v in d) + f"; median {fmt(med(d), '.2f')}x")
    prof = [x for x in by.get("ncfm float32", []) if x.get("profile_train_no_augment_images_per_s")]
    if prof:
        print("ncfm profile (in-run, sequential): augmentation off "
              + ", ".join(f"{x['profile_train_no_augment_images_per_s']:.1f} img/s "
                          f"(share {x['profile_augment_share']:.0%})" for x in prof))
    print()
