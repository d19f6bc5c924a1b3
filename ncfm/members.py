"""Many members from one command: every (config, seed, fold) of `ncfm train --folds`, on Ray or here.

    ncfm train --run runs/NAME --folds all|0,2,4 [--seeds 0,1,2] [--config a.toml --config b.toml]
               [--jobs N] [--retries 2] [--ray-address auto|HOST:PORT] [--no-ray]

A member is one fold trained with one config file and one seed: exactly `ncfm train --fold K`
into the member's run folder (ncfm.runs.member_run: runs/NAME/<config>-seed<S>/fold<K>/; without
--seeds and with at most one --config, runs/NAME/fold<K>/ as before). So a finished member is
skipped, an interrupted one resumes from its last checkpoint, and `ncfm predict --run runs/NAME`
finds every member.

With Ray installed (`pip install 'ncfm[ray]'`) each member is a Ray task that asks for one GPU
(Ray sets its CUDA_VISIBLE_DEVICES) and runs `python -m ncfm.cli train --fold K ...` as a process
of its own, so a crash, a leak of GPU memory or a kill stays in that member. Without
--ray-address the command starts Ray on this machine for itself, with every GPU it has (two T4s:
two members at a time); on a machine without a GPU, --jobs members at a time (default 1).
--ray-address joins a running cluster, whose nodes must see the data folder, the cache and the
run folder at the same paths: every node is checked before any member starts. A member whose
process dies (a signal, an out-of-memory kill, a crash, its node lost) starts again from its
last checkpoint, up to --retries times; one that stops on an error a person must fix (exit
status 2: a refused setting, a missing file) does not. Without Ray, or with --no-ray, the
members train one after another in this process.

The command ends with a table of every member: status, OOF log loss, time (also written to
runs/NAME/members.csv, with the node, devices and times of each attempt).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ncfm import NcfmError, runs
from ncfm.config import TrainConfig, make_config
from ncfm.progress import say

RAY_HINT = "pip install 'ncfm[ray]'"
FORWARDED_ENV = ("KERAS_BACKEND",)  # every member trains on the backend the command was started with
REFUSED = 2  # `ncfm`'s exit status for an NcfmError: the same command would stop the same way
REPORT_SECONDS = 60  # the run's report is drawn again when a member finishes, at most this often
PROBE_SECONDS = 120  # how long a node may take to answer the storage check
TABLE_COLUMNS = ["member", "config", "seed", "fold", "status", "attempts", "oof_log_loss", "seconds", "node",
                 "devices", "started", "ended"]


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Member:
    """One (config, seed, fold): `ncfm train --fold {fold} --run {run} [--config {config}] --seed {seed}`."""

    fold: int
    run: Path  # the member's run folder: runs/NAME, or runs/NAME/<config>-seed<S>
    config: Path | None  # its --config file; None: defaults and flags only
    seed: int
    config_name: str = runs.DEFAULT_CONFIG
    grouped: bool = False  # in a <config>-seed<S>/ group of its own

    @property
    def name(self) -> str:
        return f"{self.run.name}/fold{self.fold}" if self.grouped else f"fold{self.fold}"

    @property
    def target(self) -> runs.Fold:
        return runs.fold_of(self.run, self.fold)


def parse_folds(text: str, available: list[int], folds_csv: Path) -> list[int]:
    """--folds: `all` (every fold of the manifest) or fold numbers such as 0,2,4."""
    if text.strip().lower() == "all":
        return list(available)
    try:
        folds = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise NcfmError(f"--folds: received {text!r}; pass all or fold numbers such as 0,2,4") from None
    unknown = [k for k in folds if k not in available]
    if not folds or unknown:
        raise NcfmError(f"--folds: received {text!r}, but {folds_csv} has folds {available[0]}..{available[-1]}")
    return folds


def parse_seeds(text: str) -> list[int]:
    """--seeds 0,1,2 (in that order, each once)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise NcfmError(f"--seeds: received {text!r}; pass whole numbers such as 0,1,2") from None
    if not seeds:
        raise NcfmError(f"--seeds: received {text!r}; pass whole numbers such as 0,1,2")
    return list(dict.fromkeys(seeds))


