"""What do test-time views, the fold ensemble and calibration each buy? Scores the per-fold
prediction files `ncfm predict` saved in a run against known test labels, with no model run.

    ncfm predict --run runs/X --stage 2 --tta 1 --calibrate none --out /tmp/tta1.csv
    ncfm predict --run runs/X --stage 2 --tta 8 --calibrate none --out /tmp/tta8.csv
    python scripts/evaluate_ensemble.py --run runs/X --data-dir data --tta 8

Reads runs/X/predictions/stage<S>_fold<K>_tta{1,N}.csv and runs/X/fold<K>/oof[_ttaN].csv.
Test labels come from <data-dir>/test_truth.csv (image,label[,stage]), which `ncfm
make_synthetic` writes; Kaggle's real test labels are not public, so with real data only the
OOF column is filled. Calibration is fitted on the pooled OOF predictions under the same views,
as `ncfm predict` does, and applied to the ensemble. Differences between rows come with a paired
standard error over test images: on a few hundred images, 0.02 is often noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ncfm import CLASSES  # noqa: E402
from ncfm import calibrate as cal  # noqa: E402
from ncfm.predict import average, fold_dirs  # noqa: E402

INDEX = {c: i for i, c in enumerate(CLASSES)}


def read_probs(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SystemExit(f"{path}: not found; run the `ncfm predict` commands in this script's docstring first")
    return pd.read_csv(path, dtype={"image": str}).set_index("image")


def constant(probs: np.ndarray, ids) -> pd.DataFrame:
    return pd.DataFrame(np.tile(probs, (len(ids), 1)), index=ids, columns=list(CLASSES))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder that `ncfm predict` has written predictions into")
    p.add_argument("--data-dir", default="data", help="data folder holding test_truth.csv and folds.csv")
    p.add_argument("--stage", type=int, default=2, help="the predict stage whose files to read (default 2)")
    p.add_argument("--tta", type=int, default=8, help="the TTA count to compare with 1 (default 8)")
    args = p.parse_args(argv)

    run, data = Path(args.run), Path(args.data_dir)
    folds = fold_dirs(run)
    ttas = [1, args.tta]

    def test_files(tta):
        return [read_probs(run / "predictions" / f"stage{args.stage}_{f.name}_tta{tta}.csv") for f in folds]

    def oof(tta):
        frames = [read_probs(f / ("oof.csv" if tta == 1 else f"oof_tta{tta}.csv")) for f in folds]
        df = pd.concat(frames)
        return df.label.map(INDEX).to_numpy(), df[list(CLASSES)].to_numpy("float64")

    tests = {t: test_files(t) for t in ttas}
    ids = tests[1][0].index
    truth_path = data / "test_truth.csv"
    truth = pd.read_csv(truth_path, dtype={"image": str}).set_index("image") if truth_path.is_file() else None
    if truth is not None:
        truth = truth.loc[truth.index.intersection(ids)]
        parts = {"test": truth.index}
        if "stage" in truth.columns:
            parts |= {f"stage {s}": truth.index[truth.stage == s] for s in sorted(truth.stage.unique())}
    else:
        parts = {}
    train_labels = pd.read_csv(data / "folds.csv").label
    priors = train_labels.value_counts(normalize=True).reindex(list(CLASSES), fill_value=0).to_numpy()

    rows = []  # (name, OOF loss or None, {part: per-image losses})

    def score(name, oof_loss, probs_by_id: pd.DataFrame | None):
        losses = {}
        if truth is not None and probs_by_id is not None:
            for part, index in parts.items():
                labels = truth.loc[index, "label"].map(INDEX).to_numpy()
                losses[part] = cal.per_sample_log_loss(labels, probs_by_id.loc[index, list(CLASSES)].to_numpy())
        rows.append((name, oof_loss, losses))
        return losses

    oof_labels, _ = oof(1)
    uniform = np.full(len(CLASSES), 1 / len(CLASSES))
    score("uniform 1/8", cal.kaggle_log_loss(oof_labels, np.tile(uniform, (len(oof_labels), 1))), constant(uniform, ids))
    score("training priors", cal.kaggle_log_loss(oof_labels, np.tile(priors, (len(oof_labels), 1))), constant(priors, ids))

    for t in ttas:
        labels, probs = oof(t)
        per_fold = [score(f"  {f.name}, TTA {t}", None, df) for f, df in zip(folds, tests[t])]
        mean = {part: np.mean([pf[part] for pf in per_fold], axis=0) for part in parts}
        rows.append((f"one fold, TTA {t} (mean of {len(folds)})", cal.kaggle_log_loss(labels, probs), mean))
    for t in ttas:
        ens = average([df[list(CLASSES)].to_numpy() for df in tests[t]])
        score(f"{len(folds)}-fold ensemble, TTA {t}", None, pd.DataFrame(ens, index=ids, columns=list(CLASSES)))
    t = args.tta
    labels, probs = oof(t)
    ens = average([df[list(CLASSES)].to_numpy() for df in tests[t]])
    for method in ("temperature", "floor", "both"):  # fitted on OOF; its OOF score is in-sample
        fit = cal.fit_calibration(labels, probs, method)
        out = cal.calibrate(ens, fit["temperature"], fit["floor"])
        score(f"{len(folds)}-fold ensemble, TTA {t}, {method} (T={fit['temperature']:.2f}, floor={fit['floor']:.3f})",
              fit["after"], pd.DataFrame(out, index=ids, columns=list(CLASSES)))

    # ---- table
    cols = list(parts)
    header = f"| {'predictions':<62} | {'OOF':>6} | " + " | ".join(f"{c + ' (n=' + str(len(parts[c])) + ')':>15}" for c in cols) + " |"
    print(header)
    print("|" + "-" * 64 + "|" + "-" * 8 + "|" + "|".join("-" * 17 for _ in cols) + "|")
    for name, oof_loss, losses in rows:
        o = f"{oof_loss:6.4f}" if oof_loss is not None else f"{'':6}"
        cells = " | ".join(f"{losses[c].mean():15.4f}" if c in losses else f"{'':15}" for c in cols)
        print(f"| {name:<62} | {o} | {cells} |")

    # ---- paired differences on the test images (negative = the second row is better)
    by_name = {name: losses for name, _, losses in rows}
    k = len(folds)
    pairs = [(f"one fold, TTA 1 (mean of {k})", f"one fold, TTA {t} (mean of {k})", "TTA"),
             (f"one fold, TTA {t} (mean of {k})", f"{k}-fold ensemble, TTA {t}", "fold ensemble"),
             (f"{k}-fold ensemble, TTA {t}",
              next(n for n in by_name if n.startswith(f"{k}-fold ensemble, TTA {t}, temperature")), "temperature")]
    if parts:
        print("\npaired differences on test images (after - before; negative helps), mean +- 2 SE:")
        for before, after, what in pairs:
            cells = []
            for c in cols:
                d = by_name[after][c] - by_name[before][c]
                cells.append(f"{c}: {d.mean():+.4f} +- {2 * d.std(ddof=1) / np.sqrt(len(d)):.4f}")
            print(f"  {what:<14} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
