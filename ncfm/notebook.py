"""A Kaggle code competition's answer: trained runs -> a Kaggle Dataset and an inference notebook
that makes `ncfm predict`'s CSV offline, on Kaggle's machine, for the hidden test set.

    ncfm notebook --run runs/NAME [--run runs/OTHER] --out kaggle/NAME [--accelerator cpu|t4x2] [--push]

    kaggle/NAME/
      dataset/                      a Kaggle Dataset: everything the notebook needs, internet off
        dataset-metadata.json       title, id (owner/slug), licence
        ncfm-bundle.json            what is inside and the predict command; the notebook finds the
                                    dataset under /kaggle/input by this file
        wheels/                     ncfm as a wheel (built from the installed package), and the
                                    Keras (and keras-hub) the models were saved with
        runs/<run>/...              the folds predict uses: best.keras, config.json, state.json,
                                    oof.csv and oof_tta<N>.csv (+ .json) so the OOF need not be
                                    predicted again; a crop run's detector run beside it
        data/<k>/folds.csv          each manifest the runs were split by, competition.json beside
        crops/<set>/                a crop run's crop-set record (crops.json, fold<K>.csv; no images)
      notebook/
        kernel-metadata.json        internet off, the competition and the dataset attached
        <slug>.ipynb                find the inputs, install ncfm offline, predict, validate
      pushed.json                   what `--push` sent (ncfm.kaggle_io)

Paths inside the bundled config.json files are relative to the dataset's root; the notebook copies
the dataset (without the wheels) to a writable folder, puts every model file's modification time
back (predict's saved OOF views are keyed by it) and runs predict from there. Nothing in the notebook
names a fixed input path: it searches NCFM_KAGGLE_INPUT (default /kaggle/input) for the bundle's
ncfm-bundle.json and for the competition's sample submission, in the old (/kaggle/input/<slug>/)
and the new (/kaggle/input/competitions/<slug>/, /kaggle/input/datasets/<owner>/<slug>/) layouts.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ncfm import NcfmError, runs
from ncfm.fileio import atomic_write_text
from ncfm.progress import say

BUNDLE = "ncfm-bundle.json"
FORMAT = 1
ACCELERATORS = {"cpu": None, "t4x2": "NvidiaTeslaT4"}  # --accelerator -> kernel-metadata machine_shape
# the input root, the output folder and a scratch folder of the notebook; Kaggle's unless set (tests)
INPUT_ENV, WORKING_ENV, SCRATCH_ENV = "NCFM_KAGGLE_INPUT", "NCFM_KAGGLE_WORKING", "NCFM_KAGGLE_SCRATCH"
# T4 throughput assumed for the estimate: half the float32 peak (8.1 TFLOP/s), what convolutions reach
T4_FLOPS = 4.0e12
STARTUP_SECONDS = 60.0  # installing the wheels and importing TensorFlow on Kaggle, roughly


# ----------------------------------------------------------------------------- what goes in
@dataclass
class Bundle:
    """The dataset folder being written: the files copied so far and where each source went."""

    root: Path
    placed: dict = field(default_factory=dict)  # source path (resolved) -> path inside the bundle
    mtimes: dict = field(default_factory=dict)  # path inside the bundle -> the source's mtime_ns
    configs: list = field(default_factory=list)  # the config.json files written, inside the bundle

    def write_config(self, run_rel: str, index: int, config: dict) -> None:
        """Fold `index`'s config.json in the bundle's run `run_rel`."""
        fold = runs.fold_of(self.root / run_rel, index)
        fold.dir.mkdir(parents=True, exist_ok=True)
        runs.write_config(fold, config)
        rel = fold.config.relative_to(self.root).as_posix()
        if rel not in self.configs:
            self.configs.append(rel)

    def place(self, src: Path, rel: str) -> str:
        """Copy `src` to `rel` inside the bundle (once per source) and return where it went."""
        key = str(Path(src).resolve())
        if key in self.placed:
            return self.placed[key]
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        self.placed[key] = rel
        self.mtimes[rel] = Path(src).stat().st_mtime_ns
        return rel

    def manifest(self, folds_csv: Path) -> str:
        """A manifest and its competition.json, in data/<k>/; -> the manifest's path inside."""
        from ncfm import competition

        key = str(Path(folds_csv).resolve())
        if key not in self.placed:
            k = sum(1 for v in self.placed.values() if v.startswith("data/") and v.endswith("/folds.csv"))
            self.place(folds_csv, f"data/{k}/folds.csv")
            beside = competition.path_beside(folds_csv)
            if beside.is_file():
                self.place(beside, f"data/{k}/{beside.name}")
        return self.placed[key]