def config_names(configs: list[Path | None]) -> list[str]:
    """The name each config's members go by: its file name without the extension, or `default`."""
    names = [runs.DEFAULT_CONFIG if c is None else re.sub(r"[^A-Za-z0-9_.+-]", "_", c.stem) for c in configs]
    for i, name in enumerate(names):
        if name in names[:i]:
            first = configs[names.index(name)]
            raise NcfmError(f"--config {configs[i]} and --config {first} would both train into "
                            f"<run>/{name}-seed<S>/; give each config file its own name")
    return names


def plan_members(run_dir: Path, folds: list[int], configs: list[tuple[Path | None, int]],
                 seeds: list[int] | None) -> list[Member]:
    """Every (config, seed, fold) to train, config by config, seed by seed. `configs` pairs each
    --config file (None: none) with the seed its settings give (the file's, else --seed's, else the
    default); --seeds replaces it. Several seeds or configs: one <config>-seed<S>/ group each."""
    run_dir = Path(run_dir)
    grouped = seeds is not None or len(configs) > 1
    members = []
    for (config, own_seed), name in zip(configs, config_names([c for c, _ in configs])):
        for seed in seeds if seeds is not None else [own_seed]:
            run = runs.member_run(run_dir, name, seed) if grouped else run_dir
            members += [Member(k, run, config, seed, name, grouped) for k in folds]
    check_layout(run_dir, grouped)
    return members


def check_layout(run_dir: Path, grouped: bool) -> None:
    """A run holds either one member's fold<K>/ folders or member groups, never both."""
    groups = [p for p in runs.member_runs(run_dir) if p != run_dir]
    if grouped and runs.all_folds(run_dir):
        raise NcfmError(f"{run_dir}: holds fold<K>/ folders trained without --seeds and with one config; "
                        f"train several seeds or configs into a new --run, or move those folders into "
                        f"{run_dir}/<config>-seed<S>/ first")
    if not grouped and groups:
        raise NcfmError(f"{run_dir}: holds member groups ({groups[0].name}/, ...); pass the --seeds and --config "
                        f"they were trained with, or use a new --run")


# ----------------------------------------------------------------------------- what happened
@dataclass
class Attempt:
    started: float
    ended: float
    node: str
    devices: str  # CUDA_VISIBLE_DEVICES the member's process saw
    outcome: str  # finished | refused (exit 2) | died (retried) | failed
    reason: str = ""
    from_epoch: int = 0  # the epoch it resumed after; 0: from scratch


@dataclass
class Outcome:
    member: Member
    before: str  # new | started | finished | unreadable
    epoch: int = 0  # the epoch it had reached before this command
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        if self.attempts:
            return self.attempts[-1].outcome == "finished"
        return self.before == "finished"

    def status(self) -> str:
        if not self.attempts:
            return "already finished" if self.before == "finished" else "not run"
        first, last = self.attempts[0], self.attempts[-1]
        if last.outcome == "finished":
            text = f"resumed after epoch {first.from_epoch}" if first.from_epoch else "trained"
        else:
            text = f"failed: {last.reason}"
        if len(self.attempts) > 1:
            text += f"; retried {len(self.attempts) - 1}x (" + "; ".join(
                f"{a.reason}, then " + (f"resumed after epoch {b.from_epoch}" if b.from_epoch else "started again")
                for a, b in zip(self.attempts, self.attempts[1:])) + ")"
        return text


def progress_before(member: Member) -> tuple[str, int]:
    """Where a member stands before the command: new, started (at an epoch) or finished."""
    try:
        state, _ = runs.read_progress(member.target)
    except NcfmError:  # its own process says what is wrong, and how to fix it
        return "unreadable", 0
    if state.get("finished"):
        return "finished", int(state.get("epoch", 0))
    return ("started", int(state["epoch"])) if state["epoch"] > 0 else ("new", 0)


def members_table(outcomes: list[Outcome]) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        m, state = o.member, _state(o.member)
        status = o.status()
        if o.finished and state.get("no_better_than_priors"):  # train warned; predict leaves it out
            status += "; no better than the class priors" if "oof_log_loss" in state else "; no better than its baseline"
        rows.append(dict(member=m.name, config=m.config_name, seed=m.seed, fold=m.fold, status=status,
                         attempts=len(o.attempts), oof_log_loss=state.get("oof_log_loss") if o.finished else None,
                         seconds=round(sum(a.ended - a.started for a in o.attempts), 1),
                         node=" ".join(a.node for a in o.attempts), devices=" ".join(a.devices or "-" for a in o.attempts),
                         started=" ".join(f"{a.started:.2f}" for a in o.attempts),
                         ended=" ".join(f"{a.ended:.2f}" for a in o.attempts)))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _state(member: Member) -> dict:
    try:
        return runs.read_state(member.target) or {}
    except NcfmError:
        return {}


