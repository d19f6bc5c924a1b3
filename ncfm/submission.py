"""Build, validate and atomically write the Kaggle submission CSV, for any competition.

The sample submission decides what goes in the file: its header exactly, every one of its ids
exactly once and nothing else. What each row holds depends on the competition's kind (see
ncfm.competition):

    probabilities   one finite value in [0, 1] per class column, the row summing to 1 (NCFM, Dog Breed)
    label           one class name, spelled exactly as the class (Plant Seedlings, Paddy)
    binary          one finite value in [0, 1], the probability of the positive class (Aerial Cactus)
    multilabel      space-separated labels of the vocabulary, each once, at least one (Planet, iMet)
    regression      one finite number (Pawpularity)
    ordinal         one whole number among the grades (APTOS, Diabetic Retinopathy)

`predict`, `validate` and `submit` all run the same checks (`validate_submission`), so a file that
passes here is one Kaggle will score.

    ncfm validate submissions/inception299_stage1.csv            # stage from the row count
    ncfm validate my.csv --stage 2 --data-dir data
    ncfm validate my.csv --sample sample_submission.csv          # the sample alone says the form

Pure core: `build_submission`, `find_problems`, `validate_submission`, `format_submission` take
and return DataFrames/strings. Thin edges: `read_sample_file`, `read_sample`, `read_submission`,
`write_submission`, `validate_file`, `competition_of`, `main_validate` touch files.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from ncfm import NcfmError
from ncfm import competition as competitions
from ncfm.competition import Competition
from ncfm.dataset import competition_for, competition_from_sample, read_sample_file
from ncfm.fileio import atomic_write_text

# Rows in NCFM's sample submissions on Kaggle: tells a file's stage when --stage is not given and
# that stage's sample file is not in the data folder.
KAGGLE_ROWS = {1: 1000, 2: 13153}
# A row must sum to 1 within SUM_TOL. Rows we write are renormalised and printed with 9 decimals
# (FLOAT_FORMAT), so after parsing they sum to 1 within k x 5e-10 for k columns (6e-8 for Dog
# Breed's 120); 1e-6 leaves room for float32 softmax outputs and for files other tools wrote with
# full precision, yet still catches un-normalised scores, logits and dropped columns. (Kaggle
# itself divides each row by its sum, but a sum far from 1 means a bug upstream.)
SUM_TOL = 1e-6
FLOAT_FORMAT = "%.9f"
SHOWN_PER_KIND = 3  # examples listed for each kind of problem
CLASSES_SHOWN = 10  # class names listed after unknown labels


class SubmissionError(NcfmError):
    """A submission that Kaggle would reject or score wrongly. `problems` lists one line per kind."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


class Checked(NamedTuple):
    """What `validate_file` checked: the file, its row count, its stage and the sample used."""

    path: Path
    rows: int
    stage: int | None
    sample: Path


# --------------------------------------------------------------------------- pure core
def build_submission(ids: Sequence[str], probs: np.ndarray, competition: Competition,
                     rule: dict | None = None) -> pd.DataFrame:
    """One row per id, under the sample's header. `probs` holds the model's outputs, shape
    (N, num_classes) in `competition.classes` order; each kind writes what Kaggle scores:
    every class's probability (in the sample's column order), the most likely class's name, or
    the positive class's probability; for the other tasks the answer `rule` (ncfm.task; fitted
    by predict, default: the fixed one) makes of the outputs: labels, a number, a grade."""
    from ncfm import task
    probs = np.asarray(probs, dtype=np.float64)
    ids = [str(i) for i in ids]
    classes = list(competition.classes)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise SubmissionError(f"probabilities must have shape (N, {len(classes)}); received shape {probs.shape}")
    if probs.shape[0] != len(ids):
        raise SubmissionError(f"{len(ids)} ids but {probs.shape[0]} rows of probabilities")
    columns = list(competition.columns)
    if competition.kind == "probabilities":
        unknown = [c for c in columns if c not in classes]
        if unknown or len(columns) != len(classes):
            raise SubmissionError(f"the sample's columns {','.join(columns)} are not the classes "
                                  f"{','.join(classes)}; rerun split_train_val to describe the competition again")
        df = pd.DataFrame(probs[:, [classes.index(c) for c in columns]], columns=columns)
    elif competition.kind == "label":
        df = pd.DataFrame({columns[0]: np.asarray(classes, dtype=object)[probs.argmax(axis=1)]})
    elif competition.task != "single":
        df = pd.DataFrame({columns[0]: task.values_for_csv(competition, task.decide(competition, probs, rule))})
    else:
        df = pd.DataFrame({columns[0]: probs[:, classes.index(competition.positive)]})
    df.insert(0, competition.id_column, ids)
    return df