def _bundle_fold(bundle: Bundle, fold: runs.Fold, run_rel: str, n_views: int) -> None:
    """One fold's files into the bundle's run `run_rel`; its config.json's paths rewritten to the
    bundle's (a crop run's detector run and crop-set record packed with it)."""
    config = runs.read_config(fold) or {}
    for path in runs.inference_files(fold, n_views):
        bundle.place(path, f"{run_rel}/{fold.name}/{path.name}")
    if config.get("detector"):  # a crop run: its detector finds the test images' boxes
        config["detector"] = _bundle_detector(bundle, Path(config["detector"]))
    if config.get("crop_set"):  # a crop run: trained on a crop set's fold manifest
        config["crop_set"] = config["data_dir"] = _crop_set(bundle, Path(config["crop_set"]))
        config["folds_csv"] = f"{config['crop_set']}/{Path(config.get('folds_csv') or '').name}"
    else:
        config["data_dir"] = ""  # the competition's files: wherever the notebook finds them
        if config.get("folds_csv") and Path(config["folds_csv"]).is_file():
            config["folds_csv"] = bundle.manifest(Path(config["folds_csv"]))
    config["cache_dir"] = ""
    bundle.write_config(run_rel, fold.index, config)


def _crop_set(bundle: Bundle, crop_set: Path) -> str:
    """A crop set's record (crops.json and its fold manifests, not the images) -> its folder inside."""
    from ncfm.crops import copy_record, read_crop_set

    key = str(Path(crop_set).resolve())
    if key not in bundle.placed:
        crops = read_crop_set(crop_set)
        rel = bundle.placed[key] = f"crops/{crops.dir.name}"
        for path in copy_record(crops, bundle.root / rel):
            bundle.mtimes[path.relative_to(bundle.root).as_posix()] = path.stat().st_mtime_ns
    return bundle.placed[key]


def _bundle_detector(bundle: Bundle, detector: Path) -> str:
    """A crop run's detector run, every fold, into runs/<name>-detector/ (once) -> that folder."""
    key = str(detector.resolve())
    if key not in bundle.placed:
        rel = bundle.placed[key] = f"runs/{detector.name}-detector"
        for fold in runs.all_folds(detector):
            _bundle_fold(bundle, fold, rel, 1)
    return bundle.placed[key]


def bundle_runs(bundle: Bundle, run_args: list[str], kept: dict, n_views: int) -> tuple[list[str], list[str]]:
    """Every kept fold of the runs (their member groups too) into runs/; -> (the --run paths inside the
    bundle, warnings)."""
    run_paths, warnings = [], []
    for i, arg in enumerate(run_args):
        top = Path(arg)
        name = top.name if top.name not in {Path(a).name for a in run_args[:i]} else f"{top.name}-{i}"
        for member in runs.member_runs(top):
            sub = member.relative_to(top).as_posix() if member != top else ""
            rel = f"runs/{name}" + (f"/{sub}" if sub else "")
            for fold in kept[str(member)]:
                _bundle_fold(bundle, fold, rel, n_views)
                if n_views > 1 and not fold.oof_views(n_views).is_file() and fold.oof.is_file():
                    warnings.append(f"{fold.dir}: no {fold.oof_views(n_views).name}; the notebook will predict the "
                                    f"fold's held-out training images under {n_views} views on Kaggle (slow). Run "
                                    f"`ncfm predict` with the same flags first to save them")
        run_paths.append(f"runs/{name}")
    return run_paths, warnings


