"""Build, validate and atomically write the Kaggle submission CSV.

The sample submission decides which ids go in the file: every one of its ids exactly once, nothing
else, under the header `image,ALB,BET,DOL,LAG,NoF,OTHER,SHARK,YFT`, with 8 finite probabilities in
[0, 1] per row that sum to 1. `predict`, `validate` and `submit` all run the same checks
(`validate_submission`), so a file that passes here is one Kaggle will score.

    ncfm validate submissions/inception299_stage1.csv            # stage from the row count
    ncfm validate my.csv --stage 2 --data-dir data

Pure core: `build_submission`, `validate_submission`, `format_submission` take and return
DataFrames/strings. Thin edges: `read_submission`, `read_sample`, `write_submission`,
`validate_file`, `main_validate` touch files.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from ncfm import CLASSES, COMPETITION, NUM_CLASSES, NcfmError
from ncfm.dataset import read_sample_file
from ncfm.dataset import sample_submission_path as sample_path  # where each stage's sample lives
from ncfm.fileio import atomic_write_text

HEADER = ("image", *CLASSES)
# Rows in Kaggle's sample submissions; used to tell a file's stage when --stage is not given.
KAGGLE_ROWS = {1: 1000, 2: 13153}
# A row must sum to 1 within SUM_TOL. Rows we write are renormalised and printed with 9 decimals
# (FLOAT_FORMAT), so after parsing they sum to 1 within 8 x 5e-10 = 4e-9; 1e-6 leaves room for
# float32 softmax outputs and for files other tools wrote with full precision, yet still catches
# un-normalised scores, logits and dropped columns. (Kaggle itself divides each row by its sum,
# but a sum far from 1 means a bug upstream.)
SUM_TOL = 1e-6
FLOAT_FORMAT = "%.9f"
SHOWN_PER_KIND = 3  # examples listed for each kind of problem
DOWNLOAD_HINT = f"kaggle competitions download -c {COMPETITION}"


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
def build_submission(ids: Sequence[str], probs: np.ndarray) -> pd.DataFrame:
    """One row per id: `image` then the 8 class probabilities, in Kaggle's column order."""
    probs = np.asarray(probs, dtype=np.float64)
    ids = [str(i) for i in ids]
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise SubmissionError(f"probabilities must have shape (N, {NUM_CLASSES}); received shape {probs.shape}")
    if probs.shape[0] != len(ids):
        raise SubmissionError(f"{len(ids)} ids but {probs.shape[0]} rows of probabilities")
    df = pd.DataFrame(probs, columns=list(CLASSES))
    df.insert(0, "image", ids)
    return df


def _line(i: int) -> int:
    """CSV line number of the i-th data row (0-based): line 1 is the header."""
    return i + 2


def _show_id(image_id) -> str:
    s = str(image_id)
    return repr(s) if s != s.strip() or s == "" else s


def _at(i: int, ids: Sequence[str] | None) -> str:
    return f"line {_line(i)} ({_show_id(ids[i])})" if ids is not None else f"line {_line(i)}"


