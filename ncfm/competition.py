"""The competition as data: its classes, its ids, the kind of submission it scores and how.

`ncfm split_train_val` reads the competition's own files (the training folders or labels CSV,
the sample submission), fills a `Competition` and writes it beside the manifest:

    data/folds.csv          image,label,fold,group
    data/competition.json   what this module describes, read by every later command

The kind of submission, told apart by the sample submission's header and the training labels
(and, where they cannot tell, by split_train_val's --task and --metric). Three answer one class
per image (the task "single"):
    probabilities   one column per class (NCFM, Dog Breed): multi-class log loss
    label           one column holding a class name (Plant Seedlings, Paddy): accuracy
                    (= micro-averaged F1 when every image has exactly one label)
    binary          one column holding P(positive class) (Aerial Cactus): ROC AUC
and one kind each for the other tasks, whose name is the task's:
    multilabel      one column of space-separated labels (Planet's tags, iMet's attribute ids):
                    an F-score (F2 over images for Planet, micro F2/F1 for iMet)
    regression      one column holding a number (Pawpularity, 1 to 100): RMSE
    ordinal         one column holding an integer grade (APTOS, Diabetic Retinopathy: 0 to 4):
                    quadratic weighted kappa

`classes` is the order of the model's outputs. For the probability kind it is the sample's
column order (not always alphabetical); for multilabel the sorted label vocabulary; for a
number or a grade the one answer column (the model has one output); otherwise the sorted class
names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ncfm import NcfmError
from ncfm.fileio import atomic_write_text

FILE_NAME = "competition.json"
SINGLE_KINDS = ("probabilities", "label", "binary")  # one class per image
TASKS = ("single", "multilabel", "regression", "ordinal")
KINDS = (*SINGLE_KINDS, *TASKS[1:])
METRICS = {"probabilities": "log_loss", "label": "accuracy", "binary": "roc_auc", "multilabel": "f2_samples",
           "regression": "rmse", "ordinal": "qwk"}
METRIC_NAMES = {"log_loss": "log loss", "accuracy": "accuracy", "roc_auc": "ROC AUC",
                "f2_samples": "F2 averaged over images", "f2_micro": "micro-averaged F2",
                "f2_macro": "macro-averaged F2", "f1_samples": "F1 averaged over images",
                "f1_micro": "micro-averaged F1", "f1_macro": "macro-averaged F1",
                "rmse": "RMSE", "qwk": "quadratic weighted kappa"}
TASK_METRICS = {"single": ("log_loss", "accuracy", "roc_auc"),
                "multilabel": ("f2_samples", "f2_micro", "f2_macro", "f1_samples", "f1_micro", "f1_macro"),
                "regression": ("rmse",), "ordinal": ("qwk",)}
LOWER_IS_BETTER = ("log_loss", "rmse")
TAG_SEPARATOR = " "  # between the labels of one image, in the training CSV and the submission
# Slugs whose metric (or task) differs from what the files suggest.
DOGS_VS_CATS_SLUG = "dogs-vs-cats-redux-kernels-edition"  # labels in the file names: train/cat.N.jpg, dog.N.jpg
KNOWN_METRICS = {DOGS_VS_CATS_SLUG: "log_loss"}
KNOWN_TASKS = {  # slug -> (task, metric), as each competition's evaluation page gives them
    "planet-understanding-the-amazon-from-space": ("multilabel", "f2_samples"),
    "imet-2019-fgvc6": ("multilabel", "f2_micro"), "imet-2020-fgvc7": ("multilabel", "f1_micro"),
    "petfinder-pawpularity-score": ("regression", "rmse"),
    "aptos2019-blindness-detection": ("ordinal", "qwk"), "diabetic-retinopathy-detection": ("ordinal", "qwk"),
}
NCFM_SLUG = "the-nature-conservancy-fisheries-monitoring"
# Slugs whose training photos are known to hold near-duplicates that must not span two folds
# (split_train_val --groups auto groups them whatever its look-alike figures say).
KNOWN_NEAR_DUPLICATES = {NCFM_SLUG: "frames of videos from a few boats"}
NCFM_CLASSES = ("ALB", "BET", "DOL", "LAG", "NoF", "OTHER", "SHARK", "YFT")


@dataclass(frozen=True)
class Competition:
    """What every command needs to know about the competition, read once from its files.

    classes     the model's outputs, in order
    kind        probabilities | label | binary | multilabel | regression | ordinal (module docstring)
    metric      one of METRIC_NAMES, for the kind's task (TASK_METRICS)
    id_column   the sample submission's first column (image, id, file, ...)
    columns     the sample's other columns, in its order
    positive    the binary kind's positive class (whose probability is written), else ""
    samples     stage -> sample submission file name, relative to the data folder
    test_dirs   folders (relative to the data folder) where test ids are looked up
    id_suffix   what to append to an id to get its file name ("" when ids carry the extension)
    train       how the training labels were found (folders or a labels CSV), for people
    slug        the Kaggle competition slug, for `submit` and `submissions` ("" when unknown)
    value_range regression: (lowest, highest) training value; predictions are clipped to it
    grades      ordinal: every grade, lowest to highest, one apart (0, 1, 2, 3, 4)
    separator   multilabel: what separates an image's labels in the labels CSV and the submission (" ")
    """

    classes: tuple[str, ...]
    kind: str = "probabilities"
    metric: str = "log_loss"
    id_column: str = "image"
    columns: tuple[str, ...] = ()
    positive: str = ""
    samples: dict = field(default_factory=dict)
    test_dirs: tuple[str, ...] = ()
    id_suffix: str = ""
    train: dict = field(default_factory=dict)
    slug: str = ""
    value_range: tuple[float, ...] = ()
    grades: tuple[int, ...] = ()
    separator: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; received {self.kind!r}")
        if self.metric not in TASK_METRICS[self.task]:
            raise ValueError(f"metric must be one of {', '.join(TASK_METRICS[self.task])} for a {self.kind} "
                             f"competition; received {self.metric!r}")
        if self.task == "single" and len(self.classes) < 2:
            raise ValueError(f"a classification needs at least 2 classes; received {list(self.classes)}")
        if self.kind == "multilabel" and (not self.classes or not self.separator.isspace()):
            raise ValueError(f"a multilabel competition needs its labels and a whitespace separator; received "
                             f"{len(self.classes)} labels, separator {self.separator!r}")
        if self.kind in ("regression", "ordinal") and len(self.classes) != 1:
            raise ValueError(f"a {self.kind} competition has one output, its answer column; received "
                             f"{list(self.classes)}")
        if self.kind == "regression" and not (len(self.value_range) == 2 and self.value_range[0] < self.value_range[1]):
            raise ValueError(f"a regression needs value_range (lowest, highest); received {self.value_range}")
        if self.kind == "ordinal" and (len(self.grades) < 2 or list(self.grades) != list(
                range(self.grades[0], self.grades[0] + len(self.grades)))):
            raise ValueError(f"an ordinal competition needs 2 or more grades one apart; received {self.grades}")
        if self.kind == "binary" and (len(self.classes) != 2 or self.positive not in self.classes):
            raise ValueError(f"the binary kind needs 2 classes and one of them positive; received "
                             f"classes={list(self.classes)}, positive={self.positive!r}")

    @property
    def num_classes(self) -> int:
        """The model's outputs (classes, labels, or 1 for a number or a grade)."""
        return len(self.classes)

    @property
    def task(self) -> str:
        """single (one class per image) | multilabel | regression | ordinal."""
        return "single" if self.kind in SINGLE_KINDS else self.kind

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    def bad_labels(self, labels) -> list[str]:
        """The training labels (strings, as folds.csv holds them) that this competition cannot read:
        a class it does not have, a label outside the vocabulary or none, not a number, not a grade."""
        bad = []
        for label in dict.fromkeys(str(x) for x in labels):
            if self.task == "single":
                ok = label in self.classes
            elif self.kind == "multilabel":
                tags = label.split()
                ok = bool(tags) and all(t in self.classes for t in tags)
            else:
                try:
                    value = float(label)
                except ValueError:
                    value = float("nan")
                ok = value == value and abs(value) != float("inf")
                if self.kind == "ordinal":
                    ok = ok and value == int(value) and int(value) in self.grades
            if not ok:
                bad.append(label)
        return bad

    @property
    def header(self) -> tuple[str, ...]:
        """The submission's exact header."""
        return (self.id_column, *self.columns)

    @property
    def metric_name(self) -> str:
        return METRIC_NAMES[self.metric]

    @property
    def stages(self) -> list[int]:
        return sorted(int(s) for s in self.samples)

    def sample_path(self, data_dir: os.PathLike | str, stage: int | None = None) -> Path:
        """The sample submission of `stage` (None: the first stage)."""
        stage = self.default_stage if stage is None else stage
        if str(stage) not in self.samples:
            have = ", ".join(str(s) for s in self.stages) or "none"
            raise NcfmError(f"received stage={stage!r}; this competition has stage(s) {have}")
        return Path(data_dir) / self.samples[str(stage)]

    @property
    def default_stage(self) -> int:
        return self.stages[0] if self.samples else 1

    def positive_index(self, classes=None) -> int:
        """The column of the positive class among `classes` (the competition's by default): the one ROC
        AUC scores. 1 where there is none (a crop classifier's fish classes, a multi-class competition)."""
        classes = list(self.classes if classes is None else classes)
        return classes.index(self.positive) if self.positive in classes else 1

    def describe(self) -> str:
        """One paragraph for the console."""
        shown = ", ".join(self.classes[:10]) + (f", ... ({self.num_classes} in all)" if self.num_classes > 10 else "")
        kind = {"probabilities": f"one probability column per class ({','.join(self.header[:4])}"
                                 f"{',...' if len(self.header) > 4 else ''})",
                "label": f"one label per id ({','.join(self.header)})",
                "binary": f"P({self.positive}) per id ({','.join(self.header)})",
                "multilabel": f"space-separated labels per id ({','.join(self.header)})",
                "regression": f"a number per id ({','.join(self.header)})",
                "ordinal": f"a grade per id ({','.join(self.header)})"}[self.kind]
        task = {"single": f"{self.num_classes} classes: {shown}",
                "multilabel": f"several labels per image (task multilabel), {self.num_classes} labels: {shown}",
                "regression": f"a number per image (task regression): {self.classes[0]}, "
                              f"{'%g' % self.value_range[0] if self.value_range else '?'} to "
                              f"{'%g' % self.value_range[1] if self.value_range else '?'}",
                "ordinal": f"an ordered grade per image (task ordinal): {self.classes[0]}, "
                           f"{', '.join(map(str, self.grades))}"}[self.task]
        source = {"csv": f"labels from {self.train.get('csv')} ({self.train.get('id_column')},"
                         f"{self.train.get('label_column')})",
                  "names": f"labels from the file names in {self.train.get('dir', 'train')}/ (<label>.<n>.jpg)"}.get(
            self.train.get("source"), f"labels from the folders of {self.train.get('dir', 'train')}/")
        slug = self.slug or "unknown (pass --competition SLUG to split_train_val, or to submit)"
        return (f"competition: {slug}\n  {task}\n  {source}\n"
                f"  submission: {kind}; scored by {self.metric_name}\n"
                f"  test ids from {', '.join(self.samples.values()) or 'the test folders'}; images in "
                f"{', '.join(d + '/' for d in self.test_dirs) or '?'}")

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("classes", "columns", "test_dirs", "value_range", "grades"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Competition":
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        values = dict(data)
        for key in ("classes", "columns", "test_dirs"):
            if key in values:
                values[key] = tuple(str(v) for v in values[key])
        if "value_range" in values:
            values["value_range"] = tuple(float(v) for v in values["value_range"])
        if "grades" in values:
            values["grades"] = tuple(int(v) for v in values["grades"])
        if "samples" in values:
            values["samples"] = {str(k): str(v) for k, v in values["samples"].items()}
        return cls(**values)


def ncfm(samples: dict | None = None, test_dirs=("test_stg1", "test_stg2")) -> Competition:
    """NCFM as Kaggle ships it: 8 probability columns, two stages, log loss."""
    return Competition(classes=NCFM_CLASSES, kind="probabilities", metric="log_loss", id_column="image",
                       columns=NCFM_CLASSES, samples=samples if samples is not None else
                       {"1": "sample_submission_stg1.csv", "2": "sample_submission_stg2.csv"},
                       test_dirs=tuple(test_dirs), train={"source": "folders", "dir": "train"}, slug=NCFM_SLUG)


def path_beside(manifest: os.PathLike | str) -> Path:
    """competition.json beside a folds manifest."""
    return Path(manifest).with_name(FILE_NAME)


def save(competition: Competition, path: os.PathLike | str) -> None:
    atomic_write_text(path, json.dumps(competition.to_dict(), indent=2) + "\n")


def load(path: os.PathLike | str) -> Competition:
    """Read a competition.json; a missing or damaged one is an NcfmError naming it and the fix."""
    path = Path(path)
    fix = f"rerun `ncfm split_train_val --data-dir {path.parent} --force` to write it again"
    if not path.is_file():
        raise NcfmError(f"{path}: not found; {fix}")
    try:
        return Competition.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise NcfmError(f"{path}: not a valid competition description ({e}); {fix}") from None