def format_table(table: pd.DataFrame) -> str:
    width = max([len("member"), *map(len, table.member)])
    lines = [f"{'member':<{width}}  {'OOF log loss':>12}  {'time':>7}  status"]
    for r in table.itertuples():
        loss = f"{r.oof_log_loss:.4f}" if pd.notna(r.oof_log_loss) else "-"
        seconds = f"{r.seconds:.0f} s" if r.attempts else "-"
        lines.append(f"{r.member:<{width}}  {loss:>12}  {seconds:>7}  {r.status}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one member's command
def member_argv(args, member: Member, retrain: bool) -> list[str]:
    """`ncfm train` arguments of one member, paths absolute (a Ray worker runs elsewhere)."""

    def path(p) -> str:
        return os.path.abspath(p)

    argv = ["train", f"--fold={member.fold}", f"--run={path(member.run)}", f"--data-dir={path(args.data_dir)}"]
    if args.folds_csv:
        argv.append(f"--folds-csv={path(args.folds_csv)}")
    if member.config is not None:
        argv.append(f"--config={path(member.config)}")
    if args.detector:
        argv.append(f"--detector={path(args.detector)}")
    if args.max_train_images:
        argv.append(f"--max-train-images={args.max_train_images}")
    if retrain:
        argv.append("--retrain")
    argv.append("--no-report")  # the command that started the member draws the run's report
    for name in TrainConfig.field_names():
        value = member.seed if name == "seed" else getattr(args, name)
        if value is None:
            continue
        if (name == "cache_dir" and value) or (name == "weights" and os.path.exists(str(value))):
            value = path(value)
        text = str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float) else str(value)
        argv.append(f"--{name.replace('_', '-')}={text}")
    return argv


def run_member_process(argv: list[str], console: str, env: dict, cwd: str) -> dict:
    """A Ray task: one member's `ncfm train` as a process of its own, its output appended to its
    console log. The process inherits CUDA_VISIBLE_DEVICES from Ray and dies with this worker."""
    import ray

    started = time.time()
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    node = socket.gethostname()
    try:
        node = f"{node}/{ray.util.get_node_ip_address()}"
    except Exception:  # an IP is a nicety
        pass
    Path(console).parent.mkdir(parents=True, exist_ok=True)
    with open(console, "ab") as out:
        offset = out.tell()
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {node}, CUDA_VISIBLE_DEVICES={devices!r}: "
                  f"ncfm {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run([sys.executable, "-m", "ncfm.cli", *argv], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, env=dict(os.environ, **env),
                              cwd=cwd if os.path.isdir(cwd) else None, preexec_fn=_die_with_parent)
    with open(console, "rb") as f:
        f.seek(max(offset, os.path.getsize(console) - 4000))
        tail = f.read().decode(errors="replace")
    return dict(returncode=proc.returncode, started=started, ended=time.time(), node=node, devices=devices, tail=tail)


