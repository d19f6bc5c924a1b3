"""Read a Kaggle competition's layout: training labels, test ids from the sample submission, decodes.

Training labels, either way Kaggle ships them:
    data/train/<class>/*.jpg                one folder per class (NCFM, Plant Seedlings; any names)
    data/train/<id>.jpg + data/labels.csv   a flat folder and a CSV of id,label (Dog Breed: ids
                                            without extension; Aerial Cactus: train.csv, with it)
Test images: the sample submission's first column holds the ids as Kaggle wants them written
(sample_submission.csv, or NCFM's sample_submission_stg{1,2}.csv); the files are in test*/
folders (test/, test_images/, test_stg1/, test_stg2/, or nested one level deeper).

`describe_competition` reads all of that once (for split_train_val), `competition_for` gives
later commands the description split_train_val saved.

Paths in the returned tables are POSIX paths relative to the data folder, so a manifest
stays valid when the folder moves. Problems a person can fix raise NcfmError naming the
path and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ncfm import NcfmError, competition
from ncfm.competition import Competition
from ncfm.pool import cpu_count, process_pool

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")  # compared lower-cased
THUMB_SIZE = (32, 18)  # (width, height) of the thumbnail check_images keeps for grouping
_FORMAT_BY_EXT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}


def is_image_name(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    # .DS_Store, macOS resource forks (._img_00003.jpg), editor temp files
    return name.startswith(".") or name in ("Thumbs.db", "desktop.ini")


# --------------------------------------------------------------------------- the layout
TRAIN_DIRS = ("train", "train_images", "train-jpg")  # where Kaggle's training images usually are
# and their labels, when not in folders
LABEL_CSVS = ("labels.csv", "train.csv", "train_labels.csv", "train_v2.csv", "trainLabels.csv")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "breed", "species")
SAMPLE_FILES = ("sample_submission.csv", "sampleSubmission.csv", "sample_submission_v2.csv",
                "sample_submission_stg1.csv")
ORDINAL_COLUMNS = ("diagnosis", "level", "grade", "severity")  # a labels column of whole numbers so named: grades
NUMBER_VALUES = 30  # a labels column of more distinct numbers than this holds a number to predict
POSITIVE_LABELS = ("1", "true", "yes", "positive")


def describe_competition(data_dir: os.PathLike | str, *, train_dir: str | None = None,
                         test_dir: str | None = None, labels_csv: str | None = None,
                         id_column: str | None = None, label_column: str | None = None,
                         slug: str | None = None, task: str | None = None,
                         metric: str | None = None) -> tuple[Competition, pd.DataFrame]:
    """Read the competition's own files: (its description, the training table image,label).

    Labels come from class folders (train/<class>/) or from a flat image folder plus a labels
    CSV; classes, ids and the kind of submission come from the sample submission's header and
    values. The keyword arguments override what would be detected (the CLI's --train-dir, ...,
    --task, --metric). The task (one class per image, several labels, a number, a grade) comes from
    `task`, else the slug (competition.KNOWN_TASKS), else the labels (_task_of).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NcfmError(f"{data_dir}: no such folder; point --data-dir at the folder where the "
                        f"competition's files were unzipped")
    train_rel = _train_folder(data_dir, train_dir)
    csv_path = _labels_csv(data_dir, labels_csv, train_rel)
    subfolders, loose = _folder_entries(data_dir / train_rel)
    if not subfolders and not loose:
        raise NcfmError(f"{data_dir / train_rel}: empty, no class folders or images; unzip the "
                        f"competition's training images into it")
    if subfolders and labels_csv is None:
        train, source = _labels_from_folders(data_dir, train_rel, subfolders, loose), \
            {"source": "folders", "dir": train_rel}
    elif csv_path is not None:
        train, source = _labels_from_csv(data_dir, train_rel, csv_path, id_column, label_column,
                                         _answer_column(data_dir))
    elif (train := _labels_from_names(train_rel, loose)) is not None:
        source = {"source": "names", "dir": train_rel}
    else:
        raise NcfmError(
            f"{data_dir / train_rel}: holds images but no class folders, no labels CSV "
            f"({', '.join(LABEL_CSVS)}) was found in {data_dir}, and the file names do not start with a label "
            f"(as cat.1.jpg, dog.1.jpg); put the competition's labels CSV there or pass --labels-csv PATH "
            f"(with --id-column/--label-column if its columns are not obvious)")
    samples = _sample_files(data_dir)
    sample_path = data_dir / samples[min(samples)] if samples else None
    sample = read_sample_file(sample_path) if sample_path else None
    task, metric = _task_of(train.label, source, task, metric, slug)
    if task != "single":
        return _other_task(data_dir, train, source, task, metric, sample, sample_path, samples, test_dir, slug)
    classes = tuple(sorted(train.label.unique()))
    if len(classes) < 2:
        raise NcfmError(f"{data_dir / train_rel}: only one class ({classes[0]}); a classifier needs two or more")

    test_dirs = _test_folders(data_dir, test_dir)
    ncfm_like = set(classes) == set(competition.NCFM_CLASSES)
    if not samples:
        if ncfm_like:  # NCFM without its sample files: ids from the folder listing, as before
            comp = competition.ncfm(samples={}, test_dirs=test_dirs or ("test_stg1", "test_stg2"))
            comp = dataclasses.replace(comp, train=source)
            return comp, train
        raise NcfmError(f"{data_dir}: no sample submission ({', '.join(SAMPLE_FILES)}); it decides the "
                        f"ids, columns and kind of the submission: download it with the competition's files")
    kind, classes, positive = _kind_of(sample, classes, sample_path, data_dir / train_rel, source)
    id_column, columns = str(sample.columns[0]), tuple(str(c) for c in sample.columns[1:])
    suffix = _id_suffix(data_dir, sample[id_column].tolist()[:50], test_dirs, sample_path)
    if slug is None:
        slug = competition.NCFM_SLUG if ncfm_like and kind == "probabilities" else ""
        if source["source"] == "names" and set(classes) == {"cat", "dog"} and kind == "binary":
            slug = competition.DOGS_VS_CATS_SLUG  # scored by log loss, which its sample cannot say
    metric = metric or competition.KNOWN_METRICS.get(slug, competition.METRICS[kind])
    _check_metric(metric, "single")
    comp = Competition(classes=classes, kind=kind, metric=metric, id_column=id_column, columns=columns,
                       positive=positive, samples={str(k): v for k, v in samples.items()},
                       test_dirs=test_dirs, id_suffix=suffix, train=source, slug=slug)
    return comp, train