def _examples(items: Sequence[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = "; ".join(items[:SHOWN_PER_KIND])
    return shown + (f"; ... and {total - SHOWN_PER_KIND} more" if total > SHOWN_PER_KIND else "")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def _header_problem(columns: list) -> str | None:
    if columns == list(HEADER):
        return None
    got = ",".join(repr(c) if str(c) != str(c).strip() else str(c) for c in columns)
    details = []
    missing = [c for c in HEADER if c not in columns]
    extra = [c for c in columns if c not in HEADER]
    by_lower = {c.lower(): c for c in HEADER}
    for c in extra:
        fix = by_lower.get(str(c).strip().lower())
        details.append(f"{c!r} should be {fix!r}" if fix else f"unexpected column {c!r}")
    fixed = {by_lower.get(str(c).strip().lower()) for c in extra}
    details += [f"missing column {c!r}" for c in missing if c not in fixed]
    if not missing and not extra:
        details.append("columns in the wrong order")
    return f"header must be exactly {','.join(HEADER)}; got {got} ({'; '.join(details)})"


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


def _value_problems(df: pd.DataFrame, ids: list[str] | None) -> list[str]:
    classes = [c for c in CLASSES if c in df.columns]
    if not classes:
        return []
    raw = {c: df[c] for c in classes}
    parsed = {c: _parse_column(df[c]) for c in classes}
    values = np.column_stack([parsed[c][0] for c in classes])
    empty = np.column_stack([parsed[c][1] for c in classes])
    non_numeric = np.column_stack([parsed[c][2] for c in classes])
    with np.errstate(invalid="ignore"):
        kinds = [
            ("empty value", empty, lambda i, c: f"{_at(i, ids)} {c}"),
            ("value that is not a number", non_numeric,
             lambda i, c: f"{_at(i, ids)} {c}={str(raw[c].iloc[i]).strip()!r}"),
            ("NaN value", np.isnan(values) & ~empty & ~non_numeric, lambda i, c: f"{_at(i, ids)} {c}"),
            ("infinite value", np.isinf(values), lambda i, c: f"{_at(i, ids)} {c}={values[i, classes.index(c)]}"),
            ("negative value", np.isfinite(values) & (values < 0), lambda i, c: f"{_at(i, ids)} {c}={values[i, classes.index(c)]:g}"),
            ("value greater than 1", np.isfinite(values) & (values > 1), lambda i, c: f"{_at(i, ids)} {c}={values[i, classes.index(c)]:g}"),
        ]
    plurals = {"value that is not a number": "values that are not numbers"}
    problems = []
    for name, mask, show in kinds:
        rows, cols = np.nonzero(mask)  # row-major: the first problems in file order
        if len(rows):
            items = [show(i, classes[j]) for i, j in zip(rows[:SHOWN_PER_KIND], cols[:SHOWN_PER_KIND])]
            plural = plurals.get(name, name.replace("value", "values", 1))
            problems.append(f"{_plural(len(rows), name, plural)}: "
                            f"{_examples(items, len(rows))}")
    if len(classes) == NUM_CLASSES:
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


def _id_problems(ids: list[str], sample_ids: Sequence[str]) -> list[str]:
    problems = []
    sample_set = set(sample_ids)
    id_set = set(ids)
    if len(ids) != len(sample_ids):
        problems.append(f"{_plural(len(ids), 'row')}; the sample submission has {len(sample_ids):,}")

    missing = [s for s in sample_ids if s not in id_set]
    if missing:
        problems.append(f"{_plural(len(missing), 'id')} of the sample submission "
                        f"{'is' if len(missing) == 1 else 'are'} missing: {_examples(missing)}")

    extra = [i for i, x in enumerate(ids) if x not in sample_set]
    if extra:
        items = [_at(i, ids) for i in extra]
        hint = ""
        missing_set = set(missing)
        if any(f"test_stg2/{ids[i].strip()}" in missing_set for i in extra):
            hint = " (stage-2 ids are written test_stg2/image_NNNNN.jpg, as in the sample submission)"
        elif any(ids[i].strip() in missing_set for i in extra):
            hint = " (ids have stray spaces)"
        problems.append(f"{_plural(len(extra), 'id')} not in the sample submission{hint}: {_examples(items)}")

    positions: dict[str, list[int]] = {}
    for i, x in enumerate(ids):
        positions.setdefault(x, []).append(i)
    dups = [(x, pos) for x, pos in positions.items() if len(pos) > 1]
    if dups:
        items = [f"{_show_id(x)} on lines {', '.join(str(_line(i)) for i in pos)}" for x, pos in dups]
        problems.append(f"{_plural(len(dups), 'duplicate id')}: {_examples(items)}")
    return problems


def find_problems(df: pd.DataFrame, sample_ids: Sequence[str]) -> list[str]:
    """Every kind of problem in `df`, each with the first few rows (CSV line and id) it affects."""
    problems = []
    if df.attrs.get("byte_order_mark"):
        problems.append("the file starts with a byte-order mark (as Excel's \"CSV UTF-8\" writes), so a "
                        "scorer may read the first column as '\\ufeffimage'; save it as plain CSV")
    header = _header_problem([str(c) for c in df.columns])
    if header:
        problems.append(header)
    if df.columns.duplicated().any():
        return problems  # cells cannot be told apart by column name
    if "image" not in df.columns:
        problems.append("no `image` column, so ids could not be checked")
        return problems + _value_problems(df, None)
    ids = df["image"].astype(str).tolist()
    sample_ids = [str(s) for s in sample_ids]
    return problems + _id_problems(ids, sample_ids) + _value_problems(df, ids)


def validate_submission(df: pd.DataFrame, sample_ids: Sequence[str]) -> None:
    """Raise SubmissionError listing every kind of problem (first few rows of each); else return."""
    problems = find_problems(df, sample_ids)
    if problems:
        kinds = _plural(len(problems), "problem")
        raise SubmissionError(f"{kinds}:\n" + "\n".join(f"  - {p}" for p in problems), problems)


def format_submission(df: pd.DataFrame) -> str:
    """CSV text of a valid submission: rows renormalised, 9 decimals, so they sum to 1 after parsing."""
    probs = df[list(CLASSES)].to_numpy(dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    out = pd.DataFrame(probs, columns=list(CLASSES))
    out.insert(0, "image", df["image"].astype(str).to_numpy())
    return out.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


# --------------------------------------------------------------------------- files
def read_sample(path: os.PathLike | str) -> pd.DataFrame:
    """A sample submission (ids as strings); a missing file says where it was looked for and the fix."""
    path = Path(path)
    df = read_sample_file(path)
    if df is None:
        raise NcfmError(
            f"sample submission not found: {path}. Download the competition files with "
            f"`{DOWNLOAD_HINT}` and unzip {path.name} into {path.parent}/ (or pass --sample PATH)"
        )
    return df


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
    while rows and not any(c.strip() for c in rows[-1]):  # blank lines at the very end are not rows
        rows.pop()
    if not rows:
        raise NcfmError(f"{path}: no header line (the file holds only blank space)")
    header, body = rows[0], rows[1:]
    bom = bool(header) and header[0].startswith("\ufeff")
    if bom:  # read past it so every other check still runs; find_problems reports it
        header = [header[0][1:], *header[1:]]
    ragged = [(i, len(r)) for i, r in enumerate(body) if len(r) != len(header)]
    if ragged:
        items = [f"line {_line(i)} has {n} fields" for i, n in ragged]
        problem = (f"{_plural(len(ragged), 'row')} with a number of fields other than the header's "
                   f"{len(header)}: {_examples(items)}")
        raise SubmissionError(f"{path}: not a well-formed CSV: {problem}", [problem])
    if len(set(header)) != len(header):
        raise SubmissionError(f"{path}: repeated column names in the header {','.join(header)}; "
                              f"it must be exactly {','.join(HEADER)}")
    df = pd.DataFrame(body, columns=header, dtype=str)
    df.attrs["byte_order_mark"] = bom
    return df


def _infer_stage(rows: int, data_dir: Path, path: Path) -> int:
    """The stage whose sample submission has `rows` rows (Kaggle's counts when no sample is there)."""
    counts = {}
    for stage in KAGGLE_ROWS:
        found = read_sample_file(sample_path(data_dir, stage))
        if found is not None:
            counts[stage] = len(found)
            if counts[stage] == rows:
                return stage
    for stage, n in KAGGLE_ROWS.items():
        if rows == n and stage not in counts:
            return stage
    known = ", ".join(f"stage {s}: {counts[s]:,} rows in {sample_path(data_dir, s)}" if s in counts
                      else f"stage {s}: {n:,} rows on Kaggle" for s, n in KAGGLE_ROWS.items())
    raise NcfmError(f"{path}: cannot tell the stage from its {rows:,} rows ({known}); "
                    f"pass --stage 1 or --stage 2")


def write_submission(df: pd.DataFrame, path: os.PathLike | str, sample_ids: Sequence[str],
                     force: bool = False) -> Path:
    """Validate `df`, then write it atomically (temp file, fsync, rename). Refuses to overwrite unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise NcfmError(f"{path} already exists; pass --force to overwrite it")
    validate_submission(df, sample_ids)
    text = format_submission(df)
    # The round trip: what a reader parses from the text must pass too (e.g. sums after rounding).
    validate_submission(pd.read_csv(io.StringIO(text), dtype={"image": str}), sample_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def validate_file(path: os.PathLike | str, stage: int | None = None, data_dir: os.PathLike | str = "data",
                  sample: os.PathLike | str | None = None) -> Checked:
    """Check a submission CSV against the sample submission; raise NcfmError/SubmissionError if it fails.

    The sample is `sample` if given, else `<data_dir>/sample_submission_stg<stage>.csv`; with no
    stage, the stage is the one whose sample submission has as many rows as the file.
    """
    path = Path(path)
    df = read_submission(path)
    if sample is not None:
        sample = Path(sample)
        if stage is None:
            stage = next((s for s, n in KAGGLE_ROWS.items() if n == len(df)), None)
    else:
        if stage is None:
            stage = _infer_stage(len(df), Path(data_dir), path)
        sample = sample_path(data_dir, stage)
    sample_ids = read_sample(sample)["image"].tolist()
    try:
        validate_submission(df, sample_ids)
    except SubmissionError as e:
        raise SubmissionError(f"{path} (checked against {sample}): {e}", e.problems) from None
    return Checked(path, len(df), stage, sample)


def main_validate(args) -> int:
    """`ncfm validate FILE [--stage S] [--data-dir D] [--sample P]`: exit 0 if valid, 2 if not."""
    try:
        checked = validate_file(args.file, stage=args.stage, data_dir=args.data_dir,
                                sample=getattr(args, "sample", None))
    except NcfmError as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 2
    stage = checked.stage if checked.stage is not None else "?"
    print(f"OK: {checked.rows} rows, stage {stage} ({checked.path}, checked against {checked.sample})")
    return 0
