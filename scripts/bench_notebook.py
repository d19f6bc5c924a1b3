"""The Kaggle dataset and runtime estimate `ncfm notebook` gives for an NCFM-sized run: 5 folds of
InceptionV3 at 299 pixels (untrained weights: a trained model's file is the same size), on the demo's
data (any split NCFM-like folder), counting NCFM's 13,153 test images of both stages.

    python scripts/bench_notebook.py WORK --data-dir demo/data [--folds 5] [--image-size 299]

Writes WORK/runs/ncfm5 and WORK/kaggle-<accelerator>/, and prints the dataset's size and both estimates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def fake_run(run: Path, data_dir: Path, folds: int, size: int) -> None:
    """A finished classifier run of `folds` folds whose every best.keras is the same untrained model."""
    from ncfm import runs
    from ncfm.competition import load, path_beside
    from ncfm.model import build_model, inference_model

    comp = load(path_beside(data_dir / "folds.csv"))
    model = inference_model(build_model("inception_v3", "none", size, num_classes=len(comp.classes)))
    for k in range(folds):
        fold = runs.fold_of(run, k)
        fold.dir.mkdir(parents=True, exist_ok=True)
        runs.save_model(model, fold.best, classes=comp.classes, record={})
        runs.write_config(fold, {"kind": "classifier", "backbone": "inception_v3", "image_size": size,
                                 "classes": list(comp.classes), "folds_csv": str(data_dir / "folds.csv"),
                                 "data_dir": str(data_dir)})
        runs.write_state(fold, runs.new_state() | {"finished": True})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--test-images", type=int, default=13153)
    args = p.parse_args()

    from ncfm.cli import main as ncfm

    work, data_dir = Path(args.work), Path(args.data_dir)
    run = work / "runs" / "ncfm5"
    if not (run / f"fold{args.folds - 1}" / "best.keras").is_file():
        shutil.rmtree(run, ignore_errors=True)
        fake_run(run, data_dir, args.folds, args.image_size)
    figures = {}
    for accelerator in ("cpu", "t4x2"):
        out = work / f"kaggle-{accelerator}"
        code = ncfm(["notebook", "--run", str(run), "--data-dir", str(data_dir), "--out", str(out), "--force",
                     "--accelerator", accelerator, "--test-images", str(args.test_images), "--owner", "bench",
                     "--tta", "8", "--weak-folds", "keep"])
        if code:
            return code
        record = json.loads((out / "dataset" / "ncfm-bundle.json").read_text())
        size = sum(f.stat().st_size for f in (out / "dataset").rglob("*") if f.is_file())
        figures[accelerator] = {"dataset_bytes": size, "estimate_seconds": record["estimate"]["seconds"],
                                "lines": record["estimate"]["lines"], "wheels": record["wheels"]}
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