def competition_for(data_dir: os.PathLike | str, manifest: os.PathLike | str | None = None) -> Competition:
    """The competition of a data folder: competition.json beside the manifest (written by
    split_train_val), or, for a folder never split, what its files say."""
    data_dir = Path(data_dir)
    saved = competition.path_beside(Path(manifest) if manifest else data_dir / "folds.csv")
    if saved.is_file():
        return competition.load(saved)
    if manifest is not None and not Path(manifest).is_file():
        raise NcfmError(f"{manifest}: folds manifest not found; run `ncfm split_train_val` first "
                        f"(or pass --folds-csv)")
    if not any((data_dir / d).is_dir() for d in TRAIN_DIRS):  # test images only (a Kaggle notebook)
        samples = _sample_files(data_dir) if data_dir.is_dir() else {}
        if samples:
            found = competition_from_sample(data_dir / samples[min(samples)])
            return dataclasses.replace(found, samples={str(k): v for k, v in samples.items()},
                                       test_dirs=_test_folders(data_dir, None))
        if (data_dir / "test_stg1").is_dir():  # NCFM's test folders alone: ids from their listing
            return competition.ncfm(samples={})
    return describe_competition(data_dir)[0]


def competition_from_sample(path: os.PathLike | str) -> Competition:
    """What a sample submission alone says about the competition: its header, and the kind of
    answer its values show. NCFM's header gives `competition.ncfm()` (and so its slug). A single
    column of class names cannot say which classes exist: that needs competition.json."""
    path = Path(path)
    sample = read_sample_file(path)
    if sample is None:
        raise NcfmError(f"{path}: sample submission not found")
    id_column, columns = str(sample.columns[0]), tuple(str(c) for c in sample.columns[1:])
    ncfm = competition.ncfm()
    if (id_column, *columns) == ncfm.header:
        return ncfm
    if len(columns) > 1:
        return Competition(classes=columns, kind="probabilities", metric="log_loss", id_column=id_column,
                           columns=columns)
    values = pd.to_numeric(sample[columns[0]].str.strip(), errors="coerce")
    if len(values) and values.notna().all() and values.between(0, 1).all():
        # A probability of the positive class; the sample does not name the classes, and
        # checking a file needs only the column's name.
        return Competition(classes=("0", "1"), kind="binary", metric="roc_auc", id_column=id_column,
                           columns=columns, positive="1")
    raise NcfmError(f"{path}: one answer column {columns[0]!r} holding class names, and the sample alone does not "
                    f"say which classes exist; run `ncfm split_train_val --data-dir DIR` on the competition's "
                    f"files (it writes competition.json) and pass --data-dir DIR")



