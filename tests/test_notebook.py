"""`ncfm notebook`: a code competition's dataset and inference notebook, executed here as Kaggle would
run it: internet off, inputs found under a fake /kaggle/input in both path styles, ncfm installed
from the dataset's wheel into a fresh environment, and the hidden-test rerun."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from kaggle_notebook import OWNER, fake_input, hidden_test_set, kaggle_kernel, run_notebook, same_csv
from ncfm.cli import main as ncfm
from ncfm.notebook import BUNDLE, model_flops, read_bundle, unpack


# ----------------------------------------------------------------------------- building
def test_the_folder_holds_the_models_the_wheel_and_metadata_kaggle_accepts(trained_run, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run["run"], run)
    out = tmp_path / "kaggle" / "tiny"
    assert ncfm(["notebook", "--run", str(run), "--data-dir", str(trained_run["data"]), "--out", str(out),
                 "--owner", OWNER, "--wheels", "none", "--tta", "2", "--accelerator", "t4x2"]) == 0
    printed = capsys.readouterr().out
    dataset, notebook = out / "dataset", out / "notebook"
    meta = json.loads((dataset / "dataset-metadata.json").read_text())
    assert meta["id"] == f"{OWNER}/tiny-ncfm-models" and 6 <= len(meta["title"]) <= 50 and len(meta["licenses"]) == 1
    kernel = json.loads((notebook / "kernel-metadata.json").read_text())
    assert kernel["enable_internet"] is False and kernel["machine_shape"] == "NvidiaTeslaT4"
    assert kernel["dataset_sources"] == [meta["id"]]
    assert kernel["competition_sources"] == ["the-nature-conservancy-fisheries-monitoring"]
    assert kernel["id"] == f"{OWNER}/tiny-predict" and kernel["title"].lower().replace(" ", "-") == "tiny-predict"
    assert (notebook / kernel["code_file"]).is_file()
    # the kept folds' inference models only; paths inside relative to the dataset
    for k in (0, 1):
        fold = dataset / "runs" / "tiny" / f"fold{k}"
        assert (fold / "best.keras").is_file() and not (fold / "last.keras").exists()
        assert json.loads((fold / "config.json").read_text())["folds_csv"] == "data/0/folds.csv"
    assert (dataset / "data" / "0" / "competition.json").is_file()
    wheels = sorted(p.name for p in (dataset / "wheels").iterdir())
    assert wheels == ["ncfm-0.1.0-py3-none-any.whl"]
    record = read_bundle(dataset)
    assert "--tta" in record["predict"] and record["predict"][record["predict"].index("--tta") + 1] == "2"
    assert "--devices" in record["predict"] and record["predict"][record["predict"].index("--devices") + 1] == "all"
    assert "estimated runtime on two T4 GPUs for 12 test images" in printed
    assert "GFLOP a view" in printed
    # the model files keep the time predict's saved OOF views are keyed by
    copy = unpack(dataset, tmp_path / "work")
    assert (copy / "runs/tiny/fold0/best.keras").stat().st_mtime_ns == (run / "fold0/best.keras").stat().st_mtime_ns
    assert not (copy / "wheels").exists()


def test_an_estimate_over_the_time_limit_warns_with_the_figure(trained_run, tmp_path, capsys):
    out = tmp_path / "nb"
    assert ncfm(["notebook", "--run", str(trained_run["run"]), "--data-dir", str(trained_run["data"]),
                 "--out", str(out), "--owner", OWNER, "--wheels", "none", "--test-images", "5000000",
                 "--time-limit", "1"]) == 0
    printed = capsys.readouterr().out
    assert "for 5000000 test images" in printed and "measured here on" in printed
    assert "WARNING: the estimate" in printed and "over the 1 h limit" in printed


def test_an_existing_folder_is_not_overwritten_without_force(trained_run, tmp_path, capsys):
    out = tmp_path / "nb"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert ncfm(["notebook", "--run", str(trained_run["run"]), "--data-dir", str(trained_run["data"]),
                 "--out", str(out), "--wheels", "none"]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep"


def test_a_missing_run_or_data_folder_is_named_before_anything_is_written(trained_run, tmp_path, capsys):
    out = tmp_path / "nb"
    assert ncfm(["notebook", "--run", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert f"{tmp_path / 'nope'}: run folder not found" in capsys.readouterr().err
    assert ncfm(["notebook", "--run", str(trained_run["run"]), "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(out)]) == 2
    assert "folds.csv: not found; pass --data-dir" in capsys.readouterr().err
    assert not out.exists()


def test_flops_count_a_convolution_and_a_dense_layer():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, outputs)
    assert model_flops(model) == 2 * 8 * 8 * 3 * 3 * 3 * 4 + 2 * 4 * 5


def test_a_damaged_bundle_record_is_named(tmp_path):
    (tmp_path / BUNDLE).write_text("{")
    from ncfm import NcfmError

    with pytest.raises(NcfmError, match=f"{BUNDLE}: not a readable ncfm bundle.*ncfm notebook"):
        read_bundle(tmp_path)


# ----------------------------------------------------------------------------- executed
@pytest.mark.slow
def test_the_notebook_runs_offline_and_writes_predicts_csv_also_on_the_hidden_rerun(trained_run, tmp_path,
                                                                                    monkeypatch):
    data, run = trained_run["data"], tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run["run"], run)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    local = tmp_path / "local.csv"
    assert ncfm(["predict", "--run", str(run), "--data-dir", str(data), "--tta", "2", "--out", str(local),
                 "--no-report", *cache]) == 0
    out = tmp_path / "kaggle" / "tiny"
    assert ncfm(["notebook", "--run", str(run), "--data-dir", str(data), "--out", str(out), "--owner", OWNER,
                 "--wheels", "none"]) == 0
    code_file = json.loads((out / "notebook" / "kernel-metadata.json").read_text())["code_file"]
    kernel = kaggle_kernel(tmp_path, monkeypatch)
    slug = "the-nature-conservancy-fisheries-monitoring"

    # the public test set, the old path style
    first = tmp_path / "first"
    printed = run_notebook(out / "notebook" / code_file, kernel, first, monkeypatch,
                           fake_input(tmp_path / "input-old", data, out / "dataset", slug, new_style=False), False)
    assert any(f"from {first / 'scratch' / 'lib' / 'ncfm'}" in text for text in printed), printed
    same_csv(first / "working" / "submission.csv", local)
    assert not (first / "working" / "runs").exists()  # only the answer goes to the notebook's output

    # the rerun at scoring: other test images, the new path style, nothing changed in the notebook
    hidden = hidden_test_set(data, tmp_path / "hidden")
    again = tmp_path / "again"
    printed = run_notebook(out / "notebook" / code_file, kernel, again, monkeypatch,
                           fake_input(tmp_path / "input-new", hidden, out / "dataset", slug, new_style=True), True)
    assert any("hidden-test rerun: True" in text for text in printed)
    expected = tmp_path / "hidden.csv"
    assert ncfm(["predict", "--run", str(run), "--data-dir", str(hidden), "--folds-csv", str(data / "folds.csv"),
                 "--tta", "2", "--out", str(expected), "--no-report", *cache]) == 0
    answer = pd.read_csv(again / "working" / "submission.csv")
    assert list(answer.image) == [f"img_9{i:04d}.jpg" for i in range(10)]
    same_csv(again / "working" / "submission.csv", expected)