# ----------------------------------------------------------------------------- ncfm and its wheels
def ncfm_wheel(dest: Path) -> Path:
    """ncfm as a pure-Python wheel, built from the installed package's own files (no build tools and
    no network: the same code that made the runs)."""
    import ncfm

    package = Path(ncfm.__file__).resolve().parent
    version = ncfm.__version__
    dist = f"ncfm-{version}.dist-info"
    files = {f"ncfm/{p.relative_to(package).as_posix()}": p.read_bytes()
             for p in sorted(package.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
             and p.suffix not in (".pyc",)}
    files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: ncfm\nVersion: {version}\n"
                                 f"Summary: ncfm, packed by `ncfm notebook` for an offline Kaggle notebook\n"
                                 f"Requires-Python: >=3.10\n").encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: ncfm notebook\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\nncfm = ncfm.cli:main\n"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist}/RECORD", "", ""])
    files[f"{dist}/RECORD"] = record.getvalue().encode()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"ncfm-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path


def dependency_wheels(names: list[str], dest: Path, wheel_dir: Path | None) -> tuple[list[Path], list[str]]:
    """The installed version of each package as a wheel: from `wheel_dir` when it holds it, else
    fetched with `pip download` (needs the package index). -> (wheels, warnings for those missing)."""
    from importlib.metadata import PackageNotFoundError, version

    found, warnings = [], []
    for name in names:
        try:
            wanted = version(name)
        except PackageNotFoundError:
            warnings.append(f"{name}: not installed here, so not packed; the notebook uses the Kaggle image's")
            continue
        stem = f"{name.replace('-', '_')}-{wanted}-"
        local = sorted(p for p in (wheel_dir.glob("*.whl") if wheel_dir else []) if p.name.lower().startswith(stem.lower()))
        if local:
            found.append(Path(shutil.copy2(local[0], dest / local[0].name)))
            continue
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   f"{name}=={wanted}", "-d", str(dest)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            done = None
        got = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(stem.lower()))
        if done is None or done.returncode or not got:
            why = "timed out" if done is None else (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            warnings.append(f"{name} {wanted}: no wheel packed ({why}); the notebook will use the Kaggle image's "
                            f"{name}, and models saved by {name} {wanted} may not load in another version. Put "
                            f"the wheel in a folder and pass --wheel-dir, or --wheels none to silence this")
        else:
            found.append(got[0])
    return found, warnings


# ----------------------------------------------------------------------------- the notebook
def _cell(kind: str, text: str, number: int) -> dict:
    lines = text.strip("\n").splitlines(keepends=True)
    cell = {"cell_type": kind, "id": f"ncfm-{number}", "metadata": {}, "source": lines}
    if kind == "code":
        cell |= {"execution_count": None, "outputs": []}
    return cell


def notebook_json(bundle_id: str, samples: list[str], predict_args: list[str], title: str, summary: str) -> dict:
    """The inference notebook: find the inputs, install ncfm offline, predict, validate."""
    find = f'''
# Find the inputs by searching, not by a fixed path: Kaggle mounts attached data at /kaggle/input/<slug>/
# (older notebooks) or /kaggle/input/competitions/<slug>/ and /kaggle/input/datasets/<owner>/<slug>/.
import json, os, subprocess, sys
from pathlib import Path

INPUT = Path(os.environ.get("{INPUT_ENV}", "/kaggle/input"))
WORKING = Path(os.environ.get("{WORKING_ENV}", "/kaggle/working"))
SCRATCH = Path(os.environ.get("{SCRATCH_ENV}", "/tmp/ncfm"))  # writable, and not saved as output
BUNDLE_ID = {bundle_id!r}
SAMPLES = {samples!r}  # the competition's sample submission(s)

def folders(root, depth=6):
    for here, subdirs, files in os.walk(root, followlinks=True):
        subdirs.sort()
        if len(Path(here).relative_to(root).parts) >= depth:
            subdirs.clear()
        yield Path(here), set(files)

bundle = next((here for here, files in folders(INPUT) if "{BUNDLE}" in files
               and json.loads((here / "{BUNDLE}").read_text())["id"] == BUNDLE_ID), None)
if bundle is None:
    raise SystemExit(f"no dataset with {BUNDLE} (id {{BUNDLE_ID}}) under {{INPUT}}: attach the dataset ncfm pushed")
competition = next((here for here, files in folders(INPUT)
                    if files & set(SAMPLES) and bundle not in [here, *here.parents]), None)
if competition is None:
    raise SystemExit(f"no folder with {{' or '.join(SAMPLES)}} under {{INPUT}}: attach the competition's data")
rerun = bool(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))
print(f"models: {{bundle}}\\ncompetition: {{competition}}\\nhidden-test rerun: {{rerun}}")
'''
    install = f'''
# Install ncfm (and the Keras the models were saved with) from the dataset's wheels: no internet.
# --target keeps them apart from the image's own packages; they come first on the import path.
wheels = sorted(str(p) for p in (bundle / "wheels").glob("*.whl"))
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                "--target", str(SCRATCH / "lib"), *wheels], check=True)
sys.path.insert(0, str(SCRATCH / "lib"))
import ncfm
print("ncfm", ncfm.__version__, "from", Path(ncfm.__file__).parent)
'''
    predict = f'''
# Predict exactly as `ncfm predict` did where the runs were trained (the same folds, views, weights and
# calibration), from a writable copy of the runs. Written to {{WORKING}}/submission.csv, validated first.
from ncfm import cli, notebook

os.chdir(notebook.unpack(bundle, SCRATCH / "work"))
WORKING.mkdir(parents=True, exist_ok=True)
code = cli.main(["predict", "--data-dir", str(competition), "--cache-dir", str(SCRATCH / "cache"),
                 "--out", str(WORKING / "submission.csv"), "--force", "--no-report",
{_wrap(predict_args)}])
if code:
    raise SystemExit(f"ncfm predict failed (exit code {{code}}): see its error above")
'''
    check = '''
# Check the file Kaggle will score against the competition's sample submission once more.
sample = next(p for p in (competition / name for name in SAMPLES) if p.is_file())
if cli.main(["validate", str(WORKING / "submission.csv"), "--sample", str(sample)]):
    raise SystemExit("submission.csv does not validate: see above")
print(open(WORKING / "submission.csv").read()[:600])
'''
    cells = [_cell(kind, text, i) for i, (kind, text) in enumerate(
        [("markdown", f"# {title}\n\n{summary}"), ("code", find), ("code", install), ("code", predict), ("code", check)])]
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _wrap(args: list[str], indent: int = 17, width: int = 100) -> str:
    lines, line = [], " " * indent
    for a in (repr(a) + ", " for a in args):
        if len(line) + len(a) > width and line.strip():
            lines.append(line.rstrip())
            line = " " * indent
        line += a
    lines.append(line.rstrip().rstrip(","))
    return "\n".join(lines)


def unpack(bundle_dir, work_dir) -> Path:
    """The bundle's runs, manifests and crop records copied to `work_dir` (writable: predict writes its
    per-fold predictions into the runs), each file's modification time put back as it was where the
    runs were trained (predict's saved OOF views are keyed by the model file's). -> work_dir."""
    bundle_dir, work_dir = Path(bundle_dir), Path(work_dir)
    record = read_bundle(bundle_dir)
    for rel, mtime_ns in record["files"].items():
        dest = work_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir / rel, dest)
        os.utime(dest, ns=(mtime_ns, mtime_ns))
    for config in record["configs"]:  # written by the bundle: no time to keep
        dest = work_dir / config
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir / config, dest)
    return work_dir


