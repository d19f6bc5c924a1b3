"""Real photos in a Kaggle layout: Fashion-MNIST (Debian's `dataset-fashion-mnist`) as Dog Breed
Identification ships its files, with the test labels kept aside for scoring.

    apt-get install dataset-fashion-mnist
    python scripts/fashion_mnist.py OUT [--n-train 600] [--n-test 1000] [--seed 0]
    ncfm split_train_val --data-dir OUT ...; ncfm train ...; ncfm predict ...
    python scripts/fashion_mnist.py OUT --score submissions/x.csv

OUT gets train/<id>.png (28x28 grey, every image the same size, as the brief's layout test
asks), labels.csv (id,label), test/<id>.png from the data set's own test split,
sample_submission.csv (id,<class>,...) and test_truth.csv (id,label), which Kaggle would keep to
itself. Images are drawn per class in equal numbers by a seeded generator, so a seed gives the
same files. --score prints a submission's log loss and accuracy on test_truth.csv.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian header of dimensions, then uint8 values."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _balanced(labels: np.ndarray, n: int, rng) -> np.ndarray:
    per_class = n // len(CLASSES)
    picked = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(len(CLASSES))]
    return rng.permutation(np.concatenate(picked))


def write_layout(out: Path, n_train: int, n_test: int, seed: int, source: Path = SOURCE) -> None:
    from PIL import Image

    missing = [p for p in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz") if not (source / p).is_file()]
    if missing:
        raise SystemExit(f"{source}: {', '.join(missing)} not found; install Debian's dataset-fashion-mnist")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    truth = []
    for split, folder, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        images = read_idx(source / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{split}-labels-idx1-ubyte.gz")
        (out / folder).mkdir(exist_ok=True)
        rows = []
        for i in _balanced(labels, n, rng):
            name = f"{folder}{int(i):05d}"
            Image.fromarray(images[i]).save(out / folder / f"{name}.png")
            rows.append((name, CLASSES[labels[i]]))
        if folder == "train":
            (out / "labels.csv").write_text("id,label\n" + "".join(f"{a},{b}\n" for a, b in rows))
        else:
            truth = rows
    uniform = ",".join([f"{1 / len(CLASSES):.6f}"] * len(CLASSES))
    (out / "sample_submission.csv").write_text(
        "id," + ",".join(CLASSES) + "\n" + "".join(f"{name},{uniform}\n" for name, _ in truth))
    (out / "test_truth.csv").write_text("id,label\n" + "".join(f"{a},{b}\n" for a, b in truth))
    print(f"{out}: {n_train} training and {n_test} test images of {len(CLASSES)} classes (seed {seed})")


def score(out: Path, submission: Path) -> tuple[float, float]:
    import pandas as pd

    from ncfm.calibrate import accuracy, kaggle_log_loss

    truth = pd.read_csv(out / "test_truth.csv", dtype=str)
    sub = pd.read_csv(submission, dtype={"id": str})
    merged = truth.merge(sub, on="id")
    classes = [c for c in sub.columns[1:]]
    y = merged.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs = merged[classes].to_numpy("float64")
    return kaggle_log_loss(y, probs), accuracy(y, probs)


def per_image_log_loss(out: Path, submission: Path) -> np.ndarray:
    """Each test image's log loss as Kaggle scores it, in test_truth.csv's order: two submissions'
    differences image by image give a paired standard error."""
    import pandas as pd

    from ncfm.calibrate import per_sample_log_loss

    truth = pd.read_csv(out / "test_truth.csv", dtype=str)
    sub = pd.read_csv(submission, dtype={"id": str})
    merged = truth.merge(sub, on="id", how="left")
    classes = list(sub.columns[1:])
    y = merged.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
    return per_sample_log_loss(y, merged[classes].to_numpy("float64"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score", type=Path, nargs="*", help="score these submissions on test_truth.csv instead")
    args = p.parse_args(argv)
    if args.score:
        for path in args.score:
            loss, acc = score(args.out, path)
            print(f"{path}: test log loss {loss:.4f}, accuracy {acc:.3f}")
        return 0
    write_layout(args.out, args.n_train, args.n_test, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
