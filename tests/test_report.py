"""The run report: numbers equal Kaggle's scorer on the OOF files, the page renders in a real browser.

Runs are fabricated in tmp_path exactly as `ncfm train` lays them out (fold<k>/config.json,
history.csv, state.json, oof.csv; data/folds.csv with its folds.json sidecar).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ncfm import CLASSES, NcfmError, report
from ncfm.calibrate import kaggle_log_loss

PRIORS = np.array([1719, 200, 117, 67, 465, 299, 176, 734]) / 3777


# --------------------------------------------------------------------------- fabricated runs
def write_fold(run: Path, k: int, n_folds: int, rng, n_oof: int = 20, oof: bool = True, finished: bool = True,
               head_epochs: int = 3, epochs: int = 8, start: int = 0) -> pd.DataFrame | None:
    """One fold<k>/ folder; returns its OOF frame (or None when oof=False)."""
    d = run / f"fold{k}"
    d.mkdir(parents=True)
    config = {"backbone": "inception_v3", "weights": "none", "image_size": 96, "epochs": epochs,
              "head_epochs": head_epochs, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "seed": 7, "fold": k,
              "n_folds": n_folds, "folds_csv": "data/folds.csv", "data_dir": "data", "backend": "jax"}
    (d / "config.json").write_text(json.dumps(config))
    done = epochs if finished else epochs - 3
    ep = np.arange(1, done + 1)
    val_loss = 1.9 - 0.8 * (1 - np.exp(-ep / 3)) + 0.02 * rng.standard_normal(done)
    pd.DataFrame({
        "epoch": ep, "phase": np.where(ep <= head_epochs, 1, 2),
        "loss": 2.0 * np.exp(-ep / 4), "accuracy": 1 - 0.7 * np.exp(-ep / 4),
        "val_loss": val_loss, "val_accuracy": 0.3 + 0.04 * ep,
        "learning_rate": np.where(ep <= head_epochs, 1e-2, 1e-3 * 0.8 ** (ep - head_epochs)),
    }).to_csv(d / "history.csv", index=False)
    best = int(ep[np.argmin(val_loss)])
    (d / "state.json").write_text(json.dumps({"epoch": done, "best_epoch": best,
                                              "best_val_loss": float(val_loss.min()), "finished": finished}))
    if not oof:
        return None
    y = rng.choice(len(CLASSES), size=n_oof, p=PRIORS)
    logits = rng.normal(0, 1.5, size=(n_oof, len(CLASSES))) + 2.5 * np.eye(len(CLASSES))[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    df = pd.DataFrame(probs, columns=list(CLASSES))
    df.insert(0, "label", [CLASSES[i] for i in y])
    df.insert(0, "image", [f"img_{start + i:05d}.jpg" for i in range(n_oof)])
    df.to_csv(d / "oof.csv", index=False)
    return df


def write_manifest(root: Path, frames: list[pd.DataFrame], groups: bool = True) -> None:
    data = root / "data"
    data.mkdir(exist_ok=True)
    rows = pd.concat([f[["image", "label"]].assign(fold=k) for k, f in enumerate(frames)])
    if groups:
        rows["group"] = [f"boat{k}_{i % 3}" for k, f in enumerate(frames) for i in range(len(f))]
    rows.to_csv(data / "folds.csv", index=False)
    (data / "folds.json").write_text(json.dumps({"n_folds": len(frames), "seed": 7, "groups": "boat"}))


def make_run3(root: Path) -> tuple[Path, list[pd.DataFrame]]:
    """runs/r1 with three finished folds of 20 OOF rows each, and its manifest."""
    rng = np.random.default_rng(0)
    run = root / "runs" / "r1"
    frames = [write_fold(run, k, 3, rng, start=100 * k) for k in range(3)]
    write_manifest(root, frames)
    return run, frames


@pytest.fixture
def run3(tmp_path) -> tuple[Path, list[pd.DataFrame]]:
    """A fresh three-fold run, for tests that change it."""
    return make_run3(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[dict, list[pd.DataFrame]]:
    """The report of a three-fold run, rendered once for the tests that only read it."""
    run, frames = make_run3(tmp_path_factory.mktemp("built"))
    return report.build_report([run]), frames


def cell(page: str, cell_id: str) -> str:
    m = re.search(rf'<td[^>]*id="{re.escape(cell_id)}"[^>]*>([^<]*)</td>', page)
    assert m, f"no cell {cell_id} in the page"
    return m.group(1)


def score(df: pd.DataFrame) -> tuple[float, float]:
    y = df["label"].map(CLASSES.index).to_numpy()
    p = df[list(CLASSES)].to_numpy()
    return kaggle_log_loss(y, p), float(np.mean(p.argmax(axis=1) == y))


# --------------------------------------------------------------------------- numbers and files
def test_writes_page_and_pngs_into_the_run_folder(built):
    result, _ = built
    run = result["html"].parent
    assert run.name == "r1"
    assert result["html"] == run / "report.html" and result["html"].is_file()
    names = {p.name for p in result["pngs"]}
    assert names == {"report_curves_fold0.png", "report_curves_fold1.png", "report_curves_fold2.png",
                     "report_confusion.png", "report_per_class.png", "report_reliability.png"}
    for p in result["pngs"]:
        assert p.parent == run and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_numbers_equal_kaggle_log_loss_on_the_oof_files(built):
    result, frames = built
    page = result["html"].read_text()
    summary = result["runs"][0]
    for k, df in enumerate(frames):
        loss, acc = score(df)
        assert summary["folds"][k]["log_loss"] == pytest.approx(loss, abs=1e-12)
        assert cell(page, f"run0-fold{k}-log-loss") == f"{loss:.5f}"
        assert cell(page, f"run0-fold{k}-accuracy") == f"{100 * acc:.1f}%"
    pooled = pd.concat(frames)
    loss, acc = score(pooled)
    assert summary["oof"]["log_loss"] == pytest.approx(loss, abs=1e-12)
    assert cell(page, "run0-oof-log-loss") == f"{loss:.5f}"
    assert cell(page, "run0-oof-accuracy") == f"{100 * acc:.1f}%"


def test_baselines_are_ln8_and_the_oof_class_frequencies(built):
    page_result, frames = built
    page = page_result["html"].read_text()
    y = pd.concat(frames)["label"].map(CLASSES.index).to_numpy()
    freqs = np.bincount(y, minlength=8) / len(y)
    expected_prior = -np.mean(np.log(freqs[y]))  # the entropy of the OOF labels
    assert cell(page, "run0-uniform-baseline") == "2.07944"
    assert cell(page, "run0-prior-baseline") == f"{expected_prior:.5f}"
    assert page_result["runs"][0]["oof"]["prior_baseline"] == pytest.approx(expected_prior, abs=1e-12)


def test_temperature_is_fitted_on_the_pooled_oof_and_never_worse(built):
    o = built[0]["runs"][0]["oof"]
    assert o["calibrated_log_loss"] <= o["log_loss"] + 1e-9
    assert o["temperature"] != pytest.approx(1.0, abs=1e-3)


def test_fold_and_group_scheme_is_shown_from_manifest_and_sidecar(built):
    page = built[0]["html"].read_text()
    assert "data/folds.csv" in page and "(60 images)" in page
    assert "split settings: n_folds 3, seed 7, groups boat" in page and "each inside one fold" in page


def test_groups_spanning_folds_are_flagged(tmp_path):
    rng = np.random.default_rng(1)
    run = tmp_path / "runs" / "leaky"
    frames = [write_fold(run, k, 2, rng, start=100 * k) for k in range(2)]
    write_manifest(tmp_path, frames)
    folds = pd.read_csv(tmp_path / "data" / "folds.csv")
    folds["group"] = "one_boat"  # a single group in both folds
    folds.to_csv(tmp_path / "data" / "folds.csv", index=False)
    scheme = report.load_run(run).scheme
    assert scheme["n_groups"] == 1 and scheme["groups_spanning_folds"] == 1
    assert "1 spanning more than one fold (leaky validation)" in report._scheme_html(scheme)


def test_partial_run_reports_finished_folds_and_lists_the_rest(tmp_path):
    rng = np.random.default_rng(2)
    run = tmp_path / "runs" / "partial"
    done = write_fold(run, 0, 3, rng)
    write_fold(run, 1, 3, rng, oof=False, finished=False)  # fold 2 not started at all
    result = report.build_report([run])
    s = result["runs"][0]
    assert s["oof"]["folds"] == [0] and s["oof"]["log_loss"] == pytest.approx(score(done)[0])
    assert s["folds"][0]["status"] == "finished"
    assert s["folds"][1]["log_loss"] is None and s["folds"][1]["status"] == "training (epoch 5/8)"
    page = result["html"].read_text()
    assert "OOF of 1/3 folds" in page
    assert "fold1: no oof.csv yet" in page and "folds not started: fold2" in page
    assert "data/folds.csv</code> (not found from here)" in page  # no manifest written: still renders
    assert "report_curves_fold1.png" in {p.name for p in result["pngs"]}


def test_run_without_any_oof_still_renders_the_curves(tmp_path):
    run = tmp_path / "runs" / "early"
    write_fold(run, 0, 2, np.random.default_rng(3), oof=False, finished=False)
    result = report.build_report([run])
    assert result["runs"][0]["oof"] is None
    assert [p.name for p in result["pngs"]] == ["report_curves_fold0.png"]
    assert "No fold has out-of-fold predictions yet" in result["html"].read_text()


def test_empty_oof_is_left_out_not_scored_as_nan(run3):
    run, frames = run3
    frames[2].iloc[:0].to_csv(run / "fold2" / "oof.csv", index=False)
    s = report.summarize_run(report.load_run(run))  # the numbers only; no plotting needed
    assert s["oof"]["folds"] == [0, 1]
    assert s["oof"]["log_loss"] == pytest.approx(score(pd.concat(frames[:2]))[0])
    assert "fold2: oof.csv has no rows" in " ".join(s["notes"])


def test_malformed_oof_names_the_file(tmp_path):
    run = tmp_path / "runs" / "bad"
    df = write_fold(run, 0, 1, np.random.default_rng(4))
    df.drop(columns=["SHARK"]).to_csv(run / "fold0" / "oof.csv", index=False)
    with pytest.raises(NcfmError, match=r"fold0/oof.csv: missing column\(s\) SHARK"):
        report.build_report([run])


def test_not_a_run_folder_is_a_user_error(tmp_path):
    with pytest.raises(NcfmError, match="no such run folder"):
        report.build_report([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NcfmError, match="no fold<k>/ folders"):
        report.build_report([tmp_path / "empty"])


def test_two_runs_side_by_side_and_their_ensemble_on_common_images(tmp_path, run3):
    run_a, frames_a = run3
    rng = np.random.default_rng(5)
    run_b = tmp_path / "runs" / "r2"
    # Same images and labels as r1 for folds 0 and 1, different probabilities; fold 2 missing.
    frames_b = []
    for k in range(2):
        df = write_fold(run_b, k, 3, rng, start=100 * k)
        df[["image", "label"]] = frames_a[k][["image", "label"]].to_numpy()
        df.to_csv(run_b / f"fold{k}" / "oof.csv", index=False)
        frames_b.append(df)
    out = tmp_path / "cmp"
    result = report.build_report([run_a, run_b], out_dir=out)
    a = pd.concat(frames_a[:2]).set_index("image").sort_index()
    b = pd.concat(frames_b).set_index("image").sort_index()
    mean = (a[list(CLASSES)] + b[list(CLASSES)]) / 2
    expected = kaggle_log_loss(a["label"].map(CLASSES.index), mean.to_numpy())
    e = result["ensemble"]
    assert e["images"] == 40 and e["log_loss"] == pytest.approx(expected, abs=1e-12)
    page = (out / "report.html").read_text()
    assert cell(page, "ensemble-log-loss") == f"{expected:.5f}"
    assert 'id="comparison"' in page and cell(page, "run1-oof-log-loss") == f"{score(pd.concat(frames_b))[0]:.5f}"
    assert {p.parent for p in result["pngs"]} == {out}
    assert any(p.name.startswith("report_r2_") for p in result["pngs"])
    assert '<td class="n">2/3</td>' in page  # r2 has 2 of its 3 folds


def test_cli_prints_the_summary_table(run3, capsys):
    run, frames = run3
    assert report.main(SimpleNamespace(run=[str(run)], out=None)) == 0
    printed = capsys.readouterr().out
    assert f"{score(pd.concat(frames))[0]:.5f}" in printed
    assert "class-prior baseline" in printed and "uniform baseline" in printed and "2.07944" in printed


def test_page_is_self_contained(built):
    result, _ = built
    page = result["html"].read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) == len(result["pngs"]) == 6
    for src, png in zip(srcs, result["pngs"]):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert "http://" not in page and "https://" not in page


# --------------------------------------------------------------------------- a real browser
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium, installed from Debian's packages on first use when we are root."""
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"{CHROMIUM} missing and cannot apt-get install it (not root or no apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                pytest.skip(f"could not install Chromium ({' '.join(cmd)}): {proc.stderr.strip()[-300:]}")
    return CHROMIUM


def dump_dom(browser: str, page: Path, profile: Path) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_page_loads_in_headless_chromium_with_every_image_decoded(built, chromium, tmp_path):
    result, _ = built
    proc = dump_dom(chromium, result["html"], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'data-images="ok"' in dom, "the page's own check found an image that did not decode"
    assert 'data-images-loaded="6"' in dom
    assert 'id="run0-cv"' in dom and 'id="run0-oof-log-loss"' in dom
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors, console_errors


def test_the_browser_check_catches_a_broken_image(built, chromium, tmp_path):
    text = built[0]["html"].read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', text, count=1)
    assert broken != text
    page = tmp_path / "broken.html"
    page.write_text(broken)
    dom = dump_dom(chromium, page, tmp_path / "profile").stdout
    assert 'data-images="broken"' in dom and "1 of 6 images failed to load" in dom


def test_an_image_in_two_folds_is_noted(run3):
    run, frames = run3
    frames[1].assign(image=frames[0]["image"]).to_csv(run / "fold1" / "oof.csv", index=False)
    notes = " ".join(report.load_run(run).notes)
    assert "20 image(s) appear in more than one fold's oof.csv" in notes
