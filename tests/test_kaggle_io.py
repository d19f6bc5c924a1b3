"""`ncfm submit` / `ncfm submissions`: the real kaggle client against a fake Kaggle on 127.0.0.1.

Each CLI run is a subprocess with HOME and KAGGLE_CONFIG_DIR in a temp folder (the user's own
credentials are never read) and every proxy pointed at the fake server (see tests/fake_kaggle.py),
so nothing reaches the internet. The fake's key must never appear in what the command prints.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import socket
import subprocess
import sys
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


def run_cli(fake: FakeKaggle, env: dict, *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", CLI, *argv], env=env, capture_output=True,
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