def _die_with_parent() -> None:
    """In the member's process before it starts: on Linux, be killed when the Ray worker that
    started it dies (killed, its node lost), so a retry never meets an orphan holding the fold."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _attempt(result: dict) -> Attempt:
    code, tail = result["returncode"], result["tail"]
    if code == 0:
        outcome, reason = "finished", ""
    elif code < 0:
        outcome, reason = "died", f"killed by {_signal_name(-code)}"
    elif code == REFUSED:
        errors = [line for line in tail.splitlines() if "error:" in line]
        outcome, reason = "refused", (errors[-1].split("error:", 1)[1].strip() if errors else "exit status 2")
    else:
        lines = [line for line in tail.splitlines() if line.strip()]
        outcome, reason = "died", f"exit status {code}" + (f": {lines[-1].strip()[:200]}" if lines else "")
    return Attempt(result["started"], result["ended"], result["node"], result["devices"], outcome, reason)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ----------------------------------------------------------------------------- here, one after another
def run_here(outcomes: list[Outcome], args, log, finished, train_one) -> None:
    """Each member in this process, one after another (no Ray, or --no-ray); `train_one(args)` trains one
    fold (the command layer's `ncfm train --fold`)."""
    import keras

    for o in outcomes:
        m = o.member
        member_args = argparse.Namespace(**vars(args))
        member_args.fold, member_args.run, member_args.seed = m.fold, str(m.run), m.seed
        member_args.config = str(m.config) if m.config is not None else None
        log(f"{m.name}: {'resuming' if o.before == 'started' else 'training'} in this process")
        started = time.time()
        outcome, reason = "finished", ""
        try:
            train_one(member_args)
        except NcfmError as e:
            outcome, reason = "refused", str(e)
            print(f"ncfm train: error: {e}", file=sys.stderr)
        except Exception as e:  # one member's crash must not cost the others their turn
            outcome, reason = "failed", f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            keras.backend.clear_session()
        o.attempts.append(Attempt(started, time.time(), socket.gethostname(),
                                  os.environ.get("CUDA_VISIBLE_DEVICES", ""), outcome, reason,
                                  0 if args.retrain else o.epoch))
        finished()


# ----------------------------------------------------------------------------- on Ray
def run_on_ray(outcomes: list[Outcome], args, storage: list[tuple[str, str, Path]], log,
               finished=lambda: None) -> None:
    """Every member as a Ray task of one GPU (or one CPU, --jobs at a time), retried when it dies."""
    import ray

    ours = joined = False
    if ray.is_initialized():  # a notebook or a test that started Ray itself
        where = "the Ray instance this process already uses"
    elif args.ray_address:
        _check_reachable(args.ray_address)
        try:
            ray.init(address=args.ray_address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            why = f"{e}" + (f": {str(e.__cause__).splitlines()[0]}" if e.__cause__ and str(e.__cause__) else "")
            raise NcfmError(f"--ray-address {args.ray_address}: cannot join a Ray cluster there ({why}); start one "
                            f"with `ray start --head` on its head node, or leave --ray-address out to train on "
                            f"this machine alone") from None
        joined, where = True, f"the Ray cluster at {args.ray_address}"
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, args.jobs or 1), include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING")
        ours, where = True, "Ray started on this machine for this command"
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if not ours:
            check_storage(storage, nodes)
        if gpus:
            # as many running as the cluster has GPUs now (it may grow), so that a member's task
            # starts when it is submitted and the times in members.csv are its own
            def limit():
                return args.jobs or max(1, int(ray.cluster_resources().get("GPU", 0)))

            task = ray.remote(num_gpus=1, num_cpus=0, max_retries=0)(run_member_process)
            log(f"{where}: {len(nodes)} node(s), {gpus} GPU(s): one member per GPU"
                + (f", at most {args.jobs} at a time" if args.jobs else ""))
        else:
            def limit():
                return args.jobs or 1

            task = ray.remote(num_cpus=1, max_retries=0)(run_member_process)
            log(f"{where}: {len(nodes)} node(s), no GPU: {limit()} member(s) at a time (--jobs N for more)")
        _drive(outcomes, task, limit, args, log, finished)
    finally:
        if ours or joined:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """HOST:PORT answers at all: Ray itself keeps trying an address that does not for minutes."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as e:
        raise NcfmError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); start the cluster "
                        f"with `ray start --head --port {port}` on its head node, or leave --ray-address out to "
                        f"train on this machine alone") from None


def _drive(outcomes: list[Outcome], task, limit, args, log, finished) -> None:
    """Keep up to limit() members running; a member that died goes back to the front of the queue."""
    import ray

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    queue, running, done = list(outcomes), {}, False
    try:
        while queue or running:
            while queue and len(running) < limit():
                o = queue.pop(0)
                retrain = args.retrain and not o.attempts
                argv = member_argv(args, o.member, retrain=retrain)
                ref = task.options(name=f"ncfm {o.member.name}").remote(
                    argv, os.path.abspath(o.member.target.console), env, os.getcwd())
                running[ref] = (o, time.time(), 0 if retrain else progress_before(o.member)[1])
            if done:  # the next members are on their way: now the report may take its seconds
                finished()
                done = False
            (ref,), _ = ray.wait(list(running), num_returns=1)
            o, submitted, from_epoch = running.pop(ref)
            try:
                attempt = _attempt(ray.get(ref))
            except ray.exceptions.RayTaskError as e:  # the task itself raised (e.g. the console log is not writable)
                attempt = Attempt(submitted, time.time(), "?", "", "failed", f"{type(e.cause).__name__}: {e.cause}")
            except ray.exceptions.RayError as e:  # its worker or node died, or Ray killed it for memory
                first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
                attempt = Attempt(submitted, time.time(), "?", "", "died", f"{type(e).__name__}: {first[:200]}")
            attempt.from_epoch = from_epoch
            o.attempts.append(attempt)
            where = f" on {attempt.node}" + (f" (CUDA_VISIBLE_DEVICES={attempt.devices})" if attempt.devices else "")
            took = f"{attempt.ended - attempt.started:.0f} s"
            if attempt.outcome == "finished":
                state = _state(o.member)
                metric = state.get("metric", "log_loss")  # a task run's own (ncfm.task); else log loss
                loss = state.get(f"oof_{metric}")
                log(f"{o.member.name}: finished in {took}{where}"
                    + (f", OOF {metric.replace('_', ' ')} {loss:.4f}" if loss is not None else ""))
                done = True
            elif attempt.outcome == "died" and len(o.attempts) <= args.retries:
                log(f"{o.member.name}: {attempt.reason} after {took}{where}; starting it again from its last "
                    f"checkpoint (retry {len(o.attempts)} of {args.retries})")
                queue.insert(0, o)
            else:
                log(f"{o.member.name}: {attempt.reason}{where}; see {o.member.target.console}")
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        raise


# ----------------------------------------------------------------------------- shared storage
def check_storage(storage: list[tuple[str, str, Path]], nodes: list[dict]) -> None:
    """Every node of the cluster sees what the driver sees at the same paths: a folder the
    members write in, (what, "folder", path), through a marker file the driver writes and the
    node reads back and writes beside; a folder they read, (what, "dir", path), by its being
    there; a file (what, "file", path) by its SHA-256."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import ray

    token = uuid.uuid4().hex[:12]
    checks, markers = [], []
    try:
        for what, kind, path in storage:
            path = Path(os.path.abspath(path))
            if kind == "folder":
                path.mkdir(parents=True, exist_ok=True)
                marker = runs.visibility_marker(path, token)
                marker.write_text(token)
                markers.append(marker)
                checks.append((what, "folder", str(marker), token))
            elif kind == "dir":
                checks.append((what, "dir", str(path), ""))
            else:
                checks.append((what, "file", str(path), _digest(path)))
        probe = ray.remote(num_cpus=0, max_retries=0)(probe_storage)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(checks): n
                for n in nodes}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_SECONDS)
        problems = []
        for ref in ready:
            try:
                node, seen = ray.get(ref)
            except ray.exceptions.RayError as e:
                node, seen = _node_name(refs[ref]), [f"the check failed ({type(e).__name__})"]
            problems += [f"node {node}: {p}" for p in seen]
        problems += [f"node {_node_name(refs[ref])}: did not answer within {PROBE_SECONDS} s" for ref in late]
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
    if problems:
        raise NcfmError(f"{len(problems)} problem(s) with what the Ray cluster's nodes see:\n  " + "\n  ".join(problems)
                        + "\nEvery node must see the data folder, the cache and the run folder at the paths this "
                          "machine uses: put them on storage every node mounts at the same place (NFS, a cluster "
                          "file system) and pass those paths, or leave --ray-address out to train on this machine")


