"""The run report: numbers equal Kaggle's scorer on the OOF files, the calibration shown is the
one predict recorded, any competition's classes, and the page renders in a real browser.

Runs are fabricated in tmp_path exactly as `ncfm train` and `ncfm predict` lay them out
(fold<k>/config.json with the classes, history.csv, state.json, oof.csv; calibration.json;
data/folds.csv with its folds.json sidecar).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ncfm import NcfmError, report, report_page
from ncfm.calibrate import calibrate, kaggle_log_loss
from ncfm.competition import NCFM_CLASSES as CLASSES

PRIORS = np.array([1719, 200, 117, 67, 465, 299, 176, 734]) / 3777


# --------------------------------------------------------------------------- fabricated runs
def write_fold(run: Path, k: int, n_folds: int, rng, n_oof: int = 20, oof: bool = True, finished: bool = True,
               head_epochs: int = 3, epochs: int = 8, start: int = 0, classes=CLASSES,
               recorded: bool = True) -> pd.DataFrame | None:
    """One fold<k>/ folder for `classes` (in config.json unless recorded=False, as in old runs);
    returns its OOF frame (or None when oof=False)."""
    classes = list(classes)
    d = run / f"fold{k}"
    d.mkdir(parents=True)
    config = {"backbone": "inception_v3", "weights": "none", "image_size": 96, "epochs": epochs,
              "head_epochs": head_epochs, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "seed": 7, "fold": k,
              "n_folds": n_folds, "folds_csv": "data/folds.csv", "data_dir": "data", "backend": "jax",
              "competition": "the-nature-conservancy-fisheries-monitoring" if classes == list(CLASSES) else "other"}
    if recorded:
        config["classes"] = classes
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
    n = len(classes)
    y = rng.choice(n, size=n_oof, p=PRIORS if classes == list(CLASSES) else None)
    logits = rng.normal(0, 1.5, size=(n_oof, n)) + 2.5 * np.eye(n)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    df = pd.DataFrame(probs, columns=classes)
    df.insert(0, "label", [classes[i] for i in y])
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


def write_calibration(run: Path, **values) -> dict:
    """calibration.json as predict writes it (an applied temperature unless `values` say otherwise)."""
    calibration = {"method": "temperature", "temperature": 1.0, "floor": 0.0, "metric": "log_loss",
                   "oof_score": 0.9, "before": 0.9, "after": 0.85, "held_out": 0.87, "held_out_by": "folds",
                   "applied": True, "runs": [str(run)], "tta": 8, "stage": 1, "mean": "arithmetic"} | values
    (run / "calibration.json").write_text(json.dumps(calibration))
    return calibration


def arrays(df: pd.DataFrame, classes=CLASSES) -> tuple[np.ndarray, np.ndarray]:
    return df["label"].map(list(classes).index).to_numpy(), df[list(classes)].to_numpy()


def score(df: pd.DataFrame, classes=CLASSES) -> tuple[float, float]:
    y, p = arrays(df, classes)
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


def test_baselines_are_ln8_and_the_class_shares_train_and_predict_use(built):
    page_result, frames = built
    page = page_result["html"].read_text()
    y = pd.concat(frames)["label"].map(CLASSES.index).to_numpy()
    shares = (np.bincount(y, minlength=8) + 1) / (len(y) + 8)  # calibrate.class_shares: one image of each class added
    expected_prior = -np.mean(np.log(shares[y]))
    assert cell(page, "run0-uniform-baseline") == "2.07944"
    assert cell(page, "run0-prior-baseline") == f"{expected_prior:.5f}"
    assert page_result["runs"][0]["oof"]["prior_baseline"] == pytest.approx(expected_prior, abs=1e-12)


def test_shows_predicts_temperature_and_never_refits(run3, monkeypatch):
    run, frames = run3
    write_calibration(run, temperature=1.7, floor=0.0)

    def no_fitting(*args, **kwargs):
        raise AssertionError("the report must not fit a calibration")

    for name in ("fit_calibration", "fit_temperature", "fit_floor"):
        monkeypatch.setattr(f"ncfm.calibrate.{name}", no_fitting)
    result = report.build_report([run])
    o = result["runs"][0]["oof"]
    assert o["temperature"] == 1.7 and o["floor"] == 0.0
    y, p = arrays(pd.concat(frames))
    expected = kaggle_log_loss(y, calibrate(p, 1.7))
    assert o["calibrated_log_loss"] == pytest.approx(expected, abs=1e-12)
    page = result["html"].read_text()
    assert "T = 1.700" in page and "(applied; on held-out folds: 0.87000)" in page
    assert cell(page, "run0-calibrated-log-loss") == f"{expected:.5f}"


def test_a_rejected_calibration_is_shown_as_not_applied(run3):
    run, _ = run3
    write_calibration(run, applied=False, held_out=0.95, after=0.9,
                      rejected={"temperature": 0.4, "floor": 0.0, "after": 0.8})
    result = report.build_report([run])
    assert result["runs"][0]["oof"]["temperature"] == 1.0
    page = result["html"].read_text()
    assert "(not applied; on held-out folds: 0.95000)" in page and "rejected fit T = 0.400" in page


def test_before_predict_the_page_says_not_calibrated_yet(built):
    result, _ = built
    assert result["runs"][0]["oof"]["temperature"] is None
    assert result["runs"][0]["oof"]["calibrated_log_loss"] is None
    assert "not calibrated yet (run ncfm predict)" in result["html"].read_text()


def test_shows_the_metric_predict_recorded(run3):
    run, _ = run3
    write_calibration(run, method="none", metric="accuracy", oof_score=0.8125)
    page = report.build_report([run])["html"].read_text()
    assert cell(page, "run0-predict-score") == "0.81250"
    assert "predict&#x27;s OOF accuracy before calibration" in page
    assert "predict did not calibrate (the competition is scored by accuracy)" in page


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
    assert "1 spanning more than one fold (leaky validation)" in report_page._scheme_html(scheme)


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


def test_an_empty_oof_is_an_error_naming_the_file(run3):
    run, frames = run3  # train never writes one: a header alone is a damaged file, as predict says too
    frames[2].iloc[:0].to_csv(run / "fold2" / "oof.csv", index=False)
    with pytest.raises(NcfmError, match=r"fold2/oof.csv: no rows"):
        report.load_run(run)


def test_malformed_oof_names_the_file(tmp_path):
    run = tmp_path / "runs" / "bad"
    df = write_fold(run, 0, 1, np.random.default_rng(4))
    df.drop(columns=["SHARK"]).to_csv(run / "fold0" / "oof.csv", index=False)
    with pytest.raises(NcfmError, match=r"fold0/oof.csv: missing column\(s\) SHARK"):
        report.build_report([run])


def test_broken_oof_is_an_ncfm_error_naming_the_file(tmp_path):
    run = tmp_path / "runs" / "bad"
    df = write_fold(run, 0, 1, np.random.default_rng(4))
    df.assign(ALB="oops").to_csv(run / "fold0" / "oof.csv", index=False)
    with pytest.raises(NcfmError, match=r"fold0/oof.csv: 20 row\(s\) with empty, non-numeric, negative or all-zero probabilities"):
        report.build_report([run])


def test_cli_report_on_a_broken_oof_exits_2_without_a_traceback(tmp_path, capsys):
    from ncfm import cli

    run = tmp_path / "runs" / "bad"
    write_fold(run, 0, 1, np.random.default_rng(4))
    (run / "fold0" / "oof.csv").write_bytes(b"\x00\xff\x00 not a csv\n\"")
    assert cli.main(["report", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncfm report: error: ") and str(run / "fold0" / "oof.csv") in err
    assert "Traceback" not in err


def test_damaged_config_is_a_note_not_a_traceback(run3):
    run, _ = run3
    (run / "fold1" / "config.json").write_text('{"backbone": "inception_v3", ')  # torn write
    result = report.build_report([run])
    page = result["html"].read_text()
    assert f"{run / 'fold1' / 'config.json'}: damaged" in page
    assert result["runs"][0]["folds"][1]["log_loss"] is not None  # its OOF still counts, classes from fold0


def test_damaged_state_history_and_calibration_are_notes(run3):
    run, _ = run3
    (run / "fold0" / "state.json").write_text("[1, 2")
    (run / "fold1" / "history.csv").write_text("epoch,phase\n1,1\n")  # no loss columns
    (run / "calibration.json").write_text("{")
    result = report.build_report([run])
    notes = " ".join(result["runs"][0]["notes"])
    assert f"{run / 'fold0' / 'state.json'}: damaged" in notes
    assert f"{run / 'fold1' / 'history.csv'}: missing column(s) loss, val_loss" in notes
    assert f"{run / 'calibration.json'}: damaged" in notes
    assert result["runs"][0]["oof"]["temperature"] is None
    assert "report_curves_fold1.png" not in {p.name for p in result["pngs"]}


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
    a = pd.concat(frames_a[:2]).set_index("image").sort_index()  # ensemble.ensemble_oof, as predict
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


# --------------------------------------------------------------------------- any competition
def test_a_run_with_three_other_classes_names_them_in_the_per_class_table(tmp_path):
    classes = ["sea bass", "yellowfin tuna", "no fish"]
    rng = np.random.default_rng(6)
    run = tmp_path / "runs" / "three"
    frames = [write_fold(run, k, 2, rng, n_oof=30, start=100 * k, classes=classes) for k in range(2)]
    result = report.build_report([run])
    s = result["runs"][0]
    assert s["classes"] == classes and not s["binary"]
    assert s["oof"]["log_loss"] == pytest.approx(score(pd.concat(frames), classes)[0], abs=1e-12)
    page = result["html"].read_text()
    for name in classes:
        assert f"<td>{name}</td>" in page
    assert cell(page, "run0-uniform-baseline") == f"{math.log(3):.5f}" and "1/3 each = ln 3" in page
    assert "report_confusion.png" in {p.name for p in result["pngs"]}


def test_two_classes_also_get_roc_auc(tmp_path):
    from sklearn.metrics import roc_auc_score

    classes = ["cat", "dog"]
    rng = np.random.default_rng(7)
    run = tmp_path / "runs" / "pets"
    frames = [write_fold(run, k, 2, rng, n_oof=30, start=100 * k, classes=classes) for k in range(2)]
    result = report.build_report([run])
    y, p = arrays(pd.concat(frames), classes)
    assert result["runs"][0]["oof"]["roc_auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    page = result["html"].read_text()
    assert cell(page, "run0-oof-roc-auc") == f"{roc_auc_score(y, p[:, 1]):.4f}"
    y1, p1 = arrays(frames[1], classes)
    assert cell(page, "run0-fold1-roc-auc") == f"{roc_auc_score(y1, p1[:, 1]):.4f}"


def test_many_classes_plot_only_the_most_confused(tmp_path):
    classes = [f"breed {i:03d}" for i in range(120)]
    run = tmp_path / "runs" / "dogs"
    write_fold(run, 0, 1, np.random.default_rng(8), n_oof=240, classes=classes)
    result = report.build_report([run])
    page = result["html"].read_text()
    assert all(f"<td>{name}</td>" in page for name in classes)  # the table lists every class
    cm = np.zeros((120, 120), dtype=int)
    cm[5, 7] = cm[9, 5] = 3
    np.fill_diagonal(cm, 1)
    assert list(report.most_confused(cm, limit=3)) == [5, 7, 9]


def test_old_runs_without_recorded_classes_are_ncfm_with_a_note(tmp_path):
    run = tmp_path / "runs" / "old"
    df = write_fold(run, 0, 1, np.random.default_rng(9), recorded=False)
    result = report.build_report([run])
    assert result["runs"][0]["classes"] == list(CLASSES)
    assert result["runs"][0]["oof"]["log_loss"] == pytest.approx(score(df)[0], abs=1e-12)
    assert "no fold records its classes" in " ".join(result["runs"][0]["notes"])


def test_classes_come_from_best_keras_when_the_config_lacks_them(tmp_path):
    import zipfile

    classes = ["a b", "c"]
    run = tmp_path / "runs" / "copied"
    write_fold(run, 0, 1, np.random.default_rng(10), classes=classes, recorded=False)
    with zipfile.ZipFile(run / "fold0" / "best.keras", "w") as z:
        z.writestr("ncfm/model.json", json.dumps({"classes": classes, "image_size": 96}))
    assert report.load_run(run).classes == tuple(classes)


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
