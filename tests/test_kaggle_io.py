"""`ncfm submit` / `ncfm submissions`: the real kaggle client against a fake Kaggle on 127.0.0.1.

Each CLI run is a subprocess with HOME and KAGGLE_CONFIG_DIR in a temp folder (the user's own
credentials are never read) and every proxy pointed at the fake server (see tests/fake_kaggle.py),
so nothing reaches the internet. The fake's key must never appear in what the command prints.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import io
import json
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from ncfm import NcfmError, competition
from ncfm.competition import Competition
from ncfm.kaggle_io import (
    Credentials, explain_failure, find_credentials, format_submissions_table, scrub,
)
from ncfm.submission import build_submission, write_submission

sys.path.insert(0, str(Path(__file__).parent))
from fake_kaggle import FakeKaggle  # noqa: E402

# find_spec, not importorskip: importing kaggle authenticates with the real user's credentials.
if importlib.util.find_spec("kaggle") is None:
    pytest.skip("the kaggle client is not installed (pip install -e '.[kaggle]')", allow_module_level=True)

IDS = [f"img_{i:05d}.jpg" for i in range(1, 21)]
NCFM = competition.ncfm()
CACTI = Competition(classes=("0", "1"), kind="binary", metric="roc_auc", id_column="id", columns=("has_cactus",),
                    positive="1", samples={"1": "sample_submission.csv"}, slug="aerial-cactus-identification")
TIMEOUT_S = 60
# The command, run as `python -m ncfm.cli` would run it. ncfm.dataset.competition_for is being
# written on another branch; until it lands, the process gets a stand-in that reads
# competition.json as it will. Once it exists the stand-in is not installed.
CLI = """
import runpy
from pathlib import Path
from ncfm import competition, dataset
if not hasattr(dataset, "competition_for"):
    dataset.competition_for = lambda data_dir: competition.load(Path(data_dir) / competition.FILE_NAME)