def _train_folder(data_dir: Path, train_dir: str | None) -> str:
    if train_dir:
        if not (data_dir / train_dir).is_dir():
            raise NcfmError(f"{data_dir / train_dir}: no such folder (--train-dir)")
        return Path(train_dir).as_posix()
    for name in TRAIN_DIRS:
        if (data_dir / name).is_dir():
            return name
    have = sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir() if not is_hidden(p.name))
    raise NcfmError(f"{data_dir / 'train'}: no such folder; point --data-dir at the folder where the "
                    f"competition's files were unzipped (it holds {' or '.join(d + '/' for d in TRAIN_DIRS)}; "
                    f"found {', '.join(have[:10]) or 'nothing'}), or pass --train-dir")


def _labels_csv(data_dir: Path, labels_csv: str | None, train_rel: str = "train") -> Path | None:
    """--labels-csv, else the one of LABEL_CSVS there whose first column names the training images
    (iMet ships labels.csv, its attribute names, beside train.csv, its labels), else the first there."""
    if labels_csv:
        path = Path(labels_csv) if Path(labels_csv).is_absolute() else data_dir / labels_csv
        if not path.is_file():
            path = Path(labels_csv)
        if not path.is_file():
            raise NcfmError(f"{labels_csv}: labels CSV not found (--labels-csv)")
        return path
    found = [data_dir / n for n in LABEL_CSVS if (data_dir / n).is_file()]
    if len(found) < 2:
        return found[0] if found else None
    train = data_dir / train_rel
    names = set(os.listdir(train)) if train.is_dir() else set()
    names |= {os.path.splitext(n)[0] for n in names}

    def naming(path: Path) -> float:
        try:
            ids = pd.read_csv(path, dtype=str, usecols=[0], nrows=50, keep_default_na=False).iloc[:, 0].str.strip()
        except Exception:  # unreadable: _labels_from_csv says why if it is chosen
            return 0.0
        return float(ids.isin(names).mean()) if len(ids) else 0.0

    return max(found, key=naming)  # the first of the best, in LABEL_CSVS order


def _folder_entries(train: Path) -> tuple[list[str], list[str]]:
    """(class folders, loose files) of a training folder; hidden files left out."""
    entries = sorted(e for e in os.listdir(train) if not is_hidden(e))
    folders = [e for e in entries if (train / e).is_dir()]
    return folders, [e for e in entries if e not in folders]


def _labels_from_folders(data_dir: Path, train_rel: str, folders: list[str], loose: list[str]) -> pd.DataFrame:
    train = data_dir / train_rel
    if loose:
        raise NcfmError(f"{train / loose[0]}: stray file in {train_rel}/ (only the class folders "
                        f"{', '.join(folders[:8])}{', ...' if len(folders) > 8 else ''} belong there); move or delete it")
    rows, empty = [], []
    for label in folders:
        names = [n for n in sorted(os.listdir(train / label)) if not is_hidden(n)]
        for name in names:
            if not is_image_name(name):
                raise NcfmError(f"{train / label / name}: not an image name (expected "
                                f"{', '.join(IMAGE_EXTENSIONS)}, any case); move or delete it")
            rows.append((f"{train_rel}/{label}/{name}", label))
        if not names:
            empty.append(label)
    if not rows:
        raise NcfmError(f"{train}: the class folders hold no images; unzip the competition's training images into it")
    if empty:
        raise NcfmError(f"{train}: no images in class folder(s) {', '.join(empty)}; every class needs "
                        f"training images (remove the folder if the class does not exist)")
    return pd.DataFrame(rows, columns=["image", "label"]).sort_values("image", kind="stable").reset_index(drop=True)


LABEL_IN_NAME = re.compile(r"([A-Za-z][A-Za-z ]*)[._-].+")  # cat.123.jpg -> cat


def _labels_from_names(train_rel: str, names: list[str]) -> pd.DataFrame | None:
    """Labels from the first part of each file name (Dogs vs. Cats: train/cat.0.jpg, train/dog.0.jpg),
    or None when the names do not read so: every file an image whose name starts with letters then
    '.', '_' or '-', at least two such labels and, on average, two images or more of each (img_0001.jpg
    would give one label; 1.jpg, 2.jpg none)."""
    matches = [LABEL_IN_NAME.fullmatch(n) for n in names]
    if not names or not all(m and is_image_name(n) for m, n in zip(matches, names)):
        return None
    labels = [m.group(1) for m in matches]
    if not 2 <= len(set(labels)) <= len(names) / 2:
        return None
    return pd.DataFrame({"image": [f"{train_rel}/{n}" for n in names], "label": labels}).sort_values(
        "image", kind="stable").reset_index(drop=True)


