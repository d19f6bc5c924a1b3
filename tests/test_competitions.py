"""Other competitions than NCFM, end to end: their layouts are read from their own files, and
split_train_val -> train -> predict -> validate with only --data-dir (plus run, fold and size
flags) give a CSV with the sample submission's exact header and ids.

Dog Breed: a flat train/ + labels.csv (ids without extension), one probability column per
breed. Plant Seedlings: class folders with spaces, one label per row. Aerial Cactus: 32x32
images (scaled up to the model's minimum), train.csv with 0/1, one probability per id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN, write_image
from ncfm.cli import main
from ncfm.dataset import describe_competition
from ncfm.synthetic import make_synthetic

# One epoch, the head's on a frozen backbone, keeps three pipelines cheap: what is tested is the
# files, not the learning
ONE_EPOCH = ["--epochs", "1"]
LAYOUTS = {  # layout -> (kind, metric, n_train)
    "dog-breed": ("probabilities", "log_loss", 60),
    "plant-seedlings": ("label", "accuracy", 60),
    "aerial-cactus": ("binary", "roc_auc", 48),
}


def run_pipeline(root: Path, layout: str) -> dict:
    data, run, out = root / "data", root / "runs" / "tiny", root / "submission.csv"
    make_synthetic(data, n_train=LAYOUTS[layout][2], n_test1=10, boats=6, scale=0.08, seed=1, layout=layout,
                   n_classes=3 if layout != "aerial-cactus" else None)
    assert main(["split_train_val", "--data-dir", str(data), "--folds", "2"]) == 0
    assert main(["train", "--data-dir", str(data), "--fold", "0", "--run", str(run), *TINY_TRAIN, *ONE_EPOCH]) == 0
    assert main(["predict", "--data-dir", str(data), "--run", str(run), "--tta", "1", "--out", str(out)]) == 0
    assert main(["validate", str(out), "--data-dir", str(data)]) == 0
    return {"data": data, "run": run, "out": out}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def pipeline(request, tmp_path_factory):
    return request.param, run_pipeline(tmp_path_factory.mktemp(request.param), request.param)


def read_text_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_submission_has_the_samples_exact_header_and_ids(pipeline):
    layout, done = pipeline
    sample = read_text_csv(done["data"] / "sample_submission.csv")
    written = read_text_csv(done["out"])
    assert list(written.columns) == list(sample.columns)
    assert list(written.iloc[:, 0]) == list(sample.iloc[:, 0])


@pytest.mark.slow
def test_the_answer_columns_hold_what_the_kind_asks_for(pipeline):
    layout, done = pipeline
    comp = json.loads((done["data"] / "competition.json").read_text())
    kind, metric, _ = LAYOUTS[layout]
    assert (comp["kind"], comp["metric"]) == (kind, metric)
    written = read_text_csv(done["out"])
    if kind == "label":  # class names exactly as spelled, spaces and all
        assert set(written.species) <= set(comp["classes"])
        assert any(" " in c for c in comp["classes"]) or any("-" in c for c in comp["classes"])
    elif kind == "binary":
        assert len(written.columns) == 2
        p = written.has_cactus.astype(float)
        assert ((p >= 0) & (p <= 1)).all()
    else:
        probs = written.iloc[:, 1:].astype(float).to_numpy()
        assert probs.shape[1] == len(comp["classes"])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_the_fold_records_the_classes_and_the_oof_report_uses_the_metric(pipeline, capsys):
    layout, done = pipeline
    comp = json.loads((done["data"] / "competition.json").read_text())
    config = json.loads((done["run"] / "fold0" / "config.json").read_text())
    assert config["classes"] == comp["classes"]
    calibration = json.loads((done["run"] / "calibration.json").read_text())
    assert calibration["metric"] == comp["metric"]
    if comp["metric"] != "log_loss":
        assert calibration["temperature"] == 1.0  # a temperature changes no label and no ranking


@pytest.mark.slow
def test_a_saved_model_loads_in_plain_keras_and_predicts_as_ncfm_predict_does(pipeline, tmp_path):
    """best.keras in a Python that cannot import ncfm gives the predictions `ncfm predict --tta 1`
    saved for that fold (before averaging and calibration)."""
    from ncfm import runs
    from ncfm.cache import decode_resized

    layout, done = pipeline
    if layout != "dog-breed":
        pytest.skip("one layout is enough")
    fold = runs.fold_of(done["run"], 0)
    saved = pd.read_csv(runs.predictions_path(done["run"], 1, fold, 1), dtype={"image": str})
    comp = json.loads((done["data"] / "competition.json").read_text())
    pixels = np.stack([decode_resized(done["data"] / "test" / f"{i}.jpg", 75) for i in saved.image])
    np.save(tmp_path / "pixels.npy", pixels)
    script = (
        "import sys, json, zipfile; sys.modules['ncfm'] = None\n"  # any `import ncfm...` now fails
        "import numpy as np, keras\n"
        f"path = {str(fold.best)!r}\n"
        "model = keras.saving.load_model(path)\n"
        "classes = json.loads(zipfile.ZipFile(path).read('ncfm/model.json'))['classes']\n"
        f"probs = model.predict(np.load({str(tmp_path / 'pixels.npy')!r}), verbose=0)\n"
        f"np.save({str(tmp_path / 'plain.npy')!r}, probs)\n"
        f"json.dump(classes, open({str(tmp_path / 'classes.json')!r}, 'w'))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done_run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done_run.returncode == 0, done_run.stderr[-3000:]
    assert json.loads((tmp_path / "classes.json").read_text()) == comp["classes"]
    plain = np.load(tmp_path / "plain.npy")
    np.testing.assert_allclose(plain / plain.sum(axis=1, keepdims=True), saved[comp["classes"]].to_numpy(),
                               atol=2e-6)


# ----------------------------------------------------------------------------- detection
def test_sample_columns_decide_the_class_order(tmp_path):
    for i, breed in enumerate(["pug", "beagle", "akita", "pug"]):
        write_image(tmp_path / "train" / f"d{i}.jpg")
    (tmp_path / "labels.csv").write_text("id,breed\nd0,pug\nd1,beagle\nd2,akita\nd3,pug\n")
    write_image(tmp_path / "test" / "t0.jpg")
    (tmp_path / "sample_submission.csv").write_text("id,pug,akita,beagle\nt0,0.3,0.3,0.4\n")
    comp, train = describe_competition(tmp_path)
    assert comp.classes == ("pug", "akita", "beagle") and comp.id_suffix == ".jpg"
    assert list(train.image) == ["train/d0.jpg", "train/d1.jpg", "train/d2.jpg", "train/d3.jpg"]


@pytest.fixture
def flat_layout(tmp_path):
    data = tmp_path / "data"
    for i in range(6):
        write_image(data / "train" / f"c{i}.jpg", size=(32, 32))
    (data / "train.csv").write_text("id,has_cactus\n" + "".join(f"c{i}.jpg,{i % 2}\n" for i in range(6)))
    write_image(data / "test" / "q0.jpg", size=(32, 32))
    (data / "sample_submission.csv").write_text("id,has_cactus\nq0.jpg,0.5\n")
    return data


def split(data, *flags) -> int:
    return main(["split_train_val", "--data-dir", str(data), "--folds", "2", "--groups", "none", *flags])


def test_a_labels_csv_naming_a_missing_image_is_an_error_naming_the_csv(flat_layout, capsys):
    (flat_layout / "train" / "c5.jpg").unlink()
    assert split(flat_layout) == 2
    err = capsys.readouterr().err
    assert f"{flat_layout / 'train.csv'}: 1 id(s) have no image in {flat_layout / 'train'}: c5.jpg" in err
    assert "Traceback" not in err and not (flat_layout / "folds.csv").exists()


def test_an_image_without_a_label_is_an_error_naming_the_image(flat_layout, capsys):
    write_image(flat_layout / "train" / "stray.jpg", size=(32, 32))
    assert split(flat_layout) == 2
    err = capsys.readouterr().err
    assert f"1 image(s) without a label in {flat_layout / 'train.csv'}: {flat_layout / 'train' / 'stray.jpg'}" in err


def test_a_labels_csv_with_unclear_columns_asks_for_the_label_column(flat_layout, capsys):
    (flat_layout / "train.csv").write_text("id,a,b\n" + "".join(f"c{i}.jpg,{i % 2},x\n" for i in range(6)))
    assert split(flat_layout) == 2
    assert "cannot tell which column holds the labels among a, b; pass --label-column" in capsys.readouterr().err
    assert split(flat_layout, "--label-column", "a") == 0


def test_a_class_with_fewer_images_than_folds_is_a_warning_naming_the_labels(flat_layout, capsys):
    (flat_layout / "train.csv").write_text("id,has_cactus\n" + "".join(f"c{i}.jpg,{int(i == 0)}\n" for i in range(6)))
    assert split(flat_layout) == 0
    err = capsys.readouterr().err
    assert f"WARNING: {flat_layout / 'train.csv'}: fewer images than folds for 1 (1)" in err


def test_a_sample_whose_values_are_neither_labels_nor_probabilities_is_named(flat_layout, capsys):
    (flat_layout / "sample_submission.csv").write_text("id,has_cactus\nq0.jpg,maybe\n")
    assert split(flat_layout) == 2
    assert f"{flat_layout / 'sample_submission.csv'}: cannot tell the kind of submission" in capsys.readouterr().err


def test_a_sample_id_without_a_test_image_is_named_at_split(flat_layout, capsys):
    (flat_layout / "sample_submission.csv").write_text("id,has_cactus\nzz,0.5\n")
    assert split(flat_layout) == 2
    assert "sample_submission.csv" in capsys.readouterr().err


# ----------------------------------------------------------------------------- validate
@pytest.fixture
def plant(tmp_path):
    data = tmp_path / "data"
    for name in ("Black-grass", "Common Chickweed", "Sugar beet"):
        for i in range(3):
            write_image(data / "train" / name / f"{name[:2]}{i}.png", fmt="PNG")
    for i in range(2):
        write_image(data / "test" / f"x{i}.png", fmt="PNG")
    (data / "sample_submission.csv").write_text("file,species\nx0.png,Sugar beet\nx1.png,Sugar beet\n")
    assert split(data) == 0
    return data


def validate(data, text, tmp_path, capsys):
    (tmp_path / "s.csv").write_text(text)
    code = main(["validate", str(tmp_path / "s.csv"), "--data-dir", str(data)])
    return code, capsys.readouterr()


def test_validate_accepts_known_labels(plant, tmp_path, capsys):
    code, out = validate(plant, "file,species\nx0.png,Black-grass\nx1.png,Common Chickweed\n", tmp_path, capsys)
    assert code == 0 and "OK: 2 rows" in out.out


@pytest.mark.parametrize("text, expected", [
    ("file,label\nx0.png,Black-grass\nx1.png,Sugar beet\n", "header must be exactly file,species"),
    ("file,species\nx0.png,Black-grass\n", "x1.png"),
    ("file,species\nx0.png,black grass\nx1.png,Sugar beet\n", "'black grass' should be 'Black-grass'"),
    ("file,species\nx0.png,Tomato\nx1.png,Sugar beet\n", "Tomato"),
])
def test_validate_names_each_problem_and_the_file(plant, tmp_path, capsys, text, expected):
    code, out = validate(plant, text, tmp_path, capsys)
    assert code == 2
    assert expected in out.err and str(tmp_path / "s.csv") in out.err and "Traceback" not in out.err


def test_paddy_layout_class_folders_in_train_images_and_a_label_answer(tmp_path):
    for label in ("blast", "normal", "tungro"):
        for i in range(2):
            write_image(tmp_path / "train_images" / label / f"{label}{i}.jpg")
    (tmp_path / "train.csv").write_text("image_id,label,variety,age\nblast0.jpg,blast,ADT45,45\n")
    write_image(tmp_path / "test_images" / "200001.jpg")
    (tmp_path / "sample_submission.csv").write_text("image_id,label\n200001.jpg,\n")
    comp, train = describe_competition(tmp_path)
    assert (comp.kind, comp.metric, comp.header) == ("label", "accuracy", ("image_id", "label"))
    assert comp.train == {"source": "folders", "dir": "train_images"} and comp.test_dirs == ("test_images",)
    assert len(train) == 6


def test_invasive_layout_bare_number_ids_keep_their_zeros_and_find_their_files(tmp_path):
    from ncfm.dataset import find_test_images

    for n in ("1", "2", "3", "4"):
        write_image(tmp_path / "train" / f"{n}.jpg")
    (tmp_path / "train_labels.csv").write_text("name,invasive\n1,0\n2,1\n3,0\n4,1\n")
    write_image(tmp_path / "test" / "0012.jpg")
    (tmp_path / "sample_submission.csv").write_text("name,invasive\n0012,0.5\n")
    comp, train = describe_competition(tmp_path)
    assert (comp.kind, comp.positive, comp.id_suffix) == ("binary", "1", ".jpg")
    test, _ = find_test_images(tmp_path, comp=comp)
    assert list(test.id) == ["0012"] and list(test.path) == ["test/0012.jpg"]