runpy.run_module("ncfm.cli", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def fake():
    with FakeKaggle() as server:
        yield server


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    build_submission(IDS, np.full((len(IDS), 8), 1 / 8), NCFM).to_csv(NCFM.sample_path(d, 1), index=False)
    competition.save(NCFM, d / competition.FILE_NAME)
    return d


@pytest.fixture
def good_csv(tmp_path):
    p = np.random.default_rng(1).dirichlet(np.ones(8), size=len(IDS))
    return write_submission(build_submission(IDS, p, NCFM), tmp_path / "submissions" / "run1.csv", IDS, NCFM)


def run_cli(fake: FakeKaggle, env: dict, *argv: str, code: str = CLI) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    for secret in (fake.key, base64.b64encode(f"{fake.username}:{fake.key}".encode()).decode()):
        assert secret not in result.stdout + result.stderr, "a credential leaked into the output"
    return result


def submit(fake, tmp_path, csv, data_dir, *flags, env=None, message="5-fold inception + TTA"):
    env = env or fake.client_env(tmp_path / "home")
    return run_cli(fake, env, "submit", str(csv), "-m", message, "--data-dir", str(data_dir), *flags)


# --------------------------------------------------------------------------- submit: success
def test_submit_uploads_exactly_the_file_and_the_message(fake, tmp_path, good_csv, data_dir):
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 0, r.stderr
    assert "Submitted" in r.stdout and "ref 1000" in r.stdout
    (token, received), = fake.uploads.items()
    assert received == good_csv.read_bytes()
    start, = fake.rpc_bodies("StartSubmissionUpload")
    assert start["fileName"] == "run1.csv" and start["contentLength"] == len(received)
    create, = fake.rpc_bodies("CreateSubmission")
    assert create == {"competitionName": "the-nature-conservancy-fisheries-monitoring",
                      "blobFileTokens": token, "submissionDescription": "5-fold inception + TTA"}
    assert not [c for c in fake.calls if c[0] == "CONNECT"]  # nothing tried to leave for https://


def test_kaggle_json_credentials_work_too(fake, tmp_path, good_csv, data_dir):
    home = tmp_path / "home"
    env = fake.client_env(home, credentials=False)
    cfg = home / ".kaggle" / "kaggle.json"
    cfg.write_text(f'{{"username": "{fake.username}", "key": "{fake.key}"}}')
    cfg.chmod(0o600)
    r = submit(fake, tmp_path, good_csv, data_dir, env=env)
    assert r.returncode == 0, r.stderr
    assert "can be read by other users" not in r.stderr


def test_verbose_client_mode_does_not_print_the_authorization_header(fake, tmp_path, good_csv, data_dir):
    env = fake.client_env(tmp_path / "home", VERBOSE="1")
    r = submit(fake, tmp_path, good_csv, data_dir, env=env)  # run_cli asserts no key / base64 in output
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- listing
def test_submissions_prints_the_servers_scores(fake, tmp_path, data_dir):
    fake.submissions = [
        {"ref": 2, "date": "2017-04-12T09:30:00.000Z", "description": "ensemble + floor 0.01",
         "status": "COMPLETE", "publicScore": "0.95012", "privateScore": "1.33345"},
        {"ref": 1, "date": "2017-04-10T08:00:00.000Z", "description": "uniform baseline",
         "status": "COMPLETE", "publicScore": "2.07944", "privateScore": "2.07944"},
    ]
    r = run_cli(fake, fake.client_env(tmp_path / "home"), "submissions", "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["date", "description", "status", "public", "private"]
    assert "2017-04-12 09:30  ensemble + floor 0.01  complete  0.95012  1.33345" in r.stdout
    assert "2.07944" in r.stdout
    assert fake.rpc_bodies("ListSubmissions")[0]["competitionName"] == "the-nature-conservancy-fisheries-monitoring"


def test_submissions_with_none_says_so(fake, tmp_path, data_dir):
    r = run_cli(fake, fake.client_env(tmp_path / "home"), "submissions", "--data-dir", str(data_dir))
    assert r.returncode == 0 and "No submissions" in r.stdout


# --------------------------------------------------------------------------- which competition
def cactus_data(tmp_path, comp: Competition = CACTI) -> tuple:
    """(data folder with comp's sample and competition.json, a valid submission for it)."""
    ids = ["0004be2cfeaba1c0361d39e2b000257b.jpg", "000c8a36845c0208e833c79c1bffedd1.jpg"]
    d = tmp_path / "cacti"
    d.mkdir()
    comp.sample_path(d).write_text("id,has_cactus\n" + "".join(f"{i},0.5\n" for i in ids))
    competition.save(comp, d / competition.FILE_NAME)
    csv = write_submission(build_submission(ids, np.array([[0.1, 0.9], [0.8, 0.2]]), comp),
                           tmp_path / "cacti.csv", ids, comp)
    return d, csv


def test_submit_goes_to_the_slug_split_train_val_recorded(fake, tmp_path):
    data, csv = cactus_data(tmp_path)
    r = submit(fake, tmp_path, csv, data)
    assert r.returncode == 0, r.stderr
    assert fake.rpc_bodies("CreateSubmission")[0]["competitionName"] == "aerial-cactus-identification"


def test_competition_flag_overrides_the_recorded_slug(fake, tmp_path, good_csv, data_dir):
    r = submit(fake, tmp_path, good_csv, data_dir, "--competition", "another-slug")
    assert r.returncode == 0, r.stderr
    assert fake.rpc_bodies("CreateSubmission")[0]["competitionName"] == "another-slug"


def test_submit_without_a_slug_anywhere_asks_for_one_and_uploads_nothing(fake, tmp_path):
    data, csv = cactus_data(tmp_path, dataclasses.replace(CACTI, slug=""))
    r = submit(fake, tmp_path, csv, data)
    assert r.returncode == 2
    assert "no Kaggle competition slug" in r.stderr and "pass --competition SLUG" in r.stderr
    assert fake.calls == []


def test_submissions_without_a_data_folder_or_flag_asks_for_the_slug(fake, tmp_path):
    r = run_cli(fake, fake.client_env(tmp_path / "home"), "submissions", "--data-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 2
    assert "pass --competition SLUG" in r.stderr
    assert fake.calls == []


# --------------------------------------------------------------------------- submit: failures
def test_failed_upload_exits_nonzero_and_is_not_retried(fake, tmp_path, good_csv, data_dir):
    fake.upload_status = 500
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 2
    assert "the file upload failed" in r.stderr and "nothing was submitted" in r.stderr
    assert len(fake.rpc_bodies("StartSubmissionUpload")) == 1
    assert fake.rpc_bodies("CreateSubmission") == []


def test_unconfirmed_submission_exits_nonzero(fake, tmp_path, good_csv, data_dir):
    fake.create_answer = {"message": "Submission could not be processed"}
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 2
    assert "did not confirm the submission" in r.stderr and "could not be processed" in r.stderr


def test_rules_not_accepted_points_to_the_rules_page(fake, tmp_path, good_csv, data_dir):
    fake.create_error = (403, "You must accept this competition's rules before you can submit")
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 2
    assert "HTTP 403" in r.stderr
    assert "https://www.kaggle.com/competitions/the-nature-conservancy-fisheries-monitoring/rules" in r.stderr


def test_daily_limit_is_explained(fake, tmp_path, good_csv, data_dir):
    fake.create_error = (400, "Submission not allowed: Your team has used its daily Submission allowance (5) today")
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 2
    assert "daily submission limit reached" in r.stderr and "00:00 UTC" in r.stderr
    assert len(fake.rpc_bodies("CreateSubmission")) == 1  # never retried


def test_wrong_key_is_reported_without_echoing_it(fake, tmp_path, good_csv, data_dir):
    wrong = "wrong-key-9a8b7c6d5e"
    env = fake.client_env(tmp_path / "home", KAGGLE_KEY=wrong)
    r = submit(fake, tmp_path, good_csv, data_dir, env=env)
    assert r.returncode == 2
    assert "rejected the credentials" in r.stderr and "HTTP 401" in r.stderr
    assert wrong not in r.stdout + r.stderr


def test_missing_credentials_exit_nonzero_and_say_where_they_go(fake, tmp_path, good_csv, data_dir):
    r = submit(fake, tmp_path, good_csv, data_dir, env=fake.client_env(tmp_path / "home", credentials=False))
    assert r.returncode == 2
    assert "no Kaggle credentials found" in r.stderr
    assert "kaggle.json" in r.stderr and "KAGGLE_USERNAME" in r.stderr and "chmod 600" in r.stderr
    assert fake.calls == []


def test_blank_key_variable_is_an_error(fake, tmp_path, good_csv, data_dir):
    env = fake.client_env(tmp_path / "home", KAGGLE_KEY="  ")
    r = submit(fake, tmp_path, good_csv, data_dir, env=env)
    assert r.returncode == 2
    assert "KAGGLE_KEY is set but empty" in r.stderr
    assert fake.calls == []


def test_an_invalid_file_is_never_uploaded(fake, tmp_path, data_dir):
    bad = tmp_path / "bad.csv"
    build_submission(IDS[:-1], np.full((len(IDS) - 1, 8), 1 / 8), NCFM).to_csv(bad, index=False)
    r = submit(fake, tmp_path, bad, data_dir, "--stage", "1")
    assert r.returncode == 2
    assert "not uploading" in r.stderr and "1 id of the sample submission is missing: img_00020.jpg" in r.stderr
    r = submit(fake, tmp_path, bad, data_dir)  # 19 rows: no sample has that many
    assert r.returncode == 2
    assert "not uploading" in r.stderr and "cannot tell the stage from its 19 rows" in r.stderr
    assert fake.calls == []


def test_unreachable_network_is_explained(fake, tmp_path, good_csv, data_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = fake.client_env(tmp_path / "home")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[var] = env[var.lower()] = dead
    r = submit(fake, tmp_path, good_csv, data_dir, env=env)
    assert r.returncode == 2
    assert "cannot reach Kaggle" in r.stderr


# --------------------------------------------------------------------------- code competitions: push a notebook
SLUG = "the-nature-conservancy-fisheries-monitoring"
# push_notebook as `ncfm notebook --push` calls it, with tiny poll intervals
PUSH = """
import sys
from ncfm import NcfmError
from ncfm.kaggle_io import push_notebook
try:
    sys.exit(push_notebook(sys.argv[1], sys.argv[2] or None, wait_minutes=float(sys.argv[3]), poll_seconds=0.01))
except NcfmError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def notebook_folder(tmp_path, owner: str = "fake-user") -> Path:
    """A folder as `ncfm notebook --out kaggle/inception` writes it: a dataset with a sub-folder of runs
    and a top-level file, and a notebook that reads the dataset."""
    folder = tmp_path / "kaggle" / "inception"
    dataset = folder / "dataset"
    (dataset / "runs" / "inception" / "fold0").mkdir(parents=True)
    (dataset / "runs" / "inception" / "fold0" / "model.keras").write_bytes(b"fake weights")
    (dataset / "settings.json").write_text('{"tta": 8}')
    dataset_id = f"{owner}/ncfm-inception-runs"
    (dataset / "dataset-metadata.json").write_text(json.dumps(
        {"title": "ncfm inception runs", "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]}))
    notebook = folder / "notebook"
    notebook.mkdir()
    (notebook / "ncfm-inception.ipynb").write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": ["print('predicting')\n"]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (notebook / "kernel-metadata.json").write_text(json.dumps({
        "id": f"{owner}/ncfm-inception", "title": "ncfm inception", "code_file": "ncfm-inception.ipynb",
        "language": "python", "kernel_type": "notebook", "is_private": True, "enable_internet": False,
        "machine_shape": "NvidiaTeslaT4", "dataset_sources": [dataset_id], "competition_sources": [SLUG],
        "kernel_sources": [], "model_sources": []}))
    return folder


def push(fake, tmp_path, folder, message="", wait_minutes=1.0, env=None):
    env = env or fake.client_env(tmp_path / "home")
    return run_cli(fake, env, str(folder), message, str(wait_minutes), code=PUSH)


def rpc_order(fake) -> list[str]:
    return [path.rsplit("/", 1)[1] for method, path in fake.calls if method == "POST"]


def test_push_creates_a_private_dataset_with_its_sub_folders_then_pushes_the_notebook(fake, tmp_path):
    folder = notebook_folder(tmp_path)
    r = push(fake, tmp_path, folder)
    assert r.returncode == 0, r.stderr
    create, = fake.rpc_bodies("CreateDataset")
    assert (create["ownerSlug"], create["slug"], create["title"]) == ("fake-user", "ncfm-inception-runs",
                                                                    "ncfm inception runs")
    assert create["licenseName"] == "CC0-1.0" and create["isPrivate"] is True
    names = {fake.blob_names[f["token"]]: f["token"] for f in create["files"]}
    assert set(names) == {"runs.zip", "settings.json"}  # the sub-folder went up, zipped
    with zipfile.ZipFile(io.BytesIO(fake.uploads[names["runs.zip"]])) as z:
        assert z.read("inception/fold0/model.keras") == b"fake weights"
    assert fake.uploads[names["settings.json"]] == b'{"tta": 8}'
    save, = fake.rpc_bodies("SaveKernel")
    assert save["slug"] == "fake-user/ncfm-inception" and save["newTitle"] == "ncfm inception"
    assert (save["kernelType"], save["language"], save["machineShape"]) == ("notebook", "python", "NvidiaTeslaT4")
    assert save["isPrivate"] is True and save["enableInternet"] is False
    assert save["datasetDataSources"] == ["fake-user/ncfm-inception-runs"] and save["competitionDataSources"] == [SLUG]
    assert json.loads(save["text"])["cells"][0]["source"] == "print('predicting')\n"
    assert rpc_order(fake).index("CreateDataset") < rpc_order(fake).index("SaveKernel")
    pushed = json.loads((folder / "pushed.json").read_text())
    assert pushed["kernel"] == "fake-user/ncfm-inception" and pushed["version"] == 1
    assert pushed["url"] == "https://www.kaggle.com/code/fake-user/ncfm-inception"
    assert pushed["dataset"] == "fake-user/ncfm-inception-runs" and pushed["pushed_at"]
    assert "version 1" in r.stdout and "ncfm submit --notebook" in r.stdout


@pytest.mark.slow
def test_ncfm_notebook_push_sends_the_folder_it_wrote(fake, tmp_path, trained_run):
    out = tmp_path / "kaggle" / "tiny"
    env = fake.client_env(tmp_path / "home")
    r = run_cli(fake, env, "notebook", "--run", str(trained_run["run"]), "--data-dir", str(trained_run["data"]),
                "--out", str(out), "--wheels", "none", "--push")
    assert r.returncode == 0, r.stderr
    create, = fake.rpc_bodies("CreateDataset")
    assert (create["ownerSlug"], create["slug"]) == ("fake-user", "tiny-ncfm-models")  # the credentials' owner
    names = {fake.blob_names[f["token"]]: f["token"] for f in create["files"]}
    assert set(names) == {"runs.zip", "data.zip", "wheels.zip", "ncfm-bundle.json"}
    with zipfile.ZipFile(io.BytesIO(fake.uploads[names["runs.zip"]])) as z:
        assert {"tiny/fold0/best.keras", "tiny/fold1/best.keras"} <= set(z.namelist())
    save, = fake.rpc_bodies("SaveKernel")
    assert save["slug"] == "fake-user/tiny-predict" and save["enableInternet"] is False
    assert save["datasetDataSources"] == ["fake-user/tiny-ncfm-models"]
    assert save["competitionDataSources"] == ["the-nature-conservancy-fisheries-monitoring"]
    assert [c["cell_type"] for c in json.loads(save["text"])["cells"]][:2] == ["markdown", "code"]
    assert json.loads((out / "pushed.json").read_text())["kernel"] == "fake-user/tiny-predict"


def test_push_to_an_existing_dataset_adds_a_version_with_the_message(fake, tmp_path):
    fake.dataset_exists = True
    r = push(fake, tmp_path, notebook_folder(tmp_path), message="fold 4 retrained")
    assert r.returncode == 0, r.stderr
    assert fake.rpc_bodies("CreateDataset") == []
    version, = fake.rpc_bodies("CreateDatasetVersion")
    assert (version["ownerSlug"], version["datasetSlug"]) == ("fake-user", "ncfm-inception-runs")
    assert version["body"]["versionNotes"] == "fold 4 retrained"
    assert {fake.blob_names[f["token"]] for f in version["body"]["files"]} == {"runs.zip", "settings.json"}
    assert len(fake.rpc_bodies("SaveKernel")) == 1


def test_push_waits_until_the_dataset_is_ready_before_pushing_the_notebook(fake, tmp_path):
    fake.dataset_statuses = ["BLOBS_RECEIVED", "BLOBS_DECOMPRESSED", "READY"]
    r = push(fake, tmp_path, notebook_folder(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "dataset fake-user/ncfm-inception-runs: blobs_received" in r.stdout
    order = rpc_order(fake)
    after_create = order[order.index("CreateDataset"):]
    assert after_create.count("GetDatasetStatus") == 3
    assert len(order) - 1 - order[::-1].index("GetDatasetStatus") < order.index("SaveKernel")


@pytest.mark.parametrize("statuses, expected", [
    (["BLOBS_RECEIVED"], "still blobs_received"),
    (["BLOBS_RECEIVED", "FAILED"], "could not process the dataset"),
])
def test_a_dataset_that_does_not_get_ready_stops_the_push(fake, tmp_path, statuses, expected):
    fake.dataset_statuses = statuses
    folder = notebook_folder(tmp_path)
    r = push(fake, tmp_path, folder, wait_minutes=0.002)
    assert r.returncode == 2
    assert expected in r.stderr and "the notebook was not pushed" in r.stderr
    assert fake.rpc_bodies("SaveKernel") == [] and not (folder / "pushed.json").exists()


def test_a_failed_file_upload_stops_the_push(fake, tmp_path):
    fake.upload_status = 500
    r = push(fake, tmp_path, notebook_folder(tmp_path))
    assert r.returncode == 2
    assert "the upload of" in r.stderr and "runs.zip" in r.stderr and "not pushed" in r.stderr
    assert fake.rpc_bodies("SaveKernel") == []


def test_a_refused_kernel_push_shows_kaggles_error_and_records_nothing(fake, tmp_path):
    fake.kernel_push_answer = {"error": "Notebook ncfm-inception is being edited elsewhere"}
    folder = notebook_folder(tmp_path)
    r = push(fake, tmp_path, folder)
    assert r.returncode == 2
    assert "Kaggle refused it: Notebook ncfm-inception is being edited elsewhere" in r.stderr
    assert not (folder / "pushed.json").exists()


def test_sources_kaggle_could_not_attach_are_an_error(fake, tmp_path):
    fake.kernel_push_answer = {"versionNumber": 2, "url": "https://www.kaggle.com/code/fake-user/ncfm-inception",
                               "invalidCompetitionSources": [SLUG]}
    folder = notebook_folder(tmp_path)
    r = push(fake, tmp_path, folder)
    assert r.returncode == 2
    assert f"could not attach its competition sources {SLUG}" in r.stderr and "rules accepted" in r.stderr
    assert not (folder / "pushed.json").exists()


def test_push_refuses_ids_of_another_account_before_uploading(fake, tmp_path):
    r = push(fake, tmp_path, notebook_folder(tmp_path, owner="someone-else"))
    assert r.returncode == 2
    assert "belongs to the account someone-else" in r.stderr and "are those of fake-user" in r.stderr
    assert "--owner fake-user" in r.stderr
    assert "dataset-metadata.json" in r.stderr
    assert fake.calls == []


@pytest.mark.parametrize("damage, expected", [
    (lambda f: (f / "dataset" / "dataset-metadata.json").unlink(), "dataset-metadata.json: not found"),
    (lambda f: (f / "notebook" / "kernel-metadata.json").write_text("{not json"),
     "kernel-metadata.json: not readable JSON"),
    (lambda f: (f / "notebook" / "kernel-metadata.json").write_text(json.dumps(
        {**json.loads((f / "notebook" / "kernel-metadata.json").read_text()), "enable_internet": None})),
     '"enable_internet" must be false or true'),
    (lambda f: (f / "notebook" / "kernel-metadata.json").write_text(json.dumps(
        {**json.loads((f / "notebook" / "kernel-metadata.json").read_text()), "dataset_sources": []})),
     '"dataset_sources" ([]) does not list the dataset fake-user/ncfm-inception-runs'),
])
def test_push_refuses_missing_or_malformed_metadata_and_names_the_fix(fake, tmp_path, damage, expected):
    folder = notebook_folder(tmp_path)
    damage(folder)
    r = push(fake, tmp_path, folder)
    assert r.returncode == 2
    assert expected in r.stderr and "rerun `ncfm notebook`" in r.stderr
    assert fake.calls == []


def test_push_without_credentials_says_where_they_go(fake, tmp_path):
    r = push(fake, tmp_path, notebook_folder(tmp_path), env=fake.client_env(tmp_path / "home", credentials=False))
    assert r.returncode == 2
    assert "no Kaggle credentials found" in r.stderr
    assert fake.calls == []


# --------------------------------------------------------------------------- code competitions: submit a notebook
def submit_notebook(fake, tmp_path, data_dir, notebook, *flags, env=None, message="inception notebook"):
    env = env or fake.client_env(tmp_path / "home")
    return run_cli(fake, env, "submit", "--notebook", str(notebook), "-m", message, "--data-dir", str(data_dir),
                   "--poll-seconds", "0.01", *flags)


def test_submit_notebook_waits_for_the_run_then_sends_a_code_submission(fake, tmp_path, data_dir):
    fake.kernel_statuses = ["QUEUED", "RUNNING", "RUNNING", "COMPLETE"]
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception", "--version", "3")
    assert r.returncode == 0, r.stderr
    polls = fake.rpc_bodies("GetKernelSessionStatus")
    assert len(polls) == 4 and polls[0] == {"userName": "fake-user", "kernelSlug": "ncfm-inception"}
    assert "notebook fake-user/ncfm-inception: QUEUED" in r.stdout and ": RUNNING" in r.stdout
    code, = fake.rpc_bodies("CreateCodeSubmission")
    assert code == {"competitionName": SLUG, "kernelOwner": "fake-user", "kernelSlug": "ncfm-inception",
                    "kernelVersion": 3, "fileName": "submission.csv", "submissionDescription": "inception notebook"}
    assert "Submitted the notebook fake-user/ncfm-inception (version 3)" in r.stdout and "ref 1000" in r.stdout
    assert "ncfm submissions" in r.stdout and "inception notebook  pending" in r.stdout
    assert fake.rpc_bodies("StartSubmissionUpload") == []


def test_submit_notebook_without_a_version_lets_kaggle_take_the_latest(fake, tmp_path, data_dir):
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception")
    assert r.returncode == 0, r.stderr
    code, = fake.rpc_bodies("CreateCodeSubmission")
    assert "kernelVersion" not in code and "its latest version" in r.stdout


def test_submit_a_pushed_folder_submits_the_version_pushed(fake, tmp_path, data_dir):
    folder = notebook_folder(tmp_path)
    fake.kernel_versions = 6  # the notebook had versions before
    assert push(fake, tmp_path, folder).returncode == 0
    r = submit_notebook(fake, tmp_path, data_dir, folder)
    assert r.returncode == 0, r.stderr
    code, = fake.rpc_bodies("CreateCodeSubmission")
    assert (code["kernelOwner"], code["kernelSlug"], code["kernelVersion"]) == ("fake-user", "ncfm-inception", 7)


@pytest.mark.parametrize("end, expected", [
    ({"status": "ERROR", "failureMessage": "Notebook Threw Exception: ModuleNotFoundError: No module named 'ncfm'"},
     "ended with ERROR: Notebook Threw Exception: ModuleNotFoundError: No module named 'ncfm'"),
    ("CANCEL_ACKNOWLEDGED", "was cancelled (CANCEL_ACKNOWLEDGED)"),
])
def test_a_run_that_fails_shows_why_and_submits_nothing(fake, tmp_path, data_dir, end, expected):
    fake.kernel_statuses = ["RUNNING", end]
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception")
    assert r.returncode == 2
    assert expected in r.stderr and "Nothing was submitted" in r.stderr
    assert fake.rpc_bodies("CreateCodeSubmission") == []


def test_a_run_still_going_at_the_deadline_submits_nothing(fake, tmp_path, data_dir):
    fake.kernel_statuses = ["RUNNING"]
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception", "--wait-minutes", "0.002")
    assert r.returncode == 2
    assert "still running" in r.stderr and "nothing was submitted" in r.stderr
    assert "run the same command again" in r.stderr
    assert len(fake.rpc_bodies("GetKernelSessionStatus")) >= 2 and fake.rpc_bodies("CreateCodeSubmission") == []


def test_a_status_call_that_fails_now_and_then_is_waited_out(fake, tmp_path, data_dir):
    fake.kernel_statuses = ["RUNNING", 503, 503, "COMPLETE"]
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception")
    assert r.returncode == 0, r.stderr
    assert "no answer (HTTPError); asking again" in r.stdout
    assert len(fake.rpc_bodies("CreateCodeSubmission")) == 1


def test_a_wrong_key_is_reported_as_such_while_waiting(fake, tmp_path, data_dir):
    env = fake.client_env(tmp_path / "home", KAGGLE_KEY="wrong-key-9a8b7c6d5e")
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception", env=env)
    assert r.returncode == 2
    assert "rejected the credentials" in r.stderr and "HTTP 401" in r.stderr
    assert "wrong-key-9a8b7c6d5e" not in r.stdout + r.stderr


def test_an_unknown_notebook_is_named(fake, tmp_path, data_dir):
    fake.kernel_missing = True
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/no-such-notebook")
    assert r.returncode == 2
    assert "does not know the notebook fake-user/no-such-notebook" in r.stderr
    assert fake.rpc_bodies("CreateCodeSubmission") == []


def test_submit_notebook_without_credentials_says_where_they_go(fake, tmp_path, data_dir):
    env = fake.client_env(tmp_path / "home", credentials=False)
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception", env=env)
    assert r.returncode == 2 and "no Kaggle credentials found" in r.stderr
    assert fake.calls == []


@pytest.mark.parametrize("argv, expected", [
    (["submit", "x.csv", "--notebook", "fake-user/ncfm-inception", "-m", "m"], "not both"),
    (["submit", "-m", "m"], "nothing to submit"),
    (["submit", "--notebook", "ncfm-inception", "-m", "m"], "neither OWNER/SLUG"),
])
def test_a_csv_or_a_notebook_exactly_one(fake, tmp_path, argv, expected):
    r = run_cli(fake, fake.client_env(tmp_path / "home"), *argv)
    assert r.returncode == 2 and expected in r.stderr
    assert fake.calls == []


# --------------------------------------------------------------------------- which competitions take what
def test_a_csv_for_a_notebook_only_competition_is_refused_before_the_upload(fake, tmp_path, good_csv, data_dir):
    fake.competitions = {SLUG: {"isKernelsSubmissionsOnly": True}}
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 2
    assert "takes only notebooks" in r.stderr
    assert "ncfm notebook --run RUN --push" in r.stderr and "ncfm submit --notebook OWNER/SLUG" in r.stderr
    assert fake.rpc_bodies("GetCompetition") == [{"competitionName": SLUG}]
    assert fake.rpc_bodies("StartSubmissionUpload") == [] and fake.uploads == {}


def test_the_competition_list_answers_when_the_competition_call_fails(fake, tmp_path, good_csv, data_dir):
    fake.get_competition_error = (500, "internal error")
    fake.competitions = {SLUG: {"isKernelsSubmissionsOnly": True}}
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 2 and "takes only notebooks" in r.stderr
    assert fake.rpc_bodies("ListCompetitions")[0]["search"] == SLUG
    assert fake.uploads == {}


def test_a_failed_competition_lookup_does_not_block_the_upload(fake, tmp_path, good_csv, data_dir):
    fake.get_competition_error = (500, "internal error")
    fake.missing_competitions = {SLUG}  # ... and the list does not find it either
    r = submit(fake, tmp_path, good_csv, data_dir)
    assert r.returncode == 0, r.stderr
    assert len(fake.rpc_bodies("CreateSubmission")) == 1


def test_a_competition_that_does_not_exist_is_named_and_nothing_is_sent(fake, tmp_path, good_csv, data_dir):
    fake.missing_competitions = {"no-such-competition"}
    r = submit(fake, tmp_path, good_csv, data_dir, "--competition", "no-such-competition")
    assert r.returncode == 2
    assert "does not know the competition 'no-such-competition'" in r.stderr and "HTTP 404" in r.stderr
    assert fake.rpc_bodies("StartSubmissionUpload") == []
    r = submit_notebook(fake, tmp_path, data_dir, "fake-user/ncfm-inception", "--competition", "no-such-competition")
    assert r.returncode == 2 and "HTTP 404" in r.stderr
    assert fake.rpc_bodies("GetKernelSessionStatus") == [] and fake.rpc_bodies("CreateCodeSubmission") == []


# --------------------------------------------------------------------------- pure pieces
def test_find_credentials_prefers_env_and_reports_no_secret(tmp_path):
    creds = find_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "sekret-123"}, home=tmp_path)
    assert "KAGGLE_USERNAME" in creds.source and "sekret-123" not in creds.source
    assert "sekret-123" in creds.secrets


def test_find_credentials_accepts_an_api_token(tmp_path):
    assert "KAGGLE_API_TOKEN" in find_credentials({"KAGGLE_API_TOKEN": "KGAT_abc"}, home=tmp_path).source
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "access_token").write_text("KGAT_def\n")
    assert "access_token" in find_credentials({}, home=tmp_path).source


@pytest.mark.parametrize("environ, files, expected", [
    ({}, {}, "no Kaggle credentials found"),
    ({"KAGGLE_USERNAME": ""}, {}, "KAGGLE_USERNAME is set but empty"),
    ({"KAGGLE_API_TOKEN": " "}, {}, "KAGGLE_API_TOKEN is set but empty"),
    ({"KAGGLE_USERNAME": "u"}, {}, "a username but no key"),
    ({}, {"kaggle.json": "{not json"}, "not a readable kaggle.json"),
    ({}, {"kaggle.json": '{"username": "u", "key": ""}'}, "a username but no key"),
])
def test_find_credentials_errors_say_what_to_do(tmp_path, environ, files, expected):
    (tmp_path / ".kaggle").mkdir()
    for name, text in files.items():
        (tmp_path / ".kaggle" / name).write_text(text)
    with pytest.raises(NcfmError, match=expected) as e:
        find_credentials(environ, home=tmp_path)
    assert "https://www.kaggle.com/settings/api" in str(e.value)


def _http_error(status: int, message: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(message, response=response)


@pytest.mark.parametrize("error, expected", [
    (_http_error(401, "Unauthenticated"), "rejected the credentials"),
    (_http_error(403, "Forbidden"), "accept its rules"),
    (_http_error(404, "Not found"), "does not know the competition"),
    (_http_error(429, "Too Many Requests"), "daily submission limit"),
    (requests.ConnectionError("Max retries exceeded"), "cannot reach Kaggle"),
])
def test_failures_are_explained(error, expected):
    msg = str(explain_failure(error, "submitting x.csv", "the-nature-conservancy-fisheries-monitoring",
                              Credentials("env", ("k",))))
    assert expected in msg


def test_secrets_are_scrubbed_from_messages():
    err = explain_failure(_http_error(500, "bad key sekret-123"), "x", "c", Credentials("env", ("sekret-123",)))
    assert "sekret-123" not in str(err) and "***" in str(err)
    assert scrub("a sekret-123 b", ["sekret-123"]) == "a *** b"


def test_submissions_table_lines_up_columns():
    table = format_submissions_table([
        {"date": "2017-04-12 09:30", "description": "a", "status": "complete", "public": "1.0", "private": "2.0"},
        {"date": "2017-04-13 10:00", "description": "longer one", "status": "pending", "public": "-", "private": "-"},
    ])
    lines = table.splitlines()
    assert lines[0].startswith("date") and set(lines[1]) <= {"-", " "}
    assert lines[2].index("complete") == lines[3].index("pending")


def test_a_kaggle_json_readable_by_others_gets_a_chmod_warning(tmp_path, capsys):
    cfg = tmp_path / ".kaggle" / "kaggle.json"
    cfg.parent.mkdir()
    cfg.write_text('{"username": "u", "key": "sekret-123"}')
    cfg.chmod(0o644)
    assert find_credentials({}, home=tmp_path).source == str(cfg)
    assert f"chmod 600 {cfg}" in capsys.readouterr().err