def _answer_column(data_dir: Path) -> str | None:
    """The sample submission's answer column when it has one (its name is often the labels column's)."""
    samples = _sample_files(data_dir) if data_dir.is_dir() else {}
    sample = read_sample_file(data_dir / samples[min(samples)], check=False) if samples else None
    return str(sample.columns[1]) if sample is not None and len(sample.columns) == 2 else None


def _check_metric(metric: str, task: str) -> None:
    if metric not in competition.TASK_METRICS[task]:
        raise NcfmError(f"--metric {metric}: not a metric of a {task} competition; choose one of "
                        f"{', '.join(competition.TASK_METRICS[task])}")


def _task_of(labels: pd.Series, source: dict, task: str | None, metric: str | None,
             slug: str | None) -> tuple[str, str | None]:
    """(task, metric or None for the task's default): --task, else the slug's (KNOWN_TASKS), else what
    the labels show (_task_from_labels)."""
    known = competition.KNOWN_TASKS.get(slug or "")
    if task is None and known:
        task, metric = known[0], metric or known[1]
    task = task or _task_from_labels(labels, source)
    if task not in competition.TASKS:
        raise NcfmError(f"--task {task}: choose one of {', '.join(competition.TASKS)}")
    if task != "single" and source["source"] != "csv":
        where = "file names" if source["source"] == "names" else "class folders"
        raise NcfmError(f"--task {task}: its labels come from a labels CSV, but {source['dir']}/ has its labels in "
                        f"its {where} (one class per image); pass --labels-csv PATH, or leave --task out")
    if metric:
        _check_metric(metric, task)
    return task, metric


def _task_from_labels(labels: pd.Series, source: dict) -> str:
    """What a labels column holds: several space-separated labels (more distinct combinations than
    distinct labels, as Planet's tags), a number (more than NUMBER_VALUES distinct numbers, as
    Pawpularity's), a grade (whole numbers in a column named as ORDINAL_COLUMNS, as APTOS' diagnosis),
    else one class per image ("single"). Other grades need --task ordinal: a column of digits can as
    well be classes (Digit Recognizer's)."""
    labels = labels.astype(str).str.strip()
    tokens = labels.str.split()
    if (tokens.str.len() > 1).any() and labels.nunique() > len({t for ts in tokens for t in ts}):
        return "multilabel"
    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.notna().all():
        if labels.nunique() > NUMBER_VALUES:
            return "regression"
        if (source.get("label_column", "").lower() in ORDINAL_COLUMNS and (numbers == numbers.round()).all()
                and numbers.nunique() >= 3):
            return "ordinal"
    return "single"


def _other_task(data_dir: Path, train: pd.DataFrame, source: dict, task: str, metric: str | None,
                sample: pd.DataFrame | None, sample_path: Path | None, samples: dict, test_dir: str | None,
                slug: str | None) -> tuple[Competition, pd.DataFrame]:
    """The competition and training table of a multilabel, regression or ordinal task: the labels
    checked and normalised (a label once per image; grades as integers), and what the task needs
    from them (the label vocabulary, the value range, the grades)."""
    where = data_dir / source["csv"]
    if sample is None:
        raise NcfmError(f"{data_dir}: no sample submission ({', '.join(SAMPLE_FILES)}); it decides the ids and the "
                        f"answer column: download it with the competition's files")
    if len(sample.columns) != 2:
        raise NcfmError(f"{sample_path}: {len(sample.columns) - 1} answer columns, but a {task} competition answers "
                        f"in one; pass --task single if it asks for a probability per class")
    id_column, column = str(sample.columns[0]), str(sample.columns[1])
    labels = train.label.astype(str).str.strip()
    if task == "multilabel":
        tokens = labels.str.split()
        extra = {"classes": tuple(sorted({t for ts in tokens for t in ts})), "separator": competition.TAG_SEPARATOR}
        labels = tokens.map(lambda ts: competition.TAG_SEPARATOR.join(dict.fromkeys(ts)))
    else:
        numbers = pd.to_numeric(labels, errors="coerce")
        bad = labels[numbers.isna() | ~np.isfinite(numbers.fillna(0))]
        if len(bad):
            raise NcfmError(f"{where}: {len(bad)} label(s) of {source['label_column']!r} are not numbers "
                            f"({', '.join(map(repr, bad.unique()[:3]))}); a {task} competition needs a number "
                            f"per image: fix those rows, or pass --task single if its labels are classes")
        if task == "ordinal":
            if not (numbers == numbers.round()).all():
                raise NcfmError(f"{where}: grades must be whole numbers; {source['label_column']!r} holds "
                                f"{numbers[numbers != numbers.round()].iloc[0]:g}; pass --task regression")
            grades = tuple(range(int(numbers.min()), int(numbers.max()) + 1))
            if not 2 <= len(grades) <= 100:
                raise NcfmError(f"{where}: {len(grades)} grade(s) from {grades[0]} to {grades[-1]}; an ordinal "
                                f"competition has 2 to 100; pass --task regression or single")
            extra = {"classes": (column,), "grades": grades}
            labels = numbers.astype(int).astype(str)
        else:
            if numbers.min() == numbers.max():
                raise NcfmError(f"{where}: every label is {numbers.min():g}; nothing to predict")
            extra = {"classes": (column,), "value_range": (float(numbers.min()), float(numbers.max()))}
    test_dirs = _test_folders(data_dir, test_dir)
    suffix = _id_suffix(data_dir, sample[id_column].tolist()[:50], test_dirs, sample_path)
    comp = Competition(kind=task, metric=metric or competition.METRICS[task], id_column=id_column, columns=(column,),
                       samples={str(k): v for k, v in samples.items()}, test_dirs=test_dirs, id_suffix=suffix,
                       train=source, slug=slug or "", **extra)
    return comp, train.assign(label=labels.to_numpy())


