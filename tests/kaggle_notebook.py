"""A Kaggle notebook session, here: a fresh environment and kernel, a fake /kaggle/input in either path
style, a hidden test set, and nbclient to execute a notebook as Kaggle does (tests/test_notebook.py,
tests/test_detect.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd

OWNER = "someone"


def kaggle_kernel(tmp_path: Path, monkeypatch) -> str:
    """A fresh virtual environment that sees the test environment's packages (Keras, TensorFlow,
    ipykernel: what the Kaggle image has) but not ncfm, and a Jupyter kernel that runs in it; the
    kernel's proxies point nowhere, so nothing it does can reach the network. -> the kernel's name."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the outer site-packages as plain paths: its packages, but not the .pth that puts the dev tree's ncfm there
    (site / "kaggle_image.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    spec = tmp_path / "jupyter" / "kernels" / "kaggle"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kaggle", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: any request fails at once
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    return "kaggle"


def fake_input(root: Path, competition: Path, dataset: Path, slug: str, new_style: bool,
               dataset_slug: str = "tiny-ncfm-models") -> Path:
    """/kaggle/input with the competition's own files (linked) and the dataset, in the old
    (/kaggle/input/<slug>/) or the new (competitions/<slug>/, datasets/<owner>/<slug>/) layout."""
    comp_dir = root / ("competitions" if new_style else "") / slug
    data_dir = root / ("datasets" if new_style else "") / (OWNER if new_style else "") / dataset_slug
    comp_dir.mkdir(parents=True)
    for item in competition.iterdir():  # what Kaggle gives: images and CSVs, not ncfm's folds or cache
        if item.name.startswith(("train", "test", "sample_submission")):
            (comp_dir / item.name).symlink_to(item.resolve())
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.symlink_to(dataset.resolve())
    return root


def run_notebook(path: Path, kernel: str, workdir: Path, monkeypatch, input_root: Path, rerun: bool) -> list[str]:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NCFM_KAGGLE_INPUT", str(input_root))
    monkeypatch.setenv("NCFM_KAGGLE_WORKING", str(workdir / "working"))
    monkeypatch.setenv("NCFM_KAGGLE_SCRATCH", str(workdir / "scratch"))
    if rerun:
        monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", "True")
    else:
        monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    (workdir / "working").mkdir(parents=True)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=900, resources={"metadata": {"path": str(workdir)}}).execute()
    return ["".join(o.get("text", "")) for cell in nb.cells for o in cell.get("outputs", [])]


def hidden_test_set(data: Path, dest: Path, n: int = 10) -> Path:
    """The competition's files as the rerun sees them: stage 1 replaced by other images (stage 2's,
    renamed) and its sample submission listing them."""
    shutil.copytree(data, dest, ignore=shutil.ignore_patterns("cache", "folds.*", "competition.json", "test_stg1",
                                                              "crops"), symlinks=True)
    (dest / "test_stg1").mkdir()
    sources = sorted(p for p in (data / "test_stg2").rglob("*.jpg"))[:n]
    ids = []
    for i, src in enumerate(sources):
        ids.append(f"img_9{i:04d}.jpg")
        shutil.copy(src, dest / "test_stg1" / ids[-1])
    sample = pd.read_csv(data / "sample_submission_stg1.csv")
    pd.DataFrame({sample.columns[0]: ids, **{c: 1 / 8 for c in sample.columns[1:]}}).to_csv(
        dest / "sample_submission_stg1.csv", index=False)
    return dest


def same_csv(a: Path, b: Path) -> None:
    x, y = pd.read_csv(a), pd.read_csv(b)
    assert list(x.columns) == list(y.columns) and list(x.iloc[:, 0]) == list(y.iloc[:, 0])
    np.testing.assert_allclose(x.iloc[:, 1:].to_numpy(), y.iloc[:, 1:].to_numpy(), atol=1e-6)
