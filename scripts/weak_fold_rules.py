"""Each --weak-folds rule of `ncfm predict`, scored on held-out test labels that Kaggle keeps to itself.

    python scripts/weak_fold_rules.py --data-dir demo/data --run demo/runs/demo [--stage 2] [--tta 4]
        [--out DIR] [--predict-flag=--run-weights --predict-flag=oof ...]

For every rule (keep, priors, margin, shrink) it runs the very `ncfm predict` a user would, into
DIR/<run>_<rule>.csv (the per-fold predictions are saved in the run after the first, so the other
rules cost no model), then prints one row per rule: the OOF log loss predict reported before
calibration, the folds it left out, and the log loss on the data set's test_truth.csv (NCFM's
synthetic sets: stage 1 and stage 2 apart; others: all test images). Every fold must have been
trained; nothing is retrained. Pass --run more than once for a blend of runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import pandas as pd

RULES = ("keep", "priors", "margin", "shrink")


def held_out_scores(data_dir: Path, submission: Path) -> dict[str, float]:
    """Log loss of a submission on test_truth.csv: per stage where the truth has stages, else 'test'."""
    from ncfm.calibrate import kaggle_log_loss

    truth = pd.read_csv(data_dir / "test_truth.csv", dtype=str)
    sub = pd.read_csv(submission, dtype={0: str})
    id_column = truth.columns[0]
    sub = sub.rename(columns={sub.columns[0]: id_column})
    classes = list(sub.columns[1:])
    merged = truth.merge(sub, on=id_column)
    parts = {f"stage {s}": merged[merged.stage == s] for s in sorted(merged.stage.unique())} if "stage" in merged else {"test": merged}
    out = {}
    for name, rows in parts.items():
        y = rows.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
        out[name] = kaggle_log_loss(y, rows[classes].to_numpy("float64")) if len(rows) else float("nan")
    return out


def main(argv=None) -> int:
    from ncfm.cli import main as ncfm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--run", type=Path, action="append", required=True)
    p.add_argument("--stage", type=int, default=None)
    p.add_argument("--tta", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("weak_fold_rules"))
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--predict-flag", action="append", default=[], help="more flags for ncfm predict")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for rule in args.rules.split(","):
        out = args.out / f"{args.run[0].name}_{rule}.csv"
        argv = ["predict", "--data-dir", str(args.data_dir), "--tta", str(args.tta), "--out", str(out), "--force",
                "--weak-folds", rule, *[x for r in args.run for x in ("--run", str(r))], *args.predict_flag,
                *(["--stage", str(args.stage)] if args.stage is not None else [])]
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            code = ncfm(argv)
        if code:
            print(said.getvalue(), file=sys.stderr)
            return code
        calibration = json.loads((args.run[0] / "calibration.json").read_text())
        left = [Path(f).parent.name + "/" + Path(f).name if len(args.run) > 1 else Path(f).name
                for f in calibration.get("left_out") or []]
        rows.append({"rule": rule, "oof": calibration.get("before", calibration.get("oof_score")),
                     "oof calibrated": calibration.get("after"), **held_out_scores(args.data_dir, out),
                     "left out": ",".join(left) or "-",
                     "shrink": ",".join(f"{w:.2f}" for w in (calibration.get("shrink") or {}).values()) or "-"})
    table = pd.DataFrame(rows)
    print(f"{', '.join(map(str, args.run))} (test log loss on {args.data_dir / 'test_truth.csv'})")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    table.to_csv(args.out / f"{args.run[0].name}_rules.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