def _pick_label_column(df: pd.DataFrame, id_col: str, path: Path, answer: str | None = None) -> str:
    """The labels column: the only other one, the sample submission's answer column (Pawpularity's
    train.csv holds 12 metadata columns beside it), or the one with a usual name."""
    others = [c for c in df.columns if c != id_col]
    if len(others) == 1:
        return others[0]
    if answer in others:
        return answer
    named = [c for c in others if c.lower() in LABEL_COLUMNS]
    if len(named) == 1:
        return named[0]
    raise NcfmError(f"{path}: cannot tell which column holds the labels among {', '.join(others)}; "
                    f"pass --label-column NAME")


def _labels_from_csv(data_dir: Path, train_rel: str, path: Path, id_column: str | None,
                     label_column: str | None, answer: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Labels from a CSV of (id, label) for a flat folder of images; ids with or without extension."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises many types for unreadable CSVs
        raise NcfmError(f"{path}: cannot read it as CSV ({e}); download it again") from None
    if df.empty or len(df.columns) < 2:
        raise NcfmError(f"{path}: needs an id column and a label column and at least one row "
                        f"(header is {','.join(df.columns)})")
    id_col = id_column or df.columns[0]
    for flag, col in (("--id-column", id_col), ("--label-column", label_column)):
        if col and col not in df.columns:
            raise NcfmError(f"{path}: no column {col!r} ({flag}); its columns are {', '.join(df.columns)}")
    label_col = label_column or _pick_label_column(df, id_col, path, answer)
    ids, labels = df[id_col].str.strip(), df[label_col].str.strip()
    blank = df.index[(ids == "") | (labels == "")]
    if len(blank):
        raise NcfmError(f"{path}: empty id or label on line(s) {', '.join(str(i + 2) for i in blank[:5])}; "
                        f"fix or remove those rows")
    dups = ids[ids.duplicated()].unique()
    if len(dups):
        raise NcfmError(f"{path}: id(s) listed twice: {', '.join(dups[:5])}; each image needs one label")

    train = data_dir / train_rel
    files = [n for n in sorted(os.listdir(train)) if is_image_name(n) and (train / n).is_file()]
    by_name = {n: n for n in files}
    by_stem: dict[str, list[str]] = {}
    for n in files:
        by_stem.setdefault(os.path.splitext(n)[0], []).append(n)
    image_of, missing = [], []
    for i in ids:
        name = by_name.get(i) or (by_stem.get(i) or [None])[0]
        image_of.append(name)
        if name is None:
            missing.append(i)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NcfmError(f"{path}: {len(missing)} id(s) have no image in {train}: {shown}; add the images "
                        f"or remove their rows (--train-dir if the images are elsewhere)")
    unlabelled = sorted(set(files) - set(image_of))
    if unlabelled:
        shown = ", ".join(str(train / n) for n in unlabelled[:5])
        more = f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else ""
        raise NcfmError(f"{len(unlabelled)} image(s) without a label in {path}: {shown}{more}; add a row "
                        f"for each or move them out of {train}")
    table = pd.DataFrame({"image": [f"{train_rel}/{n}" for n in image_of], "label": labels.to_numpy()})
    table = table.sort_values("image", kind="stable").reset_index(drop=True)
    return table, {"source": "csv", "dir": train_rel, "csv": _rel(path, data_dir),
                   "id_column": id_col, "label_column": label_col}


def _rel(path: Path, data_dir: Path) -> str:
    try:
        return path.resolve().relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _sample_files(data_dir: Path) -> dict[int, str]:
    """stage -> sample submission file name: NCFM's two stages, or one sample_submission.csv."""
    staged = {s: f"sample_submission_stg{s}.csv" for s in (1, 2)}
    found = {s: n for s, n in staged.items() if read_sample_file(data_dir / n, check=False) is not None}
    if found:
        return found
    for name in SAMPLE_FILES[:3]:
        if read_sample_file(data_dir / name, check=False) is not None:
            return {1: name}
    return {}


def _test_folders(data_dir: Path, test_dir: str | None) -> tuple[str, ...]:
    if test_dir:
        if not (data_dir / test_dir).is_dir():
            raise NcfmError(f"{data_dir / test_dir}: no such folder (--test-dir)")
        return (Path(test_dir).as_posix(),)
    return tuple(sorted(p.name for p in data_dir.iterdir() if p.is_dir() and p.name.lower().startswith("test")))


def _kind_of(sample: pd.DataFrame, classes: tuple, path: Path, train: Path, source: dict):
    """(kind, classes in the model's order, positive class) from the sample's header and values."""
    columns = [str(c) for c in sample.columns[1:]]
    labelled_by = {"csv": f"the labels of {source.get('csv')}", "names": f"the file names in {train}"}.get(
        source["source"], f"the class folders of {train}")
    if len(columns) > 1:
        missing = [c for c in columns if c not in classes]
        unused = [c for c in classes if c not in columns]
        if missing or unused:
            lower = {c.lower(): c for c in classes}
            hints = [f"{lower[c.lower()]!r} should be {c!r}" for c in missing if c.lower() in lower]
            raise NcfmError(
                f"{path}: its class columns and {labelled_by} differ"
                + (f"; no training images for column(s) {', '.join(missing)}" if missing else "")
                + (f"; class(es) {', '.join(unused)} have no column" if unused else "")
                + (f" ({'; '.join(hints)})" if hints else "")
                + "; rename or remove the folder/labels so both name the same classes")
        return "probabilities", tuple(columns), ""
    if not columns:
        raise NcfmError(f"{path}: only an id column; a sample submission needs the answer's column(s) too")
    values = sample.iloc[:, 1].astype(str).str.strip()
    # a column of class names; of more than two classes even when they read as 0 and 1 (grades as classes)
    if len(values) and values.isin(classes).all() and (not _numbers(values) or len(classes) > 2):
        return "label", classes, ""
    if len(classes) == 2 and _numbers(values):
        positive = next((c for c in classes if c.strip().lower() in POSITIVE_LABELS), classes[1])
        return "binary", classes, positive
    if len(classes) > 2 and not _numbers(values):  # one column cannot hold more than one probability
        return "label", classes, ""
    raise NcfmError(f"{path}: cannot tell the kind of submission: one answer column {columns[0]!r} whose "
                    f"values ({', '.join(values.iloc[:3])}, ...) are neither class names of {labelled_by} "
                    f"nor probabilities of a two-class problem ({len(classes)} classes)")


def _numbers(values: pd.Series) -> bool:
    parsed = pd.to_numeric(values, errors="coerce")
    return bool(len(values)) and not parsed.isna().any() and bool(((parsed >= 0) & (parsed <= 1)).all())


def _id_suffix(data_dir: Path, ids: list[str], test_dirs: tuple, path: Path) -> str:
    """'' when the sample's ids are file names, else the extension their files have ('.jpg')."""
    if not ids or all(is_image_name(str(i).rpartition("/")[2]) for i in ids):
        return ""
    for folder in test_dirs:
        for root in (data_dir / folder / folder, data_dir / folder):
            if root.is_dir():
                stems = {}
                for n in _list_images(root):
                    stems.setdefault(os.path.splitext(n)[0], os.path.splitext(n)[1])
                found = [stems[i] for i in ids if i in stems]
                if found:
                    return max(set(found), key=found.count)
    raise NcfmError(f"{path}: its ids ({', '.join(map(str, ids[:3]))}, ...) are not image names, and no "
                    f"image of those names was found in {', '.join(str(data_dir / d) for d in test_dirs) or data_dir}; "
                    f"unzip the test images there or pass --test-dir")


def find_train_images(data_dir: os.PathLike | str, **overrides) -> pd.DataFrame:
    """Every training image as a row (image, label); image is relative to data_dir, sorted."""
    return describe_competition(data_dir, **overrides)[1]


# --------------------------------------------------------------------------- test
def read_sample_file(path: os.PathLike | str, id_column: str | None = None,
                     check: bool = True) -> pd.DataFrame | None:
    """A sample submission, or None when it is not there. The id column is the sample's first;
    every cell is read as text, so ids such as 0012 keep their zeros.

    `path` is read, or a still-zipped `path.zip` as Kaggle ships it. An unreadable file, one
    without an answer column, or (when `id_column` is given) one whose first column is another
    is an NcfmError naming it (with check=False: None, for probing which files are there).
    """
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".zip")):
        if not candidate.is_file():
            continue
        try:
            df = pd.read_csv(candidate, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            header = ",".join(map(str, df.columns))
            if len(df.columns) < 2:
                raise NcfmError(f"{candidate}: needs an id column and at least one answer column (header is "
                                f"{header}); download it again from Kaggle")
            if id_column is not None and str(df.columns[0]) != id_column:
                raise NcfmError(f"{candidate}: its first column is {str(df.columns[0])!r}, but the competition's "
                                f"ids are {id_column!r} (header is {header}); download it again from Kaggle, or "
                                f"rerun split_train_val if the competition's files changed")
        except NcfmError:
            if check:
                raise
            return None
        except Exception as e:  # pandas raises many types for unreadable CSVs
            if check:
                raise NcfmError(f"{candidate}: cannot read it as CSV ({type(e).__name__}: {e}); "
                                f"download it again from Kaggle") from None
            return None
        return df
    return None


def read_sample_submission(data_dir: os.PathLike | str, stage: int | None = None,
                           comp: Competition | None = None) -> pd.DataFrame | None:
    """The stage's sample submission as Kaggle ships it, or None when it is not there."""
    comp = comp or competition_for(data_dir)
    if not comp.samples:
        return None
    return read_sample_file(comp.sample_path(data_dir, stage))


def _list_images(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if is_image_name(n) and (folder / n).is_file())


def _image_folder(data_dir: Path, name: str) -> Path | None:
    """data_dir/name, or data_dir/name/name when an archive unpacked one level deeper."""
    for folder in (data_dir / name / name, data_dir / name):
        if folder.is_dir() and _list_images(folder):
            return folder
    return data_dir / name if (data_dir / name).is_dir() else None


def find_test_images(data_dir: os.PathLike | str, stage: int | None = None,
                     comp: Competition | None = None) -> tuple[pd.DataFrame, str]:
    """Test images of a stage: a DataFrame (id, path) and a message saying where the ids came from.

    `id` is exactly what the submission's id column must hold (NCFM stage 1: img_00005.jpg;
    stage 2: test_stg2/image_00001.jpg; Dog Breed: the bare id). `path` is the file, relative
    to data_dir: the id plus the competition's id suffix, in one of its test folders or, for an
    id with a folder, in that folder (a folder nested in itself, as some archives unpack, is
    found too). Rows follow the sample submission; without one (NCFM only) the sorted listings.
    """
    data_dir = Path(data_dir)
    comp = comp or competition_for(data_dir)
    stage = comp.default_stage if stage is None else stage
    if not comp.samples:
        return _ids_from_folders(data_dir, stage)
    sample_path = comp.sample_path(data_dir, stage)
    sample = read_sample_file(sample_path)
    if sample is None and comp.slug == competition.NCFM_SLUG:  # NCFM's ids can be told from its folders
        return _ids_from_folders(data_dir, stage)
    if sample is None:
        raise NcfmError(f"{sample_path}: not found; it decides which ids the submission holds: download "
                        f"it with the competition's files")

    # Index each candidate folder once: 13,153 lookups in a set, not 13,153 stat calls.
    listing: dict[str, set[str]] = {}

    def listed(rel: str) -> set[str]:
        if rel not in listing:
            folder = data_dir / rel
            listing[rel] = set(_list_images(folder)) if folder.is_dir() else set()
        return listing[rel]

    ids = sample.iloc[:, 0].astype(str).tolist()
    paths, missing, searched = [], [], set()
    for image_id in ids:
        head, _, name = (image_id + comp.id_suffix).rpartition("/")
        tops = [head] if head else list(comp.test_dirs)
        candidates = [c for top in tops for c in (top, f"{top}/{top.split('/')[-1]}")]
        for rel in candidates:
            if name in listed(rel):
                paths.append(f"{rel}/{name}")
                break
        else:
            paths.append(None)
            missing.append(image_id)
            searched.update(candidates)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        where = ", ".join(str(data_dir / s) + "/" for s in sorted(searched)) or f"no test folder in {data_dir}"
        raise NcfmError(
            f"{len(missing)} id(s) of {sample_path.name} have no image file: {shown}; searched {where}; "
            f"extract the stage's test archive into {data_dir} (or pass --test-dir to split_train_val)"
        )
    message = f"ids from {sample_path} ({len(ids)} rows)"
    return pd.DataFrame({"id": ids, "path": paths}), message


def _ids_from_folders(data_dir: Path, stage: int) -> tuple[pd.DataFrame, str]:
    """NCFM without its sample submissions: stage 1 = test_stg1/, stage 2 adds test_stg2/."""
    sample_name = f"sample_submission_stg{stage}.csv"
    folder_names = ["test_stg1"] if stage == 1 else ["test_stg1", "test_stg2"]
    ids, paths, counts = [], [], []
    for name in folder_names:
        folder = _image_folder(data_dir, name)
        if folder is None:
            raise NcfmError(f"{data_dir / name}: no such folder and no {sample_name}; "
                            f"extract Kaggle's {name}.zip (or .7z) into {data_dir}")
        names = _list_images(folder)
        if not names:
            raise NcfmError(f"{folder}: no images, and no {sample_name} to say which to expect; "
                            f"extract Kaggle's {name} archive into {data_dir}")
        rel = folder.relative_to(data_dir).as_posix()
        # stage-2 submissions write stage-2 names with their folder; stage-1 names stay bare
        prefix = "" if name == "test_stg1" else f"{name}/"
        ids += [prefix + n for n in names]
        paths += [f"{rel}/{n}" for n in names]
        counts.append(f"{rel}/ ({len(names)})")
    message = (f"no {sample_name} in {data_dir}: ids from the folder listing of {' + '.join(counts)}; "
               f"put Kaggle's sample submission there to be sure of the ids")
    return pd.DataFrame({"id": ids, "path": paths}), message


# --------------------------------------------------------------------------- decode check
def _check_one(path: str) -> tuple:
    """Decode one image completely; (ok, error, width, height, thumbnail or None)."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a short file must fail, not decode as grey
    fmt = _FORMAT_BY_EXT.get(os.path.splitext(path)[1].lower(), "image")
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        return False, f"cannot read ({e.strerror})", 0, 0, None
    if nbytes == 0:
        return False, f"not a {fmt} (0 bytes)", 0, 0, None
    try:
        with Image.open(path) as img:
            width, height = img.size
            # JPEG DCT scaling (1/8): every coefficient is still entropy-decoded, so a
            # truncated file still fails, at a fraction of the cost of a full-size decode.
            img.draft("RGB", THUMB_SIZE)
            img.load()
            thumb = np.asarray(img.convert("RGB").resize(THUMB_SIZE, Image.BILINEAR), dtype=np.uint8)
    except UnidentifiedImageError:
        return False, f"not a {fmt} ({nbytes} bytes that no image decoder recognises)", 0, 0, None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        if "truncated" in str(e).lower():
            return False, f"truncated image ({nbytes} bytes)", 0, 0, None
        return False, f"cannot decode ({type(e).__name__}: {e})", 0, 0, None
    return True, "", width, height, thumb


def check_images(paths: list, workers: int = 0, progress: bool = True) -> pd.DataFrame:
    """Decode every image fully (in parallel) and report what each one is.

    Columns: path (as given), ok, error ('' when ok), width, height (the file's own size),
    thumb (a uint8 RGB array of shape (18, 32, 3), the whole image squashed to 32x18; None
    when not ok). workers=0 uses every core; 1 decodes in this process. Results stream in: only
    the thumbnails are kept, in one (N, 18, 32, 3) array whose rows the thumb column shows, so
    memory grows by 1.7 KB an image (200,000 images: 350 MB).
    """
    from tqdm import tqdm

    paths = [str(p) for p in paths]
    workers = cpu_count() if workers <= 0 else workers
    workers = min(workers, max(1, len(paths) // 16))  # a pool is not worth it for a handful
    bar = dict(total=len(paths), desc="checking images", unit="img",
               disable=not progress or not sys.stderr.isatty())
    thumbs = np.zeros((len(paths), THUMB_SIZE[1], THUMB_SIZE[0], 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors, widths, heights = [""] * len(paths), np.zeros(len(paths), np.int64), np.zeros(len(paths), np.int64)

    def keep(results):
        for i, (fine, error, width, height, thumb) in enumerate(tqdm(results, **bar)):
            ok[i], errors[i], widths[i], heights[i] = fine, error, width, height
            if fine:
                thumbs[i] = thumb

    if workers == 1:
        keep(_check_one(p) for p in paths)
    else:
        chunksize = max(1, min(64, len(paths) // (workers * 8)))
        with process_pool(workers) as pool:
            keep(pool.map(_check_one, paths, chunksize=chunksize))
    df = pd.DataFrame({"ok": ok, "error": errors, "width": widths, "height": heights,
                       "thumb": [thumbs[i] if fine else None for i, fine in enumerate(ok)]})
    df.insert(0, "path", paths)
    return df