def probe_storage(checks: list[tuple[str, str, str, str]]) -> tuple[str, list[str]]:
    """A Ray task on one node: (this node, what it does not see as the driver does)."""
    problems = []
    for what, kind, path, expected in checks:
        path = Path(path)
        shown = path.parent if kind == "folder" else path
        try:
            if kind == "dir":
                seen = "" if path.is_dir() else os.listdir(path)  # listdir raises why it is not a folder
            else:
                seen = path.read_text() if kind == "folder" else _digest(path)
        except OSError as e:
            problems.append(f"cannot see {what} {shown} ({e.strerror or type(e).__name__})")
            continue
        if seen != expected:
            problems.append(f"sees another {what} at {shown} than this machine (a copy of its own?)")
        elif kind == "folder":
            mine = path.with_name(f"{path.name}-{uuid.uuid4().hex[:8]}")
            try:
                mine.write_text("")
                mine.unlink()
            except OSError as e:
                problems.append(f"cannot write in {what} {shown} ({e.strerror or type(e).__name__})")
    return socket.gethostname(), problems


def _node_name(node: dict) -> str:
    return f"{node.get('NodeManagerHostname', '?')}/{node.get('NodeManagerAddress', '?')}"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- command
def _at_most_every(seconds: float, action):
    """`action`, when `seconds` have passed since the start or its last call."""
    last = time.time()

    def maybe() -> None:
        nonlocal last
        if time.time() - last >= seconds:
            action()
            last = time.time()

    return maybe


