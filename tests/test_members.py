"""Many members from one command (`ncfm train --folds`, ncfm.members): the layout of (config, seed,
fold) members, Ray running them one GPU each and retrying one that dies, a cluster that cannot see
the run folder, the same command without Ray, and predict and the report using every member.

Members here are a random ResNet50 at 32 px on 48 synthetic images, head phase only: seconds each.
The Ray tests start their own clusters: one inside this process declaring two logical GPUs on the
CPU, one `ray start --head` in a mount namespace that hides the run folder from its workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_TRAIN, split_synthetic
from ncfm import NcfmError, members, runs
from ncfm.calibrate import kaggle_log_loss
from ncfm.cli import build_parser, main
from ncfm.competition import NCFM_CLASSES as CLASSES
from ncfm.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
# two epochs of two steps on the head alone, a checkpoint after each: a member takes seconds
MEMBER = ["--weights", "none", "--backbone", "resnet50", "--image-size", "32", "--batch-size", "8",
          "--max-train-images", "16", "--epochs", "2", "--head-epochs", "2", "--checkpoint-seconds", "0",
          "--tensorboard", "false", "--workers", "1"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """48 synthetic images in 2 folds."""
    return split_synthetic(tmp_path_factory.mktemp("members"), n_train=48, boats=6)


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(data), "--run", str(run), *extra]


def link_run(src: Path, dst: Path) -> Path:
    """A private copy of a trained run's folds, checkpoints hard-linked (writers replace, never write into, them)."""
    for fold in runs.all_folds(src):
        for path in fold.dir.rglob("*"):
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            elif path.suffix == ".keras":
                os.link(path, target)
            else:
                shutil.copy2(path, target)
    return dst