def _line(i: int) -> int:
    """CSV line number of the i-th data row (0-based): line 1 is the header."""
    return i + 2


def _show(value) -> str:
    s = str(value)
    return repr(s) if s != s.strip() or s == "" else s


def _at(i: int, ids: Sequence[str] | None) -> str:
    return f"line {_line(i)} ({_show(ids[i])})" if ids is not None else f"line {_line(i)}"


def _examples(items: Sequence[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = "; ".join(items[:SHOWN_PER_KIND])
    return shown + (f"; ... and {total - SHOWN_PER_KIND} more" if total > SHOWN_PER_KIND else "")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _header_problem(columns: list, header: Sequence[str]) -> str | None:
    header = list(header)
    if columns == header:
        return None
    got = ",".join(_show(c) for c in columns)
    details = []
    missing = [c for c in header if c not in columns]
    extra = [c for c in columns if c not in header]
    by_lower = {c.lower(): c for c in header}
    for c in extra:
        fix = by_lower.get(str(c).strip().lower())
        details.append(f"{c!r} should be {fix!r}" if fix else f"unexpected column {c!r}")
    fixed = {by_lower.get(str(c).strip().lower()) for c in extra}
    details += [f"missing column {c!r}" for c in missing if c not in fixed]
    if not missing and not extra:
        details.append("columns in the wrong order")
    return f"header must be exactly {','.join(header)}; got {got} ({'; '.join(details)})"


def _parse_column(col: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float values, empty mask, non-numeric mask) of one probability column."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=np.float64)
        no = np.zeros(len(values), dtype=bool)
        return values, no, no
    text = col.astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    empty = (text == "").to_numpy()
    nan_word = text.str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
    non_numeric = np.isnan(values) & ~empty & ~nan_word
    return values, empty, non_numeric


def _probability_problems(df: pd.DataFrame, ids: list[str] | None, columns: Sequence[str],
                          rows_sum_to_one: bool) -> list[str]:
    """Cells of `columns` that are not finite numbers in [0, 1]; rows not summing to 1 if asked."""
    present = [c for c in columns if c in df.columns]
    if not present:
        return []
    raw = {c: df[c] for c in present}
    parsed = {c: _parse_column(df[c]) for c in present}
    values = np.column_stack([parsed[c][0] for c in present])
    empty = np.column_stack([parsed[c][1] for c in present])
    non_numeric = np.column_stack([parsed[c][2] for c in present])
    with np.errstate(invalid="ignore"):
        kinds = [
            ("empty value", empty, lambda i, c: f"{_at(i, ids)} {c}"),
            ("value that is not a number", non_numeric,
             lambda i, c: f"{_at(i, ids)} {c}={str(raw[c].iloc[i]).strip()!r}"),
            ("NaN value", np.isnan(values) & ~empty & ~non_numeric, lambda i, c: f"{_at(i, ids)} {c}"),
            ("infinite value", np.isinf(values), lambda i, c: f"{_at(i, ids)} {c}={values[i, present.index(c)]}"),
            ("negative value", np.isfinite(values) & (values < 0),
             lambda i, c: f"{_at(i, ids)} {c}={values[i, present.index(c)]:g}"),
            ("value greater than 1", np.isfinite(values) & (values > 1),
             lambda i, c: f"{_at(i, ids)} {c}={values[i, present.index(c)]:g}"),
        ]
    plurals = {"value that is not a number": "values that are not numbers"}
    problems = []
    for name, mask, show in kinds:
        rows, cols = np.nonzero(mask)  # row-major: the first problems in file order
        if len(rows):
            items = [show(i, present[j]) for i, j in zip(rows[:SHOWN_PER_KIND], cols[:SHOWN_PER_KIND])]
            plural = plurals.get(name, name.replace("value", "values", 1))
            problems.append(f"{_plural(len(rows), name, plural)}: {_examples(items, len(rows))}")
    if rows_sum_to_one and len(present) == len(columns):
        row_ok = np.isfinite(values).all(axis=1) & (values >= 0).all(axis=1) & (values <= 1).all(axis=1)
        sums = values.sum(axis=1)
        bad = np.nonzero(row_ok & (np.abs(sums - 1.0) > SUM_TOL))[0]
        if len(bad):
            items = [f"{_at(i, ids)} sums to {sums[i]:.8g}" for i in bad[:SHOWN_PER_KIND]]
            problems.append(
                f"{_plural(len(bad), 'row')} not summing to 1 (tolerance {SUM_TOL:g}; divide each row "
                f"by its sum): {_examples(items, len(bad))}"
            )
    return problems


def _loose(name: str) -> str:
    """A class name as a person might misspell it: case, spaces, hyphens and underscores ignored."""
    return re.sub(r"[\s_-]+", "", name).lower()


def _label_problems(df: pd.DataFrame, ids: list[str] | None, column: str, classes: Sequence[str]) -> list[str]:
    """Empty cells and labels that are not one of `classes` exactly, with the class a near miss means."""
    if column not in df.columns:
        return []
    labels = df[column].astype(str).tolist()
    known = set(classes)
    by_loose = {_loose(c): c for c in classes}
    empty = [i for i, x in enumerate(labels) if not x.strip()]
    unknown = [i for i, x in enumerate(labels) if x not in known and x.strip()]
    problems = []
    if empty:
        items = [f"{_at(i, ids)} {column}" for i in empty]
        problems.append(f"{_plural(len(empty), 'empty value')}: {_examples(items)}")
    if unknown:
        items = []
        for i in unknown[:SHOWN_PER_KIND]:
            fix = by_loose.get(_loose(labels[i]))
            hint = f" ({labels[i]!r} should be {fix!r})" if fix else ""
            items.append(f"{_at(i, ids)} {column}={labels[i]!r}{hint}")
        shown = ", ".join(classes[:CLASSES_SHOWN]) + (", ..." if len(classes) > CLASSES_SHOWN else "")
        problems.append(f"{_plural(len(unknown), 'label')} not one of the {len(classes)} classes "
                        f"({shown}; spelled exactly): {_examples(items, len(unknown))}")
    return problems


def _tag_problems(df: pd.DataFrame, ids: list[str] | None, column: str, labels: Sequence[str]) -> list[str]:
    """Several labels per row: empty rows (the training labels never are), labels outside the
    vocabulary (with the label a near miss means), a label twice in a row."""
    if column not in df.columns:
        return []
    rows = df[column].astype(str).tolist()
    known, by_loose = set(labels), {_loose(c): c for c in labels}
    empty = [i for i, x in enumerate(rows) if not x.split()]
    unknown = [(i, t) for i, x in enumerate(rows) for t in x.split() if t not in known]
    twice = [i for i, x in enumerate(rows) if len(set(x.split())) < len(x.split())]
    problems = []
    if empty:
        items = [f"{_at(i, ids)} {column}" for i in empty]
        problems.append(f"{_plural(len(empty), 'row')} without a label (every training image has one or more): "
                        f"{_examples(items, len(empty))}")
    if unknown:
        items = []
        for i, t in unknown[:SHOWN_PER_KIND]:
            fix = by_loose.get(_loose(t))
            items.append(f"{_at(i, ids)} {t!r}" + (f" ({t!r} should be {fix!r})" if fix else ""))
        shown = " ".join(labels[:CLASSES_SHOWN]) + (" ..." if len(labels) > CLASSES_SHOWN else "")
        problems.append(f"{_plural(len(unknown), 'label')} not among the {len(labels)} labels ({shown}; spelled "
                        f"exactly, separated by spaces): {_examples(items, len(unknown))}")
    if twice:
        items = [f"{_at(i, ids)} {rows[i]!r}" for i in twice]
        problems.append(f"{_plural(len(twice), 'row')} naming a label twice: {_examples(items, len(twice))}")
    return problems


def _number_problems(df: pd.DataFrame, ids: list[str] | None, competition: Competition) -> list[str]:
    """A number per row (regression): empty, not a number, NaN or infinite; a grade (ordinal): also
    not a whole number, or not one of the grades."""
    column = competition.columns[0]
    if column not in df.columns:
        return []
    values, empty, non_numeric = _parse_column(df[column])
    raw = df[column].astype(str).str.strip().tolist()
    with np.errstate(invalid="ignore"):
        kinds = [("empty value", empty), ("value that is not a number", non_numeric),
                 ("NaN value", np.isnan(values) & ~empty & ~non_numeric), ("infinite value", np.isinf(values))]
        if competition.kind == "ordinal":
            finite = np.isfinite(values)
            whole = finite & (values == np.round(values))
            kinds += [("value that is not a whole grade", finite & ~whole),
                      ("grade out of range", whole & ~np.isin(values, competition.grades))]
    problems = []
    for name, mask in kinds:
        rows = np.flatnonzero(mask)
        if len(rows):
            items = [f"{_at(i, ids)} {column}={raw[i]!r}" for i in rows[:SHOWN_PER_KIND]]
            plural = {"value that is not a number": "values that are not numbers",
                      "value that is not a whole grade": "values that are not whole grades"}.get(
                name, name.replace("value", "values", 1).replace("grade out", "grades out"))
            where = (f" (grades are {', '.join(map(str, competition.grades))})"
                     if name.startswith("grade") or "whole grade" in name else "")
            problems.append(f"{_plural(len(rows), name, plural)}{where}: {_examples(items, len(rows))}")
    return problems


def _value_problems(df: pd.DataFrame, ids: list[str] | None, competition: Competition) -> list[str]:
    if competition.kind == "label":
        return _label_problems(df, ids, competition.columns[0], competition.classes)
    if competition.kind == "multilabel":
        return _tag_problems(df, ids, competition.columns[0], competition.classes)
    if competition.kind in ("regression", "ordinal"):
        return _number_problems(df, ids, competition)
    return _probability_problems(df, ids, competition.columns,
                                 rows_sum_to_one=competition.kind == "probabilities")


def _folder_hint(extra: list[str], missing: list[str]) -> str:
    """Why ids are not in the sample, when the reason is plain: they lack the folder the sample's
    ids carry (NCFM's stage 2: test_stg2/image_00001.jpg), or they have stray spaces."""
    by_name = {m.rpartition("/")[2]: m for m in missing if "/" in m}
    carried = next((by_name[x.strip()] for x in extra if x.strip() in by_name), None)
    if carried:
        return (f" (the sample's ids are written with their folder, as in {carried}; "
                f"write {carried.rpartition('/')[0]}/ before the name)")
    missing_set = set(missing)
    if any(x.strip() in missing_set for x in extra):
        return " (ids have stray spaces)"
    return ""


def _id_problems(ids: list[str], sample_ids: Sequence[str]) -> list[str]:
    problems = []
    sample_set = set(sample_ids)
    id_set = set(ids)
    if len(ids) != len(sample_ids):
        problems.append(f"{_plural(len(ids), 'row')}; the sample submission has {len(sample_ids):,}")

    missing = [s for s in sample_ids if s not in id_set]
    if missing:
        problems.append(f"{_plural(len(missing), 'id')} of the sample submission "
                        f"{'is' if len(missing) == 1 else 'are'} missing: {_examples([_show(m) for m in missing])}")

    extra = [i for i, x in enumerate(ids) if x not in sample_set]
    if extra:
        items = [_at(i, ids) for i in extra]
        hint = _folder_hint([ids[i] for i in extra], missing)
        problems.append(f"{_plural(len(extra), 'id')} not in the sample submission{hint}: {_examples(items)}")

    positions: dict[str, list[int]] = {}
    for i, x in enumerate(ids):
        positions.setdefault(x, []).append(i)
    dups = [(x, pos) for x, pos in positions.items() if len(pos) > 1]
    if dups:
        items = [f"{_show(x)} on lines {', '.join(str(_line(i)) for i in pos)}" for x, pos in dups]
        problems.append(f"{_plural(len(dups), 'duplicate id')}: {_examples(items)}")
    return problems


def find_problems(df: pd.DataFrame, sample_ids: Sequence[str], competition: Competition) -> list[str]:
    """Every kind of problem in `df`, each with the first few rows (CSV line and id) it affects."""
    problems = []
    id_column = competition.id_column
    if df.attrs.get("byte_order_mark"):
        problems.append(f"the file starts with a byte-order mark (as Excel's \"CSV UTF-8\" writes), so a "
                        f"scorer may read the first column as '\\ufeff{id_column}'; save it as plain CSV")
    header = _header_problem([str(c) for c in df.columns], competition.header)
    if header:
        problems.append(header)
    if df.columns.duplicated().any():
        return problems  # cells cannot be told apart by column name
    if id_column not in df.columns:
        problems.append(f"no `{id_column}` column, so ids could not be checked")
        return problems + _value_problems(df, None, competition)
    ids = df[id_column].astype(str).tolist()
    sample_ids = [str(s) for s in sample_ids]
    return problems + _id_problems(ids, sample_ids) + _value_problems(df, ids, competition)


def validate_submission(df: pd.DataFrame, sample_ids: Sequence[str], competition: Competition) -> None:
    """Raise SubmissionError listing every kind of problem (first few rows of each); else return."""
    problems = find_problems(df, sample_ids, competition)
    if problems:
        kinds = _plural(len(problems), "problem")
        raise SubmissionError(f"{kinds}:\n" + "\n".join(f"  - {p}" for p in problems), problems)


def format_submission(df: pd.DataFrame, competition: Competition) -> str:
    """CSV text of a valid submission under the sample's header: probability rows renormalised and
    printed with 9 decimals (so they sum to 1 after parsing), a binary probability with 9
    decimals, labels as they are."""
    columns = list(competition.columns)
    if competition.kind == "probabilities":
        probs = df[columns].to_numpy(dtype=np.float64)
        out = pd.DataFrame(probs / probs.sum(axis=1, keepdims=True), columns=columns)
    elif competition.kind in ("binary", "regression"):
        out = pd.DataFrame({columns[0]: df[columns[0]].to_numpy(dtype=np.float64)})
    elif competition.kind == "ordinal":
        out = pd.DataFrame({columns[0]: df[columns[0]].to_numpy(dtype=np.float64).astype(np.int64)})
    else:
        out = pd.DataFrame({columns[0]: df[columns[0]].astype(str).to_numpy()})
    out.insert(0, competition.id_column, df[competition.id_column].astype(str).to_numpy())
    return out.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


# --------------------------------------------------------------------------- files
def _download_hint(competition: Competition | None) -> str:
    if competition is not None and competition.slug:
        return f"`kaggle competitions download -c {competition.slug}`"
    return "`kaggle competitions download -c SLUG`"


def read_sample(path: os.PathLike | str, competition: Competition | None = None) -> pd.DataFrame:
    """A sample submission (ids as strings); a missing file says where it was looked for and the fix."""
    path = Path(path)
    df = read_sample_file(path, competition.id_column if competition is not None else None)
    if df is None:
        raise NcfmError(
            f"sample submission not found: {path}. Download the competition files with "
            f"{_download_hint(competition)} and unzip {path.name} into {path.parent}/ (or pass --sample PATH)"
        )
    return df


def competition_of(data_dir: os.PathLike | str, sample: os.PathLike | str | None = None) -> Competition:
    """The competition a command checks against: what split_train_val recorded in `data_dir` (or
    what its files say); given a `sample` and no competition.json there, what the sample says."""
    if sample is not None and not (Path(data_dir) / competitions.FILE_NAME).is_file():
        return competition_from_sample(sample)
    return competition_for(data_dir)


def _short(e: Exception, limit: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _open_text(path: Path):
    """The file as text; `.gz` and single-file `.zip` too (Kaggle accepts compressed uploads)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise ValueError(f"a zip holding one CSV was expected, found {len(names)} files")
        return io.TextIOWrapper(archive.open(names[0]), encoding="utf-8", newline="")
    return open(path, newline="", encoding="utf-8")


def _parse_rows(rows: list[list[str]], where: str) -> pd.DataFrame:
    """The CSV's rows as a DataFrame of strings; line N of the file is row N - 2."""
    while rows and not any(c.strip() for c in rows[-1]):  # blank lines at the very end are not rows
        rows.pop()
    if not rows:
        raise NcfmError(f"{where}: no header line (the file holds only blank space)")
    header, body = rows[0], rows[1:]
    bom = bool(header) and header[0].startswith("\ufeff")
    if bom:  # read past it so every other check still runs; find_problems reports it
        header = [header[0][1:], *header[1:]]
    ragged = [(i, len(r)) for i, r in enumerate(body) if len(r) != len(header)]
    if ragged:
        items = [f"line {_line(i)} has {n} fields" for i, n in ragged]
        problem = (f"{_plural(len(ragged), 'row')} with a number of fields other than the header's "
                   f"{len(header)}: {_examples(items)}")
        raise SubmissionError(f"{where}: not a well-formed CSV: {problem}", [problem])
    if len(set(header)) != len(header):
        repeated = sorted({c for c in header if header.count(c) > 1})
        raise SubmissionError(f"{where}: repeated column name(s) {', '.join(map(repr, repeated))} in the header "
                              f"{','.join(header)}; each column must appear once")
    df = pd.DataFrame(body, columns=header, dtype=str)
    df.attrs["byte_order_mark"] = bom
    return df


def read_submission(path: os.PathLike | str) -> pd.DataFrame:
    """A submission CSV as written, every cell a string (so 'nan', '' and 'abc' can be told apart).

    Read with the csv module rather than pandas: pandas silently turns a surplus first field into
    the index, and renumbers lines around blank ones; here line N of the file is row N - 2.
    """
    path = Path(path)
    if not path.exists():
        raise NcfmError(f"{path}: no such file")
    if path.is_dir():
        raise NcfmError(f"{path}: is a folder, not a submission CSV")
    if path.stat().st_size == 0:
        raise NcfmError(f"{path}: empty file (0 bytes)")
    try:
        with _open_text(path) as f:
            rows = list(csv.reader(f, strict=True))
    except (csv.Error, UnicodeDecodeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise NcfmError(f"{path}: not a readable CSV ({_short(e)})") from e
    return _parse_rows(rows, str(path))


def _infer_stage(rows: int, competition: Competition, data_dir: Path, path: Path) -> int:
    """The stage whose sample submission has `rows` rows; a competition with one stage has that
    one. NCFM's counts on Kaggle stand in for a stage whose sample file is not there."""
    stages = competition.stages
    if len(stages) <= 1:
        return competition.default_stage
    counts = {}
    for stage in stages:
        found = read_sample_file(competition.sample_path(data_dir, stage))
        if found is not None:
            counts[stage] = len(found)
            if counts[stage] == rows:
                return stage
    on_kaggle = KAGGLE_ROWS if competition.slug == competitions.NCFM_SLUG else {}
    for stage in stages:
        if stage not in counts and on_kaggle.get(stage) == rows:
            return stage
    known = ", ".join(f"stage {s}: {counts[s]:,} rows in {competition.sample_path(data_dir, s)}" if s in counts
                      else f"stage {s}: {on_kaggle[s]:,} rows on Kaggle" if s in on_kaggle
                      else f"stage {s}: no {competition.sample_path(data_dir, s)}" for s in stages)
    raise NcfmError(f"{path}: cannot tell the stage from its {rows:,} rows ({known}); "
                    f"pass {' or '.join(f'--stage {s}' for s in stages)}")


def write_submission(df: pd.DataFrame, path: os.PathLike | str, sample_ids: Sequence[str],
                     competition: Competition, force: bool = False) -> Path:
    """Validate `df`, then write it atomically (temp file, fsync, rename). Refuses to overwrite unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise NcfmError(f"{path} already exists; pass --force to overwrite it")
    validate_submission(df, sample_ids, competition)
    text = format_submission(df, competition)
    # The round trip: the text, parsed as `validate` will parse the file, must pass too (e.g. sums
    # after rounding).
    validate_submission(_parse_rows(list(csv.reader(io.StringIO(text))), str(path)), sample_ids, competition)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def validate_file(path: os.PathLike | str, competition: Competition, stage: int | None = None,
                  data_dir: os.PathLike | str = "data", sample: os.PathLike | str | None = None) -> Checked:
    """Check a submission CSV against the sample submission; raise NcfmError/SubmissionError if it fails.

    The sample is `sample` if given, else the stage's sample in `data_dir`; with no stage, the
    stage is the one whose sample submission has as many rows as the file (the only one, for a
    competition with one).
    """
    path = Path(path)
    data_dir = Path(data_dir)
    df = read_submission(path)
    if sample is not None:
        sample = Path(sample)
        if stage is None:  # only for the report: the stage whose sample file has this name
            stage = next((int(s) for s, name in competition.samples.items() if Path(name).name == sample.name), None)
    else:
        if not competition.samples:
            raise NcfmError(f"{data_dir}: no sample submission was found for this competition, so the ids cannot "
                            f"be checked; download it with {_download_hint(competition)} into {data_dir}/ "
                            f"(then rerun split_train_val), or pass --sample PATH")
        if stage is None:
            stage = _infer_stage(len(df), competition, data_dir, path)
        sample = competition.sample_path(data_dir, stage)
    sample_df = read_sample(sample, competition)
    header = tuple(str(c) for c in sample_df.columns)
    if header != competition.header:
        raise NcfmError(f"{sample}: its header {','.join(header)} is not the competition's "
                        f"{','.join(competition.header)}; rerun split_train_val --force to describe the "
                        f"competition again from its files")
    sample_ids = sample_df.iloc[:, 0].tolist()
    try:
        validate_submission(df, sample_ids, competition)
    except SubmissionError as e:
        raise SubmissionError(f"{path} (checked against {sample}): {e}", e.problems) from None
    return Checked(path, len(df), stage, sample)


def main_validate(args) -> int:
    """`ncfm validate FILE [--stage S] [--data-dir D] [--sample P]`: exit 0 if valid, 2 if not."""
    sample = getattr(args, "sample", None)
    try:
        competition = competition_of(args.data_dir, sample)
        checked = validate_file(args.file, competition, stage=args.stage, data_dir=args.data_dir, sample=sample)
    except NcfmError as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 2
    stage = checked.stage if checked.stage is not None else "?"
    print(f"OK: {checked.rows} rows, stage {stage} ({checked.path}, checked against {checked.sample})")
    return 0