def main(args, train_one, draw_report=lambda: None) -> int:
    """`ncfm train --folds`; `train_one(args)` trains one fold here (`ncfm train --fold`, handed down by
    the command layer), `draw_report` draws the run's report when a member finishes (at most every
    REPORT_SECONDS: the command that called this draws it once more at the end)."""
    from ncfm.folds import folds_csv_path, read_manifest

    log = say

    if args.jobs is not None and args.jobs < 1 or args.retries < 0:
        raise NcfmError(f"need --jobs >= 1 and --retries >= 0; received --jobs {args.jobs}, --retries {args.retries}")
    if args.no_ray and args.ray_address:
        raise NcfmError("--no-ray trains here, --ray-address on a cluster: pass one of them")
    data_dir = Path(args.data_dir)
    folds_csv = folds_csv_path(data_dir, args.folds_csv)
    manifest, _ = read_manifest(folds_csv)
    folds = parse_folds(args.folds, sorted(int(k) for k in manifest.fold.unique()), folds_csv)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    if seeds is not None and args.seed is not None:
        raise NcfmError(f"pass --seeds {args.seeds} or --seed {args.seed}, not both")
    overrides = {name: getattr(args, name) for name in TrainConfig.field_names()}
    configs = [(Path(c) if c else None, make_config(c, **overrides)) for c in (args.config or [None])]
    members = plan_members(Path(args.run), folds, [(c, cfg.seed) for c, cfg in configs], seeds)

    outcomes = [Outcome(m, *progress_before(m)) for m in members]
    todo = [o for o in outcomes if args.retrain or o.before != "finished"]
    groups = len({m.run for m in members})
    resume = 0 if args.retrain else sum(o.before == "started" for o in todo)
    log(f"{len(members)} member(s): {len(configs)} config(s) x {groups // len(configs)} seed(s) x {len(folds)} "
        f"fold(s) -> {args.run}; {len(outcomes) - len(todo)} already finished, {resume} to resume, "
        f"{len(todo) - resume} to train{' from scratch (--retrain)' if args.retrain else ''}")
    try:
        _run(todo, args, data_dir, folds_csv, configs, log, draw_report, train_one)
    finally:  # also after Ctrl-C or a crash: what finished and what did not (nothing when none started)
        if any(o.attempts for o in outcomes) or not todo:
            table = members_table(outcomes)
            Path(args.run).mkdir(parents=True, exist_ok=True)
            runs.write_members_table(args.run, table)
            print(format_table(table), flush=True)
    failed = [o for o in outcomes if not o.finished]
    if failed:
        log(f"{len(failed)} of {len(outcomes)} member(s) did not finish ({runs.members_table_path(args.run)}); "
            f"rerun the same command to resume them")
        return 1
    return 0


def _run(todo: list[Outcome], args, data_dir: Path, folds_csv: Path, configs, log, draw_report, train_one) -> None:
    """On Ray when it is installed (and not --no-ray), else here."""
    from ncfm.cache import cache_folder

    if todo:
        storage = [("the data folder", "dir", data_dir), ("the folds manifest", "file", folds_csv),
                   ("the run folder", "folder", Path(args.run))]
        storage += [("the cache folder", "folder", folder)
                    for folder in dict.fromkeys(cache_folder(data_dir, cfg.cache_dir) for _, cfg in configs)]
        ray = None
        if not args.no_ray:
            try:
                import ray
            except ImportError:
                if args.ray_address:
                    raise NcfmError(f"--ray-address needs Ray, which is not installed here: {RAY_HINT}") from None
                log(f"Ray is not installed: the members train one after another in this process ({RAY_HINT} "
                    f"trains one per GPU at once, each in a process of its own)")
        if ray is None:
            run_here(todo, args, log, _at_most_every(REPORT_SECONDS, draw_report), train_one)
        else:
            run_on_ray(todo, args, storage, log, _at_most_every(REPORT_SECONDS, draw_report))