def read_bundle(bundle_dir) -> dict:
    path = Path(bundle_dir) / BUNDLE
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, this ncfm reads {FORMAT}")
        if not isinstance(record.get("files"), dict) or not isinstance(record.get("configs"), list) \
                or not record.get("id"):
            raise ValueError("no files, configs or id recorded")
        return record
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NcfmError(f"{path}: not a readable ncfm bundle ({e}); build it again with `ncfm notebook`") from None


# ----------------------------------------------------------------------------- runtime estimate
def model_flops(model) -> float:
    """Multiply-adds x 2 of one image through the model's convolutions and dense layers (the rest is
    small beside them); nested models counted through their layers."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
            continue
        try:
            out = tuple(layer.output.shape)
        except (AttributeError, ValueError, RuntimeError):
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            if isinstance(layer, keras.layers.DepthwiseConv2D) or hasattr(layer, "depthwise_kernel"):
                kh, kw, c_in, mult = layer.depthwise_kernel.shape
                total += 2.0 * out[1] * out[2] * kh * kw * c_in * mult
            continue
        shape = tuple(kernel.shape)
        if len(shape) == 4:  # (kh, kw, c_in / groups, c_out)
            total += 2.0 * out[1] * out[2] * shape[0] * shape[1] * shape[2] * shape[3]
        elif len(shape) == 2:
            spatial = 1
            for d in out[1:-1]:
                spatial *= d or 1
            total += 2.0 * spatial * shape[0] * shape[1]
    return total


@dataclass
class Estimate:
    seconds: float
    lines: list


def _measure(model, size: int, n_views: int, detector: bool = False, views_per_call: int = 32) -> float:
    """Seconds per image (all its views) of this model here, on the CPU: a warm-up call, then the
    fastest of three (the others wait on whatever else runs). A detector is called as
    ncfm.detect.find_boxes calls it: the network, then keras-hub's decoder."""
    import keras
    import numpy as np

    def call(x):
        if not detector:
            return model.predict(x, verbose=0)
        x = x.astype("float32")
        raw = {k: keras.ops.cast(v, "float32") for k, v in model(x, training=False).items()}
        return model.decode_predictions(raw, x)

    batch = max(1, views_per_call // n_views)
    x = np.random.default_rng(0).integers(0, 256, (batch * n_views, size, size, 3), dtype=np.uint8)
    call(x)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return min(times) / batch


def estimate_runtime(groups: list[tuple[str, list[runs.Fold], int]], test_images: int, accelerator: str,
                     detector_folds: list[runs.Fold], decode_seconds: float) -> Estimate:
    """The notebook's running time: for each group of folds (name, folds, views per image), test images x
    folds x views x the model's cost per view, plus each detector fold once per image, plus decoding
    and a fixed start. CPU: the cost measured here; t4x2: the model's FLOPs over T4_FLOPS per T4."""
    import keras

    from ncfm.detect import load_detector

    total, lines = STARTUP_SECONDS, [f"start (installing wheels, importing TensorFlow): ~{STARTUP_SECONDS:.0f} s"]
    n_gpus = 2 if accelerator == "t4x2" else 0
    for name, folds, n_views, loader in ([(g[0], g[1], g[2], runs.load_best) for g in groups]
                                         + ([("detector", detector_folds, 1, load_detector)] if detector_folds else [])):
        model = loader(folds[0])
        size = int(model.input_shape[1] or runs.fold_image_size(folds[0]))
        if n_gpus:
            per_view = model_flops(model) / (T4_FLOPS * n_gpus)
            how = f"{model_flops(model) / 1e9:.2f} GFLOP a view / ({n_gpus} x {T4_FLOPS / 1e12:.0f} TFLOP/s)"
            per_image = per_view * n_views
        else:
            per_image = _measure(model, size, n_views, detector=loader is load_detector)
            how = f"measured here on {os.cpu_count()} CPU cores"
        del model
        keras.backend.clear_session()
        seconds = test_images * len(folds) * per_image
        total += seconds
        lines.append(f"{name}: {test_images} images x {len(folds)} folds x {n_views} views x "
                     f"{per_image / n_views * 1000:.2f} ms a view ({how}) = {_clock(seconds)}")
    decode = test_images * decode_seconds * (1 + bool(detector_folds))
    total += decode
    lines.append(f"decoding {test_images} test images{' twice' if detector_folds else ''}: {_clock(decode)} "
                 f"(measured here)")
    return Estimate(total, lines)


def _decode_seconds(data_dir: Path, paths: list[str], size: int) -> float:
    from ncfm.cache import decode_resized

    sample = paths[:: max(1, len(paths) // 20)][:20]
    if not sample:
        return 0.0
    start = time.perf_counter()
    for p in sample:
        try:
            decode_resized(data_dir / p, size)
        except Exception:  # an unreadable image costs nothing to estimate
            pass
    return (time.perf_counter() - start) / len(sample)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    h, m = divmod(seconds // 60, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {seconds % 60:02d} s"


# ----------------------------------------------------------------------------- command
def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def _owner(flag: str | None) -> tuple[str, str | None]:
    if flag:
        return flag, None
    from ncfm.kaggle_io import find_credentials

    try:
        username = find_credentials().username
    except NcfmError:
        username = ""
    if username:
        return username, None
    # a placeholder the user replaces (push refuses ids of another account)
    return "your-kaggle-username", ("no Kaggle username in your credentials (KAGGLE_USERNAME or kaggle.json), so "
                                    "the ids name the owner 'your-kaggle-username'; pass --owner YOUR_NAME")


def answer_options(args, recorded: dict | None) -> dict:
    """predict's answer-changing flags: those given here, else those the last `ncfm predict` of the
    first run recorded (calibration.json), else predict's defaults."""
    import dataclasses

    from ncfm.config import PredictAnswer
    from ncfm.predict import ANSWER_OPTIONS

    defaults = dataclasses.asdict(PredictAnswer())
    recorded = recorded or {}
    return {name: getattr(args, name) if getattr(args, name, None) is not None
            else recorded.get(name) if recorded.get(name) is not None else defaults[name] for name in ANSWER_OPTIONS}


def _predict_flags(options: dict, run_paths: list[str], folds_csv: str, devices: str) -> list[str]:
    flags = [item for r in run_paths for item in ("--run", r)] + ["--folds-csv", folds_csv, "--devices", devices]
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def main(args) -> int:
    from ncfm.dataset import competition_for, find_test_images
    from ncfm.kaggle_io import DATASET_DIR, DATASET_METADATA, KERNEL_METADATA, NOTEBOOK_DIR
    from ncfm.predict import is_crop_run, leave_out_weak, usable_folds

    if args.accelerator not in ACCELERATORS:
        raise NcfmError(f"received --accelerator {args.accelerator}; choose one of {', '.join(ACCELERATORS)}")
    out = Path(args.out)
    for run in args.run:
        if not Path(run).is_dir():
            raise NcfmError(f"{run}: run folder not found; train it first (`ncfm train --folds all --run {run}`)")
    member_dirs = [m for r in args.run for m in runs.member_runs(r)]
    trained = runs.trained_folds(member_dirs[0]) if member_dirs else []
    data_dir = Path(args.data_dir or _data_dir_of(runs.read_config(trained[0]) if trained else None) or "data")
    folds_csv = Path(args.folds_csv) if args.folds_csv else data_dir / "folds.csv"
    if not folds_csv.is_file():
        raise NcfmError(f"{folds_csv}: not found; pass --data-dir (the competition's files, split by split_train_val) "
                        f"or --folds-csv")
    comp = competition_for(data_dir, folds_csv)
    if not comp.samples:
        raise NcfmError(f"{data_dir}: no sample submission recorded in competition.json; the notebook finds the "
                        f"competition's files on Kaggle by it")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise NcfmError(f"{out}: already exists and is not empty; pass --force to replace it or choose another --out")
    recorded = runs.read_calibration(args.run[0]) or {}
    if recorded.get("runs") != [str(m) for m in member_dirs]:
        recorded = {}  # the last predict of the first run was of another ensemble
    # what a predict of before 2026-12-05 recorded, before "options"
    options = answer_options(args, recorded.get("options") or {k: recorded[k] for k in ("tta", "mean", "weak_folds")
                                                                if k in recorded})
    kept = {}
    for member in member_dirs:
        folds = usable_folds(Path(member), comp)
        kept[str(member)] = leave_out_weak(Path(member), folds, comp, options["weak_folds"], say)
    stage = comp.default_stage
    test, _ = find_test_images(data_dir, stage, comp)
    test_images = args.test_images or len(test)

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset_dir, notebook_dir = tmp / DATASET_DIR, tmp / NOTEBOOK_DIR
    bundle = Bundle(dataset_dir)
    run_paths, warnings = bundle_runs(bundle, args.run, kept, int(options["tta"]))
    manifest = bundle.manifest(folds_csv)
    wheel_dir = dataset_dir / "wheels"
    wheels = [ncfm_wheel(wheel_dir)]
    crop_runs = [kept[str(m)] for m in member_dirs if kept[str(m)] and is_crop_run(kept[str(m)])]
    if args.wheels != "none":
        names = ["keras", "keras-hub"] if crop_runs else ["keras"]
        if args.wheels != "auto":
            names = [n.strip() for n in args.wheels.split(",") if n.strip()]
        more, missing = dependency_wheels(names, wheel_dir, Path(args.wheel_dir) if args.wheel_dir else None)
        wheels += more
        warnings += missing

    owner, owner_warning = _owner(args.owner)
    if owner_warning:
        warnings.append(owner_warning)
    name = _slug(args.slug or out.name) or "ncfm"
    kernel_slug, dataset_slug = _slug(f"{name}-predict"), _slug(f"{name}-ncfm-models")
    bundle_id = hashlib.sha256(json.dumps([sorted(bundle.mtimes.items()), run_paths, options, time.time()],
                                          default=str).encode()).hexdigest()[:16]
    predict_args = _predict_flags(options, run_paths, manifest, "all" if args.accelerator == "t4x2" else "1")

    # the estimate: each run's kept folds, with the views predict will use
    groups = [(str(m), kept[str(m)], int(options["tta"])) for m in member_dirs if kept[str(m)]]
    detector_folds = runs.all_folds(runs.read_config(crop_runs[-1][0])["detector"]) if crop_runs else []
    size = runs.fold_image_size(groups[0][1][0])
    estimate = estimate_runtime(groups, test_images, args.accelerator, detector_folds,
                                _decode_seconds(data_dir, list(test.path), size))
    limit = args.time_limit * 3600
    machine = "two T4 GPUs" if args.accelerator == "t4x2" else "Kaggle's CPU"
    summary = (f"Built by `ncfm notebook` (ncfm {_version()}) on {time.strftime('%Y-%m-%d')} from "
               f"{', '.join(args.run)}: {sum(len(v) for v in kept.values())} fold model(s), {options['tta']} views "
               f"each. Estimated time on {machine} for {test_images} test images: {_clock(estimate.seconds)}.")

    samples = [comp.samples[str(stage)]] + sorted(set(comp.samples.values()) - {comp.samples[str(stage)]})
    record = {"format": FORMAT, "id": bundle_id, "ncfm": _version(), "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "runs": run_paths, "source_runs": [str(r) for r in args.run], "folds_csv": manifest,
              "competition": comp.slug, "samples": samples, "predict": predict_args,
              "options": options, "wheels": [w.name for w in wheels], "accelerator": args.accelerator,
              "estimate": {"seconds": round(estimate.seconds, 1), "test_images": test_images, "lines": estimate.lines},
              "files": bundle.mtimes, "configs": bundle.configs}
    atomic_write_text(dataset_dir / BUNDLE, json.dumps(record, indent=1) + "\n")
    atomic_write_text(dataset_dir / DATASET_METADATA, json.dumps({
        "title": _title(f"{name} ncfm models"), "id": f"{owner}/{dataset_slug}",
        "licenses": [{"name": "CC0-1.0"}],
        "subtitle": "Models and ncfm wheels for an offline Kaggle notebook"[:80]}, indent=2) + "\n")
    notebook_dir.mkdir(parents=True)
    title = _title(f"{name} predict")
    code_file = f"{kernel_slug}.ipynb"
    nb = notebook_json(bundle_id, record["samples"], predict_args, title, summary)
    atomic_write_text(notebook_dir / code_file, json.dumps(nb, indent=1) + "\n")
    atomic_write_text(notebook_dir / KERNEL_METADATA, json.dumps({
        "id": f"{owner}/{kernel_slug}", "title": title, "code_file": code_file, "language": "python",
        "kernel_type": "notebook", "is_private": True, "enable_gpu": args.accelerator != "cpu",
        "enable_internet": False, "machine_shape": ACCELERATORS[args.accelerator],
        "dataset_sources": [f"{owner}/{dataset_slug}"],
        "competition_sources": [comp.slug] if comp.slug else [], "kernel_sources": [], "model_sources": []},
        indent=2) + "\n")
    if not comp.slug:
        warnings.append(f"{folds_csv.parent / 'competition.json'}: no competition slug recorded, so the notebook has "
                        f"no competition attached; rerun split_train_val with --competition SLUG")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)

    size_bytes = sum(p.stat().st_size for p in (out / DATASET_DIR).rglob("*") if p.is_file())
    say(f"wrote {out / DATASET_DIR} ({size_bytes / 1e6:.1f} MB: {sum(len(v) for v in kept.values())} fold model(s), "
        f"{len(wheels)} wheel(s): {', '.join(w.name for w in wheels)}) and {out / NOTEBOOK_DIR / code_file}")
    say(f"the notebook predicts with: ncfm predict {' '.join(predict_args)}")
    say(f"estimated runtime on {machine} for {test_images} test images: {_clock(estimate.seconds)}")
    for line in estimate.lines:
        say(f"  {line}")
    if estimate.seconds > limit:
        say(f"WARNING: the estimate, {_clock(estimate.seconds)}, is over the {args.time_limit:g} h limit "
            f"(--time-limit): use fewer views (--tta), fewer folds or --accelerator t4x2")
    for w in warnings:
        say(f"WARNING: {w}")
    if args.push:
        from ncfm.kaggle_io import push_notebook

        return push_notebook(out)
    say(f"next: `ncfm notebook ... --push` (or `kaggle datasets create -p {out / DATASET_DIR} -r zip` "
        f"and `kaggle kernels push -p {out / NOTEBOOK_DIR}`), then `ncfm submit --notebook {owner}/{kernel_slug} -m MSG`")
    return 0


def _title(text: str) -> str:
    text = text.strip()
    return text[:50].strip() if len(text) >= 6 else (text + " notebook")[:50]


def _version() -> str:
    import ncfm

    return ncfm.__version__


def _data_dir_of(config: dict | None) -> str | None:
    """The competition's folder a run was trained on: a whole-image run's data_dir, a crop run's
    detector's."""
    if not config:
        return None
    if config.get("detector"):
        det = runs.all_folds(config["detector"])
        return (runs.read_config(det[0]) or {}).get("data_dir") if det else None
    return config.get("data_dir")
