"""The `ncfm` command: parse flags, call one function per subcommand, print results.

Heavy imports (Keras, the Kaggle client) happen inside the handlers, so `ncfm --help`
and the data commands start fast. Each `_add_<cmd>` builds one subparser; each `_cmd_<cmd>`
runs it and returns an exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys

from ncfm import NcfmError, competition
from ncfm.config import PredictAnswer, TrainConfig


UserError = NcfmError  # raised by any module for problems the user can fix


# --------------------------------------------------------------------------- data
def _add_make_synthetic(sub):
    p = sub.add_parser(
        "make_synthetic",
        help="generate a small synthetic dataset in a Kaggle competition's layout, for tests and the demo",
        description="Write a synthetic dataset in a Kaggle competition's layout: by default NCFM's "
        "(train/<CLASS>/, test_stg1/, test_stg2/, both sample submissions); --layout dog-breed, "
        "plant-seedlings or aerial-cactus imitate those competitions' files (one test/ folder, their "
        "labels CSV and sample_submission.csv); planet (several tags per image), pawpularity (a number) "
        "and aptos (a grade 0-4) those whose answer is not one class per image. Each class is a distinct drawn shape on per-boat "
        "backgrounds, with near-duplicate frames per boat, so plain stratified folds leak. "
        "train_boats.csv and test_truth.csv hold the true boats and test labels; on ncfm, "
        "boxes/<class>_labels.json hold the training fish's boxes as the community's Sloth files "
        "(for `ncfm boxes`).",
    )
    p.add_argument("out_dir", help="folder to create (must be empty or not exist)")
    p.add_argument("--layout", default="ncfm",
                   help="whose files to imitate: ncfm, dog-breed, plant-seedlings, aerial-cactus, planet, "
                   "pawpularity or aptos (default ncfm)")
    p.add_argument("--n-classes", type=int, default=None,
                   help="classes to draw: dog-breed 2-120 (default 6), plant-seedlings 2-12 (default 5), planet's "
                   "tags 2-17 (default 6); fixed for ncfm (8), aerial-cactus (2), aptos (5 grades), not used by "
                   "pawpularity")
    p.add_argument("--n-train", type=int, default=400, help="training images in all (default 400)")
    p.add_argument("--n-test1", type=int, default=60,
                   help="stage-1 test images; the test images of the other layouts (default 60)")
    p.add_argument("--n-test2", type=int, default=None, help="stage-2 test images, ncfm only (default 80)")
    p.add_argument("--boats", type=int, default=12, help="number of synthetic boats/cameras (default 12)")
    p.add_argument("--scale", type=float, default=0.25,
                   help="image size as a fraction of Kaggle's (1280x720 etc.); 1.0 = full size (default 0.25; "
                   "aerial-cactus is always 32x32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--nested-stg2", action="store_true",
                   help="put stage-2 images in test_stg2/test_stg2/ as the .7z unpacks (ncfm only)")
    p.add_argument("--small-fish", action="store_true",
                   help="small fish on large frames, as on real decks: frames twice as wide and high "
                   "(4x the area), a fish's box ~1-3%% of the frame")
    p.add_argument("--decoys", type=int, default=0,
                   help="fish-like distractors on every frame, whatever its class: fish-sized shapes in fish "
                   "colours (crates, rags, fish-shaped bags) that a detector must learn not to take for fish "
                   "(default 0)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")


def _cmd_make_synthetic(args) -> int:
    from ncfm import synthetic

    return synthetic.main(args)


def _add_split_train_val(sub):
    p = sub.add_parser(
        "split_train_val",
        help="read the competition's layout; write a stratified, group-aware k-fold manifest (folds.csv)",
        description="Read the competition's files: training labels from class folders (train/<class>/) or "
        "from a flat image folder plus a labels CSV (labels.csv, train.csv); test ids, classes and the kind of "
        "submission from the sample submission. Decode every training image once (catching corrupt files), "
        "group near-duplicate images (boat/camera) where the data have them and assign stratified (group) k-folds. Writes folds.csv "
        "(image,label,fold,group; no image is copied), folds.json and competition.json (what was found: "
        "every later command reads it) and prints them.",
    )
    p.add_argument("--data-dir", default="data", help="the competition's unzipped files (default data)")
    p.add_argument("--out", default=None, help="manifest path (default <data-dir>/folds.csv)")
    p.add_argument("--folds", type=int, default=5, help="number of folds k (default 5)")
    p.add_argument("--seed", type=int, default=2016, help="shuffling seed (default 2016)")
    p.add_argument("--groups", default="auto", choices=["auto", "boat", "size", "none"],
                   help="how images are grouped so a group never spans two folds: auto (default) = boat "
                   "groups where the images have near-duplicates whose groups do not follow the classes (or "
                   "the competition is known for them, as NCFM), else none, printing what it decided and why; "
                   "boat = image size plus clustering of downscaled thumbnails (a boat/camera proxy); size = "
                   "image size only; none = plain stratified k-fold (leaks near-duplicate frames)")
    p.add_argument("--skip-bad", action="store_true",
                   help="exclude unreadable images (listed) instead of stopping with an error")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default 0 = all cores)")
    p.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    g = p.add_argument_group("layout (detected; these override)")
    g.add_argument("--train-dir", default=None,
                   help="training images, relative to --data-dir (default: train/, train_images/ or train-jpg/)")
    g.add_argument("--test-dir", default=None, help="test images, relative to --data-dir (default: every test*/ folder)")
    g.add_argument("--labels-csv", default=None,
                   help="CSV of image id and label for a flat training folder (default: labels.csv, train.csv, "
                   "train_labels.csv, train_v2.csv or trainLabels.csv when train/ has no class folders)")
    g.add_argument("--id-column", default=None, help="the labels CSV's id column (default: its first)")
    g.add_argument("--label-column", default=None,
                   help="the labels CSV's label column (default: its only other column, the sample submission's "
                   "answer column, or one named label, class, breed, species, ...)")
    g.add_argument("--competition", default=None,
                   help="Kaggle slug, recorded for submit/submissions (default: NCFM's for NCFM's layout); a known "
                   "slug also sets the task and metric (Planet, iMet, Pawpularity, APTOS, Diabetic Retinopathy)")
    g.add_argument("--task", default=None, choices=competition.TASKS,
                   help="what the answer is: single (one class per image), multilabel (space-separated labels), "
                   "regression (a number), ordinal (an integer grade). Default: read from the labels (several "
                   "labels in some rows; over 30 distinct numbers; whole numbers in a column named diagnosis, "
                   "level or grade); a column of small whole numbers elsewhere needs --task ordinal")
    g.add_argument("--metric", default=None, choices=list(competition.METRIC_NAMES),
                   help="the competition's metric where the task's default is not it: multilabel f2_samples "
                   "(default, Planet), f2_micro (iMet 2019), f1_micro, f1_macro, f2_macro, f1_samples; "
                   "regression rmse; ordinal qwk; single log_loss, accuracy or roc_auc (default: from the "
                   "sample submission)")


def _cmd_split_train_val(args) -> int:
    from ncfm import folds

    return folds.main(args)


def _add_boxes(sub):
    p = sub.add_parser(
        "boxes",
        help="import the community's fish boxes (Sloth *_labels.json) into boxes.csv beside folds.csv",
        description="Read the Sloth annotation files of the training fish (one per class: alb_labels.json, "
        "..., yft_labels.json, other_labels.json; the file names the class), match their file names to "
        "the training images of folds.csv by base name, clip boxes to their image and write boxes.csv "
        "(image,label,x,y,width,height,image_width,image_height; pixels, top-left origin) beside "
        "folds.csv. Prints boxes per class, then what was odd: unknown file names, fish images "
        "without a box, duplicate boxes, images annotated in another class's file. Run after "
        "split_train_val. The files were shared on the competition's Kaggle forum and kernels.",
    )
    p.add_argument("files", nargs="*", metavar="FILES",
                   help="Sloth JSON files (default: <data-dir>/boxes/*_labels.json)")
    p.add_argument("--data-dir", default="data", help="the competition's files, split by split_train_val (default data)")
    p.add_argument("--folds-csv", default=None,
                   help="manifest from split_train_val (default <data-dir>/folds.csv); boxes.csv goes beside it")
    p.add_argument("--force", action="store_true", help="overwrite an existing boxes.csv that holds other boxes")


def _cmd_boxes(args) -> int:
    from ncfm import boxes

    return boxes.main(args)


# --------------------------------------------------------------------------- train
def _flag_type(f: dataclasses.Field):
    if f.type in ("bool", bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    return {"int": int, "float": float, "str": str}.get(str(f.type), str)


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="fine-tune a backbone for one fold, or many members (folds x seeds x configs) locally or on Ray",
        description="Train one fold: phase 1 trains a new head (one output per class of the competition) "
        "on a frozen backbone, phase 2 fine-tunes at a lower rate. Keeps the checkpoint with the lowest validation log loss, "
        "writes history, resolved config and out-of-fold predictions. Rerunning the same command "
        "resumes an interrupted fold; a finished fold is skipped unless --retrain. "
        "With --folds, one command trains many members: every (config, seed, fold), each exactly as "
        "`--fold K` would, into runs/NAME/<config>-seed<S>/fold<K>/ (runs/NAME/fold<K>/ without --seeds "
        "and with at most one --config), then prints a table of every member. With Ray installed "
        "(pip install 'ncfm[ray]') each member is a process of its own with one GPU; without it they "
        "train one after another in this process.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--fold", type=int, help="which fold to hold out (0..k-1)")
    which.add_argument("--folds", metavar="all|0,2,4",
                       help="train several members in one command: every fold of the manifest (all) or these; "
                            "finished members are skipped, interrupted ones resume")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/inception299")
    p.add_argument("--data-dir", default="data", help="Kaggle data folder (default data)")
    p.add_argument("--folds-csv", default=None, help="manifest from split_train_val (default <data-dir>/folds.csv)")
    p.add_argument("--config", action="append", default=None,
                   help="TOML/YAML file of settings (flags override it); with --folds, repeat it to train "
                        "every config as members of their own (runs/NAME/<file name>-seed<S>/)")
    p.add_argument("--retrain", action="store_true", help="discard this fold's outputs and train from scratch")
    p.add_argument("--detector", default=None, metavar="RUN",
                   help="train on fish crops instead of whole images: the boxes of this finished detector run "
                        "(`ncfm detect`; every fold) are cut once into <data-dir>/crops/, training on jittered "
                        "true boxes and validating on the detector's own held-out boxes")
    p.add_argument("--max-train-images", type=int, default=0, help=argparse.SUPPRESS)
    # a member of `--folds` on Ray: the command that started it draws the run's report
    p.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    g = p.add_argument_group("many members (with --folds)")
    g.add_argument("--seeds", metavar="0,1,2", default=None,
                   help="train every fold once per seed, into runs/NAME/<config>-seed<S>/ (replaces --seed)")
    g.add_argument("--jobs", type=int, default=None,
                   help="members at a time: default one per GPU on Ray, one on a machine without a GPU")
    g.add_argument("--retries", type=int, default=2,
                   help="times a member whose process died (killed, out of memory, node lost) starts again "
                        "from its last checkpoint (default 2); an error you must fix is not retried")
    g.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="join this Ray cluster instead of starting Ray here; every node must see the data "
                        "folder, the cache and the run folder at the same paths (checked first)")
    g.add_argument("--no-ray", action="store_true",
                   help="train the members one after another in this process even when Ray is installed")
    _settings_flags(p, TrainConfig)


def _settings_flags(p, settings):
    g = p.add_argument_group(f"settings (defaults from ncfm.{settings.__module__.split('.')[-1]}.{settings.__name__})")
    for f in dataclasses.fields(settings):
        flag = "--" + f.name.replace("_", "-")
        g.add_argument(flag, dest=f.name, type=_flag_type(f), default=None,
                       help=f"{f.metadata['help']} (default {f.default!r})".replace("%", "%%"))


def _cmd_train(args) -> int:
    if args.folds is not None:
        from ncfm import members

        code = members.main(args, _train_one, draw_report=lambda: _draw_report([args.run]))
    else:
        if args.seeds or len(args.config or []) > 1:
            raise UserError(f"--seeds and several --config train many members: pass --folds {args.fold} "
                            f"(or --folds all) instead of --fold {args.fold}")
        args.config = args.config[0] if args.config else None
        code = _train_one(args)
    if not args.no_report:
        _draw_report([args.run])
    return code


def _train_one(args) -> int:
    """`ncfm train --fold K`: one classifier fold; with --detector, on the crops of that detector run's
    boxes (the detector family finds them, the classifier family cuts and trains on them)."""
    from ncfm import train
    from ncfm.detect import run_boxes

    return train.main(args, detector_boxes=run_boxes)


# --------------------------------------------------------------------------- detect
def _add_detect(sub):
    from ncfm.config import DetectConfig

    p = sub.add_parser(
        "detect",
        help="train a fish detector (RetinaNet) for one fold; writes runs/NAME/fold<K>/ with the boxes it finds",
        description="Train one detector fold on the same group folds as the classifier, from the boxes "
        "`ncfm boxes` imported: images of classes with boxes are positives, the class without boxes (NoF) "
        "negatives. Keeps the epoch with the lowest validation loss, writes the boxes it finds on the "
        "fold's held-out images (oof_boxes.csv) and prints recall@0.5, the best box's IoU and the "
        "fish/no-fish AUC. Rerunning resumes an interrupted fold; a finished fold is skipped unless --retrain.",
    )
    p.add_argument("--fold", type=int, required=True, help="which fold to hold out (0..k-1)")
    p.add_argument("--run", required=True, help="run folder, e.g. runs/det")
    p.add_argument("--data-dir", default="data", help="Kaggle data folder (default data)")
    p.add_argument("--folds-csv", default=None, help="manifest from split_train_val (default <data-dir>/folds.csv)")
    p.add_argument("--boxes-csv", default=None, help="boxes from `ncfm boxes` (default beside the folds manifest)")
    p.add_argument("--empty-class", default=None,
                   help="the class whose images hold no fish (default: the one class without boxes, NCFM's NoF)")
    p.add_argument("--test", action="store_true", help="also find the boxes of every test stage's images")
    p.add_argument("--config", default=None, help="TOML/YAML file of settings, top level or a [detect] table")
    p.add_argument("--retrain", action="store_true", help="discard this fold's outputs and train from scratch")
    _settings_flags(p, DetectConfig)


def _cmd_detect(args) -> int:
    from ncfm import detect

    code = detect.main(args)
    _draw_report([args.run])
    return code


def _draw_report(runs) -> None:
    """The report of what train/predict just wrote; its failure must never cost their results."""
    from pathlib import Path

    from ncfm import report

    try:
        report.build_report([Path(r) for r in runs])
    except Exception as e:
        print(f"report skipped ({type(e).__name__}: {e})", file=sys.stderr)


# --------------------------------------------------------------------------- predict
def _add_predict(sub):
    p = sub.add_parser(
        "predict",
        help="TTA x folds x runs ensemble -> calibrated, validated Kaggle CSV",
        description="Predict the test set of a stage with every fold model of each run, averaging "
        "N test-time views per model, then across folds and runs; a fold no better than the class "
        "priors on its held-out images is named and pulled towards the priors (--weak-folds). Per-fold predictions "
        "are saved in the run folder before averaging. The CSV is validated against the sample submission "
        "and written atomically.",
    )
    p.add_argument("--run", action="append", required=True,
                   help="run folder (repeat for an ensemble of runs); a run of many members uses every one "
                        "(folds x seeds x configs)")
    p.add_argument("--stage", type=int, default=None,
                   help="test stage: NCFM has 1 and 2, other competitions one (default: the first)")
    p.add_argument("--data-dir", default="data",
                   help="the competition's files, split by split_train_val (default data)")
    p.add_argument("--folds-csv", default=None,
                   help="the manifest the runs were split by; its competition.json describes the competition "
                   "(default <data-dir>/folds.csv; give it when --data-dir holds only the competition's own "
                   "files, as a Kaggle notebook's /kaggle/input does)")
    _answer_flags(p)
    p.add_argument("--allow-unfinished", action="store_true",
                   help="use folds whose training has not finished (their best checkpoint so far) "
                   "instead of stopping")
    p.add_argument("--fill-unreadable", action="store_true",
                   help="give unreadable test images the class priors (listed) instead of stopping")
    p.add_argument("--batch-size", type=int, default=0,
                   help="images per call, each with all its views (default: 1024 views per call on a GPU, "
                   "64 on a CPU, divided by --tta, times the number of --devices)")
    p.add_argument("--devices", default="1",
                   help="devices each model predicts on, every call's images split evenly across them: 1, all, "
                   "or a number (JAX and TensorFlow; e.g. a Kaggle notebook's two T4s: --devices all) (default 1)")
    p.add_argument("--out", default=None,
                   help="CSV path (default submissions/<run>.csv; NCFM: submissions/<run>_stage<S>.csv)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out CSV")
    p.add_argument("--recompute", action="store_true",
                   help="predict again even where saved per-fold predictions are up to date")
    p.add_argument("--cache-dir", default=None,
                   help="where decoded images are cached (default <data-dir>/cache); give a writable folder "
                   "when the data folder is read-only (a Kaggle notebook's /kaggle/input)")
    p.add_argument("--no-report", action="store_true", help="do not draw the runs' report afterwards")


def _answer_flags(p, recorded: bool = False) -> None:
    """The flags that change predict's answer (config.PredictAnswer), for predict and for `ncfm notebook`,
    which replays them. recorded: they default to None, meaning what the last predict of the runs used."""
    answer = PredictAnswer()

    def default(value, why: str = "") -> dict:
        said = f"what the last `ncfm predict` of these runs used, else {value}" if recorded else f"{value}{why}"
        return {"default": None if recorded else value, "help_default": f"(default {said})"}

    def add(*flags, help: str, value, why: str = "", **kw) -> None:  # noqa: A002 (as argparse names it)
        d = default(value, why)
        p.add_argument(*flags, default=d["default"], help=f"{help} {d['help_default']}".replace("%", "%%"), **kw)

    add("--tta", type=int, value=answer.tta, help="views per image, view 0 = the plain image")
    add("--views", value=answer.views, help="kinds of TTA views: any of flips,zoom,shift,crop")
    add("--mean", choices=["arithmetic", "geometric"], value=answer.mean, help="how models are averaged")
    add("--run-weights", "--member-weights", dest="run_weights", choices=["equal", "oof", "confidence"],
        value=answer.run_weights,
        help="how several --run, or the member groups (<config>-seed<S>/) of a run trained with "
             "`ncfm train --folds --seeds/--config`, are blended: equal weights; oof = non-negative weights "
             "summing to 1 fitted on their out-of-fold log loss and printed (members of one config share "
             "folds, so their OOF rows align); confidence = a crop run and a whole-image run blended per "
             "image, the crops weighing more where the detector is sure of its box (fitted on OOF)")
    add("--crop-boxes", type=int, value=answer.crop_boxes, why=": every box its crop set cut, `ncfm train "
        "--crop-top-boxes`", help="a crop run: combine the crops of only this many of the detector's best boxes "
                                  "per image")
    add("--calibrate", choices=["none", "temperature", "floor", "both"], value=answer.calibrate,
        help="fit on the runs' out-of-fold predictions when the competition is scored by log loss")
    add("--clip", type=float, value=answer.clip, help="manual probability floor applied last (e.g. 0.01)")
    d = default(answer.weak_folds, ": on held-out test images it was never worse than keep beyond noise, where "
                                   "leaving folds out was; docs/weak_folds.md")
    p.add_argument("--weak-folds", choices=["keep", "priors", "margin", "shrink"], default=None,
                   help="what to do with a fold no better than the class priors on its held-out images (each is "
                   "named): keep it in the average; priors = leave out a fold whose OOF does not beat the priors; "
                   "margin = also one that beats them by less than twice the standard error; shrink = keep every "
                   "fold, each pulled towards the priors by a weight fitted on its own OOF. A run whose every fold "
                   f"is weak keeps them all; a fold left out is not packed by `ncfm notebook`. {d['help_default']}")
    p.add_argument("--keep-weak-folds", dest="weak_folds", action="store_const", const="keep",
                   help="the same as --weak-folds keep")
    add("--seed", type=int, value=answer.seed, help="seed of the TTA views")


def _cmd_predict(args) -> int:
    from ncfm import predict

    code = predict.main(args)
    if not args.no_report:
        _draw_report(args.run)
    return code


def _add_validate(sub):
    p = sub.add_parser("validate", help="check a submission CSV against the sample submission",
                       description="Run the same checks as predict and submit: the sample's exact header, "
                       "every sample id once and nothing else, and the answers the competition asks for: "
                       "finite probabilities per class summing to 1, one class name spelled exactly, or "
                       "one probability in [0, 1] of the positive class.")
    p.add_argument("file", help="submission CSV")
    p.add_argument("--stage", type=int, default=None,
                   help="test stage: NCFM has 1 and 2, other competitions one (default: the stage whose "
                   "sample submission has as many rows)")
    p.add_argument("--data-dir", default="data",
                   help="the competition's files and competition.json, as split_train_val left them (default data)")
    p.add_argument("--sample", default=None,
                   help="sample submission path (overrides --data-dir/--stage; without a competition.json "
                   "in --data-dir, its header says what to check)")


def _cmd_validate(args) -> int:
    from ncfm import submission

    return submission.main_validate(args)


# --------------------------------------------------------------------------- kaggle
def _add_submit(sub):
    from ncfm.kaggle_io import DEFAULT_POLL_SECONDS, DEFAULT_WAIT_MINUTES

    p = sub.add_parser("submit", help="validate, then upload a CSV to Kaggle; or submit a pushed notebook "
                       "(code competitions) once its run ends (never retried)",
                       description="Validate the CSV, then upload it with the official kaggle client; a "
                       "competition that takes only notebooks is refused before the upload. With --notebook "
                       "(code competitions): wait until the notebook's run on Kaggle ends, printing its status, "
                       "then submit it; a run that fails, is cancelled or outlasts --wait-minutes is not "
                       "submitted. Credentials: ~/.kaggle/kaggle.json (mode 600), KAGGLE_USERNAME/KAGGLE_KEY, "
                       "or an API token in KAGGLE_API_TOKEN / ~/.kaggle/access_token.")
    p.add_argument("file", nargs="?", default=None, help="submission CSV (not with --notebook)")
    p.add_argument("-m", "--message", required=True, help="submission description shown on Kaggle")
    p.add_argument("--competition", default=None,
                   help="Kaggle competition slug (default: the slug recorded by split_train_val)")
    p.add_argument("--stage", type=int, default=None,
                   help="validate as this stage (default: inferred from the row count)")
    p.add_argument("--data-dir", default="data",
                   help="the competition's files and competition.json, as split_train_val left them (default data)")
    p.add_argument("--sample", default=None, help="sample submission path (overrides --data-dir/--stage)")
    g = p.add_argument_group("a notebook (code competitions)")
    g.add_argument("--notebook", default=None, metavar="OWNER/SLUG|FOLDER",
                   help="submit this Kaggle notebook (its address is https://www.kaggle.com/code/OWNER/SLUG), or "
                   "the one a folder pushed by `ncfm notebook --push` names in its pushed.json, with the version "
                   "pushed; instead of FILE")
    g.add_argument("--version", dest="kernel_version", type=int, default=None, metavar="N",
                   help="the notebook's version to submit (default: the one pushed.json records for a FOLDER, "
                   "else Kaggle's latest). Kaggle reports the status of the latest run only, so an older "
                   "version is submitted once the latest run has completed")
    g.add_argument("--wait-minutes", type=float, default=None,
                   help=f"how long to wait for the run to end before giving up without submitting; rerun the "
                   f"same command to wait on (default {DEFAULT_WAIT_MINUTES})")
    g.add_argument("--poll-seconds", type=float, default=None,
                   help=f"seconds between two questions about the run's status (default {DEFAULT_POLL_SECONDS})")


def _cmd_submit(args) -> int:
    from ncfm import kaggle_io

    return kaggle_io.main_submit(args)


def _add_submissions(sub):
    p = sub.add_parser("submissions", help="list your past Kaggle submissions and their scores")
    p.add_argument("--competition", default=None,
                   help="Kaggle competition slug (default: the slug recorded by split_train_val)")
    p.add_argument("--data-dir", default="data",
                   help="the competition's files, for the slug split_train_val recorded (default data)")


def _cmd_submissions(args) -> int:
    from ncfm import kaggle_io

    return kaggle_io.main_submissions(args)


def _add_notebook(sub):
    p = sub.add_parser(
        "notebook",
        help="a code competition's answer: a Kaggle Dataset of the runs and an offline inference notebook",
        description="Write --out/dataset (a Kaggle Dataset: the fold models predict would use, what it needs to "
        "make the same answer, ncfm and Keras as wheels) and --out/notebook (an .ipynb that finds the "
        "competition's files and the dataset under /kaggle/input by search, installs ncfm without internet, "
        "runs `ncfm predict` as here and writes a validated /kaggle/working/submission.csv; its "
        "kernel-metadata.json has the internet off and the competition and dataset attached). Prints the "
        "notebook's estimated running time on the chosen machine and warns when it would not fit the time "
        "limit. Prediction flags default to those of the last `ncfm predict` of these runs (calibration.json), "
        "else predict's defaults. With --push, creates or versions the dataset and pushes the notebook; then "
        "`ncfm submit --notebook OWNER/SLUG` submits its output.",
    )
    p.add_argument("--run", action="append", required=True, help="run folder (repeat for an ensemble), as for predict")
    p.add_argument("--out", default=None, help="folder to write (default kaggle/<first run's name>)")
    p.add_argument("--data-dir", default=None,
                   help="the competition's files, split by split_train_val (default: the folder the run was trained on)")
    p.add_argument("--folds-csv", default=None, help="the manifest, competition.json beside it (default <data-dir>/folds.csv)")
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "t4x2"],
                   help="the Kaggle machine the notebook runs on: cpu, or t4x2 (two T4 GPUs; predict splits every "
                   "call across both) (default cpu)")
    p.add_argument("--test-images", type=int, default=0,
                   help="test images the estimate counts (default: the public test set's; a hidden set is often larger)")
    p.add_argument("--time-limit", type=float, default=9.0, help="the competition's notebook time limit in hours (default 9)")
    p.add_argument("--owner", default=None, help="Kaggle user owning the dataset and notebook (default: your credentials')")
    p.add_argument("--slug", default=None, help="name for the notebook (<slug>-predict) and dataset (default: --out's name)")
    p.add_argument("--wheels", default="auto",
                   help="wheels of dependencies to pack beside ncfm's: auto = the Keras the models were saved with "
                   "(and keras-hub for a detector), fetched with pip download; a comma list of packages; or none "
                   "to use the Kaggle image's (default auto)")
    p.add_argument("--wheel-dir", default=None, help="take dependency wheels from this folder instead of downloading")
    p.add_argument("--push", action="store_true", help="then create or version the dataset and push the notebook")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    _answer_flags(p.add_argument_group("prediction, as `ncfm predict`"), recorded=True)


def _cmd_notebook(args) -> int:
    from pathlib import Path

    from ncfm import notebook

    args.out = args.out or str(Path("kaggle") / Path(args.run[0]).name)
    return notebook.main(args)


# --------------------------------------------------------------------------- report / demo / bench
def _add_report(sub):
    p = sub.add_parser("report", help="HTML + PNG report of a run: curves, confusion, calibration, CV table; "
                       "for a detector run: box quality per fold, scores, worst boxes with their crops")
    p.add_argument("--run", action="append", required=True, help="run folder (repeat to compare runs)")
    p.add_argument("--out", default=None, help="output folder (default: the first run folder)")


def _cmd_report(args) -> int:
    from ncfm import report

    return report.main(args)


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="the whole journey offline on synthetic data, on a CPU, in minutes",
        description="make_synthetic -> split_train_val -> train every fold -> predict with TTA -> "
        "validate, with --weights none at a small image size. Needs no network and no GPU.",
    )
    p.add_argument("--dir", default="demo", help="working folder for data, runs and submission (default demo)")
    p.add_argument("--folds", type=int, default=None, help="folds (default 3; 2 with --crops)")
    p.add_argument("--image-size", type=int, default=75, help="image size (default 75, InceptionV3's minimum)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per fold (default 24; 12 with --crops, for both classifiers)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    p.add_argument("--n-train", type=int, default=400, help="synthetic training images (default 400)")
    p.add_argument("--tta", type=int, default=4, help="TTA views (default 4)")
    p.add_argument("--layout", default="ncfm", metavar="LAYOUT",
                   help="whose files the synthetic data imitates: ncfm, dog-breed, plant-seedlings, aerial-cactus, "
                   "or, answering other than one class per image, planet, pawpularity, aptos (default ncfm)")
    p.add_argument("--crops", action="store_true",
                   help="also find the fish: small fish on large frames, `ncfm boxes`, a RetinaNet per fold "
                        "(`ncfm detect`), a classifier on its crops (`ncfm train --detector`), and the blend of "
                        "both paths; prints whole-image vs crop vs blend OOF log loss")
    p.add_argument("--decoys", type=int, default=None,
                   help="fish-like distractors drawn on every frame (make_synthetic --decoys; default 3 with "
                        "--crops, else 0)")
    p.add_argument("--detector-size", type=int, default=128, help="with --crops: detector input size (default 128)")
    p.add_argument("--detector-epochs", type=int, default=12, help="with --crops: detector epochs (default 12)")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --dir that an earlier demo did not make")


def _cmd_demo(args) -> int:
    from ncfm import demo

    return demo.main(args, run_command=main)


COMMANDS = [
    ("make_synthetic", _add_make_synthetic, _cmd_make_synthetic),
    ("split_train_val", _add_split_train_val, _cmd_split_train_val),
    ("boxes", _add_boxes, _cmd_boxes),
    ("train", _add_train, _cmd_train),
    ("detect", _add_detect, _cmd_detect),
    ("predict", _add_predict, _cmd_predict),
    ("validate", _add_validate, _cmd_validate),
    ("submit", _add_submit, _cmd_submit),
    ("submissions", _add_submissions, _cmd_submissions),
    ("notebook", _add_notebook, _cmd_notebook),
    ("report", _add_report, _cmd_report),
    ("demo", _add_demo, _cmd_demo),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncfm",
        description="Kaggle image-classification pipeline (built for NCFM): split_train_val -> "
        "train --fold k -> predict -> validate -> submit. Run `ncfm demo` for the whole journey offline on synthetic data.",
    )
    from ncfm import __version__

    parser.add_argument("--version", action="version", version=f"ncfm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add, run in COMMANDS:
        add(sub)
        sub.choices[_name].set_defaults(handler=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ncfm import progress

    args = build_parser().parse_args(argv)
    progress.configure()  # every stage's milestones on the console, a fold's also in its train.log
    try:
        return int(args.handler(args) or 0)
    except UserError as e:
        print(f"ncfm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        where += f" ({e.strerror})" if e.strerror else ""
        print(f"ncfm {args.command}: error: disk full{where}. Files are written to a temporary name "
              f"and renamed only when complete, so nothing earlier was overwritten; free some space "
              f"and rerun the same command (train resumes from its last checkpoint).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ncfm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