# ----------------------------------------------------------------------------- the plan
def test_several_seeds_or_configs_train_each_into_a_group_of_its_own(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "sub" / "b.yaml"
    planned = members.plan_members(tmp_path / "run", [0, 2], [(a, 7), (b, 9)], seeds=[1, 0])
    assert [m.name for m in planned] == ["a-seed1/fold0", "a-seed1/fold2", "a-seed0/fold0", "a-seed0/fold2",
                                         "b-seed1/fold0", "b-seed1/fold2", "b-seed0/fold0", "b-seed0/fold2"]
    assert planned[2].target.dir == tmp_path / "run" / "a-seed0" / "fold0"
    assert {(m.config, m.seed) for m in planned} == {(a, 1), (a, 0), (b, 1), (b, 0)}
    # without --seeds, each config keeps its own seed; one config and no --seeds: today's layout
    assert [m.name for m in members.plan_members(tmp_path / "r2", [1], [(a, 7), (b, 9)], None)] == \
        ["a-seed7/fold1", "b-seed9/fold1"]
    flat = members.plan_members(tmp_path / "r3", [0, 1], [(None, 2016)], None)
    assert [m.target.dir for m in flat] == [tmp_path / "r3" / "fold0", tmp_path / "r3" / "fold1"]
    assert [m.name for m in members.plan_members(tmp_path / "r4", [0], [(None, 2016)], [3])] == ["default-seed3/fold0"]


def test_two_configs_with_the_same_file_name_are_refused(tmp_path):
    with pytest.raises(NcfmError, match=r"x/a.toml .* would both train into <run>/a-seed<S>/"):
        members.plan_members(tmp_path / "run", [0], [(Path("a.toml"), 1), (Path("x/a.toml"), 1)], None)


def test_a_run_holds_either_one_members_folds_or_member_groups(tmp_path):
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    with pytest.raises(NcfmError, match="holds fold<K>/ folders trained without --seeds"):
        members.plan_members(run, [0], [(None, 1)], [0, 1])
    other = tmp_path / "other"
    (other / "default-seed0" / "fold0").mkdir(parents=True)
    with pytest.raises(NcfmError, match=r"holds member groups \(default-seed0/"):
        members.plan_members(other, [0], [(None, 1)], None)
    (other / "fold1").mkdir()
    with pytest.raises(NcfmError, match="both fold<K>/ folders and member groups"):
        runs.member_runs(other)


def test_member_runs_are_the_groups_by_config_then_seed_or_the_run_itself(tmp_path):
    for name in ("b-seed0", "a-seed10", "a-seed2", "notes", "c-seed1"):
        (tmp_path / "run" / name / ("fold0" if name != "c-seed1" else "empty")).mkdir(parents=True)
    assert [p.name for p in runs.member_runs(tmp_path / "run")] == ["a-seed2", "a-seed10", "b-seed0"]
    (tmp_path / "flat" / "fold3").mkdir(parents=True)
    assert runs.member_runs(tmp_path / "flat") == [tmp_path / "flat"]
    assert runs.member_runs(tmp_path / "missing") == [tmp_path / "missing"]


def test_the_table_says_which_finished_members_are_no_better_than_the_class_priors(tmp_path):
    outcomes = []
    for fold, weak in ((0, True), (1, False)):
        member = members.Member(fold=fold, run=tmp_path / "run" / "default-seed0", config=None, seed=0, grouped=True)
        member.target.dir.mkdir(parents=True)
        runs.write_state(member.target, runs.new_state() | dict(finished=True, oof_log_loss=2.0794 if weak else 1.1,
                                                                no_better_than_priors=weak))
        outcomes.append(members.Outcome(member, before="new", attempts=[
            members.Attempt(started=0.0, ended=5.0, node="here", devices="", outcome="finished")]))
    table = members.members_table(outcomes)
    assert list(table.status) == ["trained; no better than the class priors", "trained"]
    assert list(table.oof_log_loss) == [2.0794, 1.1]


def test_a_members_command_gives_train_the_same_settings_and_its_seed(tmp_path):
    args = build_parser().parse_args(train_args(tmp_path / "data", tmp_path / "run", "--folds", "all",
                                                "--seeds", "5", "--lr", "3e-05", "--hflip", "false",
                                                "--unfreeze-from", "", "--cache-dir", "cache"))
    member = members.Member(1, tmp_path / "run" / "default-seed5", None, 5, grouped=True)
    again = build_parser().parse_args(members.member_argv(args, member, retrain=False))
    assert (again.fold, again.folds, again.no_report) == (1, None, True)
    assert Path(again.run) == member.run and Path(again.data_dir) == tmp_path / "data"
    for name in TrainConfig.field_names():
        expected = {"seed": 5, "cache_dir": os.path.abspath("cache")}.get(name, getattr(args, name))
        assert getattr(again, name) == expected, name


@pytest.mark.parametrize("code, tail, outcome, reason", [
    (0, "", "finished", ""),
    (-9, "epoch 1 ...", "died", "killed by SIGKILL"),
    (1, "Traceback ...\nMemoryError: out of memory\n", "died", "exit status 1: MemoryError: out of memory"),
    (2, "ncfm train: error: runs/x/fold0 was started with other settings\n", "refused",
     "runs/x/fold0 was started with other settings"),
])
def test_a_member_that_dies_is_retried_and_one_that_was_refused_is_not(code, tail, outcome, reason):
    attempt = members._attempt(dict(returncode=code, tail=tail, started=0.0, ended=1.0, node="n", devices="0"))
    assert (attempt.outcome, attempt.reason) == (outcome, reason)


def test_fold_and_folds_are_one_or_the_other(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(train_args(tmp_path, tmp_path / "run", "--fold", "0", "--folds", "all"))
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(train_args(tmp_path, tmp_path / "run", "--fold", "1", "--seeds", "0,1")) == 2
    assert "pass --folds 1" in capsys.readouterr().err


def test_seeds_and_seed_together_are_refused(small_data, tmp_path, capsys):
    assert main(train_args(small_data, tmp_path / "run", "--folds", "all", "--seeds", "0,1", "--seed", "3")) == 2
    assert "pass --seeds 0,1 or --seed 3, not both" in capsys.readouterr().err


# ----------------------------------------------------------------------------- here, without Ray
def test_finished_members_are_skipped_and_listed_with_their_oof_log_loss(trained_run, tmp_path, capsys):
    run = link_run(trained_run["run"], tmp_path / "run")
    assert main(train_args(trained_run["data"], run, "--folds", "all", *TINY_TRAIN)) == 0
    out = capsys.readouterr().out
    assert "2 already finished, 0 to resume, 0 to train" in out
    table = runs.read_members_table(run)
    # (a member that ended no better than the class priors says so after a ";")
    assert list(table.member) == ["fold0", "fold1"] and {s.split(";")[0] for s in table.status} == {"already finished"}
    states = [json.loads((run / f"fold{k}" / "state.json").read_text()) for k in (0, 1)]
    np.testing.assert_allclose(table.oof_log_loss, [s["oof_log_loss"] for s in states], rtol=1e-5)
    assert re.search(r"fold1 +\d\.\d{4} +- +already finished", out)


@pytest.mark.slow
def test_without_ray_every_config_trains_here_one_after_another(small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    (tmp_path / "a.toml").write_text("dropout = 0.25\n")
    (tmp_path / "b.toml").write_text("dropout = 0.4\nseed = 11\n")
    run = tmp_path / "run"
    assert main(train_args(small_data, run, "--folds", "0", "--config", str(tmp_path / "a.toml"),
                           "--config", str(tmp_path / "b.toml"), *MEMBER)) == 0
    out = capsys.readouterr().out
    assert "Ray is not installed: the members train one after another in this process (pip install 'ncfm[ray]'" in out
    assert [p.name for p in runs.member_runs(run)] == ["a-seed2016", "b-seed11"]
    a = json.loads((run / "a-seed2016" / "fold0" / "config.json").read_text())
    b = json.loads((run / "b-seed11" / "fold0" / "config.json").read_text())
    assert (a["dropout"], a["seed"], b["dropout"], b["seed"]) == (0.25, 2016, 0.4, 11)
    assert [s.split(";")[0] for s in runs.read_members_table(run).status] == ["trained", "trained"]


# ----------------------------------------------------------------------------- on Ray
def _member_processes(run: Path) -> dict[Path, int]:
    """Member processes alive now: each fold's lock file names the pid that holds it."""
    alive = {}
    for lock in run.glob("*/.fold*.lock"):
        m = re.match(r"pid (\d+)", lock.read_text() if lock.is_file() else "")
        if m:
            try:
                if b"ncfm.cli" in Path(f"/proc/{m.group(1)}/cmdline").read_bytes():
                    alive[lock] = int(m.group(1))
            except OSError:  # it has just ended
                pass
    return alive


def _environment(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _epoch(fold_dir: Path) -> int:
    try:
        state = json.loads((fold_dir / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    return 0 if state.get("finished") else state["epoch"]


class Watcher(threading.Thread):
    """Every 20 ms: how many member processes run at once and with which CUDA_VISIBLE_DEVICES;
    SIGKILL for one member's process, and for another's Ray worker, after their first checkpoint."""

    def __init__(self, run: Path, kill_process: Path, kill_worker: Path):
        super().__init__(daemon=True)
        self.folder, self.targets = run, {kill_process: "process", kill_worker: "worker"}
        self.most, self.together, self.killed, self.stop = 0, [], {}, threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            try:
                alive = _member_processes(self.folder)
                devices = sorted(_environment(pid).get("CUDA_VISIBLE_DEVICES", "?") for pid in alive.values())
            except OSError:
                continue
            self.most = max(self.most, len(alive))
            if len(alive) > 1:
                self.together.append(devices)
            for fold_dir, what in self.targets.items():
                lock = fold_dir.parent / f".{fold_dir.name}.lock"
                if fold_dir not in self.killed and lock in alive and _epoch(fold_dir) >= 1:
                    pid = alive[lock]
                    victim = pid if what == "process" else int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    os.kill(victim, signal.SIGKILL)  # no handler, no cleanup: as a lost machine
                    self.killed[fold_dir] = _epoch(fold_dir)


def _most_at_once(table: pd.DataFrame) -> tuple[int, list[tuple[str, str]]]:
    """From members.csv: the most attempts running at one time, and the devices of every two that overlapped."""
    spans = [(float(s), float(e), d) for starts, ends, devs in zip(table.started, table.ended, table.devices)
             for s, e, d in zip(str(starts).split(), str(ends).split(), str(devs).split())]
    events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])  # an end before a start at a tie
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    pairs = [(a[2], b[2]) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    return most, pairs


@pytest.fixture
def two_gpu_ray(monkeypatch):
    """Ray inside this process, declaring two logical GPUs on this CPU machine."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # the workers' ncfm
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    temp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit 107 characters
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             object_store_memory=80 * 2**20, _temp_dir=temp)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_on_ray_members_take_one_gpu_each_and_one_that_dies_resumes(two_gpu_ray, small_data, tmp_path, capsys):
    run = tmp_path / "run"
    killed_process, killed_worker = run / "default-seed0" / "fold0", run / "default-seed1" / "fold1"
    watcher = Watcher(run, killed_process, killed_worker)
    watcher.start()
    try:
        code = main(train_args(small_data, run, "--folds", "all", "--seeds", "0,1", "--retries", "1", *MEMBER))
    finally:
        watcher.stop.set()
        watcher.join()
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "2 GPU(s): one member per GPU" in out

    table = runs.read_members_table(run)
    assert list(table.member) == ["default-seed0/fold0", "default-seed0/fold1", "default-seed1/fold0",
                                  "default-seed1/fold1"]
    assert table.oof_log_loss.notna().all() and (table.oof_log_loss > 0).all()
    # never more than 2 at once, 2 at once at times, and those two on different GPUs
    most, overlapping = _most_at_once(table)
    assert most == 2 and watcher.most == 2
    assert overlapping and all(a != b for a, b in overlapping)
    assert watcher.together and all(devices == ["0", "1"] for devices in watcher.together)
    for fold_dir in (run / m for m in table.member):
        assert json.loads((fold_dir / "config.json").read_text())["cuda_visible_devices"] in ("0", "1")

    # both kills happened after a checkpoint; each member ran again and resumed from it, not from scratch
    assert set(watcher.killed) == {killed_process, killed_worker}, watcher.killed
    by_member = table.set_index("member")
    for fold_dir, cause in ((killed_process, "killed by SIGKILL"), (killed_worker, "WorkerCrashedError")):
        row = by_member.loc[f"{fold_dir.parent.name}/{fold_dir.name}"]
        epoch = watcher.killed[fold_dir]
        assert row.attempts == 2 and row.status.startswith("trained; retried 1x (")
        assert re.search(f"{cause}.*, then resumed after epoch {epoch}", row.status), row.status
        assert f"resuming after epoch {epoch}" in (fold_dir / "train.log").read_text()
        assert list(pd.read_csv(fold_dir / "history.csv").epoch) == [1, 2]
    for member in ("default-seed0/fold1", "default-seed1/fold0"):
        assert by_member.loc[member].status.split(";")[0] == "trained" and by_member.loc[member].attempts == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_cluster_whose_nodes_cannot_see_the_run_folder_is_refused_before_any_member(small_data, tmp_path, capsys):
    """The cluster's only node runs in a mount namespace where the folder holding the run is an empty
    tmpfs: the same path, another file system, as on a node without the shared storage."""
    pytest.importorskip("ray")
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unprivileged user and mount namespaces (unshare -rm)")
    shared = tmp_path / "shared"
    shared.mkdir()
    port, temp = _free_port(), tempfile.mkdtemp(prefix="ray")
    with open(tmp_path / "head.log", "w") as head_log:
        hide_and_start = 'mount -t tmpfs none "$0" && python="$1" && shift && exec "$python" -m ray.scripts.scripts "$@"'
        head = subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", hide_and_start, str(shared), sys.executable, "start", "--head", "--block", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             f"--temp-dir={temp}", "--object-store-memory=80000000", "--disable-usage-stats"],
            env=dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", RAY_AUTH_MODE="disabled"),
            stdout=subprocess.DEVNULL, stderr=head_log, start_new_session=True)
    try:
        deadline = time.time() + 120
        while head.poll() is None and time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert head.poll() is None and time.time() < deadline, (tmp_path / "head.log").read_text()[-2000:]
        run = shared / "runs" / "x"
        code = main(train_args(small_data, run, "--folds", "all", "--ray-address", f"127.0.0.1:{port}", *MEMBER))
        err = capsys.readouterr().err
        assert code == 2
        assert re.search(rf"node \S+: cannot see the run folder {re.escape(str(run))} \(No such file", err), err
        assert "put them on storage every node mounts at the same place (NFS" in err
        assert "cannot see the data folder" not in err  # the data folder is not hidden
        assert not list(run.iterdir())  # no member started; the marker is gone
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_ray_address_where_nothing_answers_is_named(small_data, tmp_path, capsys):
    pytest.importorskip("ray")
    port = _free_port()
    assert main(train_args(small_data, tmp_path / "run", "--folds", "all", "--ray-address", f"127.0.0.1:{port}")) == 2
    assert f"--ray-address 127.0.0.1:{port}: nothing answers there" in capsys.readouterr().err


# ----------------------------------------------------------------------------- predict and the report
def test_predict_a_run_of_members_uses_every_member_and_weighs_them_on_oof(trained_run, tmp_path, capsys):
    run = tmp_path / "runs" / "ens"
    groups = [link_run(trained_run["run"], runs.member_run(run, "default", seed)) for seed in (0, 1)]
    data = str(trained_run["data"])
    common = ["--data-dir", data, "--stage", "1", "--tta", "1", "--calibrate", "none"]
    assert main(["predict", "--run", str(run), "--member-weights", "oof", *common,
                 "--out", str(tmp_path / "members.csv")]) == 0
    out = capsys.readouterr().out
    weights = runs.read_calibration(run)["run_weights"]
    assert list(weights) == [str(g) for g in groups] and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert min(weights.values()) >= 0 and "run weights fitted on OOF: " in out
    assert main(["predict", *sum((["--run", str(g)] for g in groups), []), "--run-weights", "oof", *common,
                 "--out", str(tmp_path / "explicit.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "members.csv"), pd.read_csv(tmp_path / "explicit.csv"))

    page = (run / "report.html").read_text()  # drawn by predict; one row per member
    for group in groups:
        for k in (0, 1):
            oof = pd.read_csv(group / f"fold{k}" / "oof.csv")
            expected = kaggle_log_loss(oof.label.map(list(CLASSES).index).to_numpy(), oof[list(CLASSES)].to_numpy())
            cell = re.search(rf'id="member-{group.name}/fold{k}-log-loss">([^<]*)<', page)
            assert cell and float(cell.group(1)) == pytest.approx(expected, abs=1e-5)
