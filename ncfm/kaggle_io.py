"""Talk to Kaggle with the official `kaggle` client: submit a CSV or a notebook, push a notebook,
list past submissions.

    ncfm submit submissions/inception299_stage1.csv -m "InceptionV3 5-fold + 8 TTA"
    ncfm submit --notebook kaggle/inception299 -m "InceptionV3 5-fold, code competition"
    ncfm submissions --data-dir data

The competition is `--competition SLUG`, else the slug split_train_val recorded for `--data-dir`.
`submit FILE` runs the same checks as `ncfm validate` first and refuses to upload a file that fails
them, or to a competition that takes only notebooks. A submission is never retried: a second
submit could use up another of the day's submissions.

Code competitions: `ncfm notebook --out kaggle/NAME` writes a Kaggle Dataset (the runs, the
wheels) and a notebook that reads it; `push_notebook` (`ncfm notebook --push`) uploads the dataset,
waits until Kaggle has processed it, pushes the notebook (Kaggle starts running it) and records
the push in kaggle/NAME/pushed.json; `submit --notebook` waits for that run to end, then submits
the notebook, which Kaggle reruns on the hidden test set to score it.

Credentials, in the order the client (kaggle 2.x) tries them:
  1. an API token: KAGGLE_API_TOKEN (the token, or a path to a file holding it), or ~/.kaggle/access_token
  2. a legacy key: KAGGLE_USERNAME + KAGGLE_KEY, or kaggle.json in $KAGGLE_CONFIG_DIR (default
     ~/.kaggle; ~/.config/kaggle when ~/.kaggle does not exist), mode 600
  3. OAuth credentials from `kaggle auth login` (~/.kaggle/credentials.json)
We check for them before importing the client, because without them it prints help and calls
exit(). Importing the client authenticates, prints messages and creates its config folder, so it
happens inside the functions, with its prints captured; secrets are scrubbed from anything we echo.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ncfm import NcfmError, progress
from ncfm.fileio import atomic_write_text

TOKEN_PAGE = "https://www.kaggle.com/settings/api"
CREDENTIALS_HELP = (
    "Create an API token at {page} and either save kaggle.json (with your username and key) as "
    "{cfg} with `chmod 600 {cfg}`, or export KAGGLE_USERNAME and KAGGLE_KEY, or export "
    "KAGGLE_API_TOKEN (or save the token in ~/.kaggle/access_token)."
)


def rules_url(competition: str) -> str:
    return f"https://www.kaggle.com/competitions/{competition}/rules"


# --------------------------------------------------------------------------- credentials
@dataclass
class Credentials:
    """Where credentials were found (for messages) and the secret values to scrub from output."""

    source: str
    secrets: tuple[str, ...] = field(default=(), repr=False)
    username: str = ""  # from KAGGLE_USERNAME or kaggle.json; "" for an API token (known after sign-in)


def config_dir(environ: Mapping[str, str] | None = None, home: os.PathLike | str | None = None) -> Path:
    """The folder the client reads kaggle.json from (same rule as kaggle 2.x)."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"])
    home = Path(home) if home is not None else Path(os.path.expanduser("~"))
    dot = home / ".kaggle"
    if sys.platform.startswith("linux") and not dot.exists():
        return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return dot


def _read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def find_credentials(environ: Mapping[str, str] | None = None,
                     home: os.PathLike | str | None = None) -> Credentials:
    """Credentials the client will use, or NcfmError saying where they go. Never returns secrets' text
    in messages; `Credentials.secrets` holds them so output can be scrubbed."""
    environ = os.environ if environ is None else environ
    home = Path(home) if home is not None else Path(os.path.expanduser("~"))
    cfg = config_dir(environ, home) / "kaggle.json"
    help_text = CREDENTIALS_HELP.format(page=TOKEN_PAGE, cfg=cfg)

    # A variable set to nothing usually means `export KAGGLE_KEY=$SECRET` with SECRET unset; the
    # client would then send an empty key (or silently fall back to another source).
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        if var in environ and not environ[var].strip():
            raise NcfmError(f"{var} is set but empty; give it a value or unset it (`unset {var}`). {help_text}")

    secrets = [environ[v].strip() for v in ("KAGGLE_API_TOKEN", "KAGGLE_KEY") if environ.get(v)]
    found: list[str] = []

    token = environ.get("KAGGLE_API_TOKEN")
    if token:
        token_file = Path(token)
        if token_file.is_file():
            value = _read_token_file(token_file)
            if value is None:
                raise NcfmError(f"KAGGLE_API_TOKEN names the file {token_file}, which is empty. {help_text}")
            secrets.append(value)
            found.append(f"the token file named by KAGGLE_API_TOKEN ({token_file})")
        else:
            found.append("the KAGGLE_API_TOKEN environment variable")
    for name in ("access_token", "access_token.txt"):
        value = _read_token_file(home / ".kaggle" / name)
        if value:
            secrets.append(value)
            found.append(str(home / ".kaggle" / name))
    oauth = home / ".kaggle" / "credentials.json"
    if oauth.is_file():
        found.append(f"{oauth} (kaggle auth login)")

    file_values: dict = {}
    if not (environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY")) and cfg.is_file():
        try:
            file_values = json.loads(cfg.read_text() or "{}")
            if not isinstance(file_values, dict):
                raise ValueError("not a JSON object")
        except (ValueError, OSError) as e:
            if found:  # the client ignores a broken kaggle.json when it has another way in
                file_values = {}
            else:
                raise NcfmError(f"{cfg}: not a readable kaggle.json ({type(e).__name__}); it should hold "
                                f'{{"username": "...", "key": "..."}}. {help_text}') from None
        if file_values.get("key"):
            secrets.append(str(file_values["key"]))
        if cfg.stat().st_mode & 0o077:
            print(f"warning: {cfg} can be read by other users; run `chmod 600 {cfg}`", file=sys.stderr)
    username = environ.get("KAGGLE_USERNAME") or str(file_values.get("username") or "").strip()
    key = environ.get("KAGGLE_KEY") or str(file_values.get("key") or "").strip()
    if username and key:
        env_parts = [v for v in ("KAGGLE_USERNAME", "KAGGLE_KEY") if environ.get(v)]
        found.append(" + ".join(env_parts + ([str(cfg)] if len(env_parts) < 2 else [])))
    elif (username or key) and not found:
        have, lack = ("username", "key") if username else ("key", "username")
        raise NcfmError(f"Kaggle credentials are incomplete: a {have} but no {lack} (looked in KAGGLE_USERNAME/"
                        f"KAGGLE_KEY and {cfg}). {help_text}")

    if not found:
        raise NcfmError(f"no Kaggle credentials found (looked for KAGGLE_API_TOKEN, KAGGLE_USERNAME/KAGGLE_KEY, "
                        f"{cfg}, {home / '.kaggle' / 'access_token'}). {help_text}")
    return Credentials(found[0], tuple(s for s in secrets if s), username=username)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret replaced by ***."""
    for s in sorted(set(secrets), key=len, reverse=True):
        if len(s) >= 4:
            text = text.replace(s, "***")
    return text


# --------------------------------------------------------------------------- client
@contextlib.contextmanager
def _captured():
    """Capture what the client prints, so it reaches the user only through our (scrubbed) messages."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def _client_output(buf: io.StringIO, creds: Credentials) -> str:
    text = " ".join(scrub(buf.getvalue(), creds.secrets).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f" (client said: {text})" if text else ""


def open_client(creds: Credentials, competition: str):
    """An authenticated `kaggle.api.kaggle_api_extended.KaggleApi` (the import is deliberate and late)."""
    with _captured() as buf:
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi  # kaggle/__init__ authenticates on import
        except ImportError as e:
            raise NcfmError(f"the kaggle client is not installed ({e}); run `pip install 'kaggle>=1.7'` "
                            f"(or `pip install -e '.[kaggle]'`)") from None
        api = KaggleApi()
        # Verbose mode (VERBOSE=1) prints request headers, Authorization included.
        api.args = [a for a in api.args if a not in ("--verbose", "-v")]
        try:
            api.authenticate()
        except SystemExit:
            raise NcfmError(f"the kaggle client found no usable credentials in {creds.source}"
                            f"{_client_output(buf, creds)}. "
                            + CREDENTIALS_HELP.format(page=TOKEN_PAGE, cfg=config_dir() / "kaggle.json")) from None
        except Exception as e:
            raise explain_failure(e, "signing in to Kaggle", competition, creds) from None
    return api


def _is_daily_limit(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in ("daily", "allowance", "submission limit", "too many submissions"))


def explain_failure(e: BaseException, action: str, competition: str, creds: Credentials) -> NcfmError:
    """An NcfmError a person can act on, for an exception the client raised while doing `action`
    (`competition` empty when the action is about a dataset or a notebook, not a competition)."""
    import requests

    detail = scrub(" ".join(str(e).split()), creds.secrets) or type(e).__name__
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(e, requests.exceptions.HTTPError) and status is not None:
        if status == 401:
            return NcfmError(f"{action}: Kaggle rejected the credentials from {creds.source} (HTTP 401: {detail}). "
                             f"Check the username and key, or create a new token at {TOKEN_PAGE}")
        if not competition:  # a dataset or a notebook: no rules, no daily limit
            if status == 429:
                return NcfmError(f"{action}: Kaggle asks to slow down (HTTP 429: {detail}); wait a few minutes "
                                 f"and run the command again")
            return NcfmError(f"{action}: Kaggle answered HTTP {status}: {detail}")
        if status == 429 or _is_daily_limit(detail):
            return NcfmError(f"{action}: daily submission limit reached for {competition} (HTTP {status}: {detail}). "
                             f"Kaggle resets the count at 00:00 UTC; submit again then (ncfm never retries)")
        if status == 403:
            return NcfmError(f"{action}: Kaggle refused access to {competition} (HTTP 403: {detail}). Join the "
                             f"competition and accept its rules at {rules_url(competition)} with the account of "
                             f"the credentials in {creds.source}, then run the command again")
        if status == 404:
            return NcfmError(f"{action}: Kaggle does not know the competition {competition!r} (HTTP 404: {detail}). "
                             f"Check --competition (default: the slug recorded by split_train_val)")
        return NcfmError(f"{action}: Kaggle answered HTTP {status}: {detail}")
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return NcfmError(f"{action}: cannot reach Kaggle ({type(e).__name__}: {detail}). Check the internet "
                         f"connection and any HTTPS_PROXY setting, then run the command again")
    return NcfmError(f"{action}: {type(e).__name__}: {detail}")


def submit_file(api, path: os.PathLike | str, message: str, competition: str, creds: Credentials) -> int:
    """Upload once; return Kaggle's submission ref. Failures that the client reports in its return
    value (a failed blob upload) rather than by raising become NcfmError too."""
    with _captured() as buf:
        try:
            response = api.competition_submit(str(path), message, competition, quiet=True)
        except Exception as e:
            raise explain_failure(e, f"submitting {path}", competition, creds) from None
    said = _client_output(buf, creds)
    text = scrub(str(getattr(response, "message", "") or ""), creds.secrets)
    ref = int(getattr(response, "ref", 0) or 0)
    if text == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", "Could not submit to competition"):
        raise NcfmError(f"submitting {path}: the file upload failed (the upload server refused it or the "
                        f"connection broke), so nothing was submitted{said}. ncfm does not retry; run the "
                        f"command again")
    _check_confirmed(text, ref, f"submitting {path}", competition, said)
    return ref


def _check_confirmed(text: str, ref: int, action: str, competition: str, said: str) -> None:
    """NcfmError unless Kaggle's answer to a submission (its message and ref) says it was taken."""
    if _is_daily_limit(text):
        raise NcfmError(f"{action}: daily submission limit reached for {competition} ({text}). "
                        f"Kaggle resets the count at 00:00 UTC; submit again then")
    if not ref and not text.lower().startswith("successfully"):
        raise NcfmError(f"{action}: Kaggle did not confirm the submission "
                        f"(message: {text or 'none'}){said}. Check `ncfm submissions` before trying again")


def competition_info(api, competition: str, creds: Credentials):
    """Kaggle's description of the competition (a kagglesdk ApiCompetition: is_kernels_submissions_only,
    submissions_disabled, max_daily_submissions, ...), or None when it cannot be had.

    Asks GetCompetition (kagglesdk; KaggleApi has no method for it), else the competition list
    searched for the slug, matched exactly. Only Kaggle saying there is no such competition (HTTP
    404) is an error: any other failure must not stop a submission that may well go through."""
    import requests

    with _captured():
        try:
            from kagglesdk.competitions.types.competition_api_service import ApiGetCompetitionRequest

            request = ApiGetCompetitionRequest()
            request.competition_name = competition
            with api.build_kaggle_client() as kaggle:
                return kaggle.competitions.competition_api_client.get_competition(request)
        except requests.exceptions.HTTPError as e:
            if getattr(e.response, "status_code", None) == 404:
                raise explain_failure(e, "looking up the competition", competition, creds) from None
        except Exception:  # an older client, the network, a refusal: try the list, then go on without
            pass
        try:
            listed = api.competitions_list(search=competition)
        except Exception:
            return None
    for c in getattr(listed, "competitions", None) or []:
        # the list's ref is the competition's address (https://www.kaggle.com/competitions/SLUG) or its slug
        if str(getattr(c, "ref", "") or "").rstrip("/").rsplit("/", 1)[-1] == competition:
            return c
    return None


# --------------------------------------------------------------------------- listing
COLUMNS = ("date", "description", "status", "public", "private")


def submission_row(s) -> dict:
    """One table row from a kagglesdk ApiSubmission."""
    date = getattr(s, "date", None)
    status = getattr(s, "status", None)
    status = getattr(status, "name", status)
    error = getattr(s, "error_description", None)
    return {
        "date": date.strftime("%Y-%m-%d %H:%M") if hasattr(date, "strftime") else str(date or ""),
        "description": getattr(s, "description", None) or "",
        "status": (str(status or "").lower() + (f" ({error})" if error else "")),
        "public": getattr(s, "public_score", None) or "-",
        "private": getattr(s, "private_score", None) or "-",
    }


def format_submissions_table(rows: Sequence[Mapping[str, str]], max_description: int = 48) -> str:
    """Plain-text table: date, description, status, public score, private score."""
    def cell(row, c):
        v = str(row.get(c, ""))
        return v if c != "description" or len(v) <= max_description else v[: max_description - 3] + "..."

    table = [list(COLUMNS)] + [[cell(r, c) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- notebooks (code competitions)
# The folder `ncfm notebook --out kaggle/NAME` writes (ncfm.notebook), and what a push adds:
#   kaggle/NAME/dataset/     a Kaggle Dataset: dataset-metadata.json and the files, sub-folders included
#   kaggle/NAME/notebook/    kernel-metadata.json and the .ipynb, which reads that dataset
#   kaggle/NAME/pushed.json  written here after a push: the notebook's id and version, the dataset
DATASET_DIR, NOTEBOOK_DIR, PUSHED_FILE = "dataset", "notebook", "pushed.json"
DATASET_METADATA, KERNEL_METADATA = "dataset-metadata.json", "kernel-metadata.json"
REWRITE = "rerun `ncfm notebook` to write the folder again"
NOTEBOOK_OUTPUT = "submission.csv"  # the file of the notebook's output that a code submission scores
KERNEL_WAITING = ("QUEUED", "RUNNING", "NEW_SCRIPT")  # KernelWorkerStatus values of a run not yet over
DATASET_FAILED = ("failed", "deleted")
MAX_MISSED_POLLS = 5  # failed status calls in a row waited out before giving up (a run lasts hours)
SETTLE_SECONDS = 60  # right after a push, Kaggle may still report the previous run's status


def _owner_slug(value) -> tuple[str, str] | None:
    parts = value.split("/") if isinstance(value, str) else []
    return (parts[0], parts[1]) if len(parts) == 2 and all(p.strip() for p in parts) else None


def _load_metadata(path: Path) -> dict:
    if not path.is_file():
        raise NcfmError(f"{path}: not found; {REWRITE}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NcfmError(f"{path}: not readable JSON ({type(e).__name__}: {e}); {REWRITE}") from None
    if not isinstance(meta, dict):
        raise NcfmError(f"{path}: holds a JSON {type(meta).__name__}, not an object; {REWRITE}")
    return meta


def read_push_folder(folder: os.PathLike | str) -> tuple[dict, dict]:
    """(dataset metadata, notebook metadata) of a folder `ncfm notebook --out` wrote, checked for what
    the client would otherwise refuse half-way, after the dataset is already up."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NcfmError(f"{folder}: no such folder; write it with `ncfm notebook --out {folder}`")
    ds_path, nb_path = folder / DATASET_DIR / DATASET_METADATA, folder / NOTEBOOK_DIR / KERNEL_METADATA
    dataset, kernel = _load_metadata(ds_path), _load_metadata(nb_path)

    def bad(path: Path, problem: str) -> NcfmError:
        return NcfmError(f"{path}: {problem}; {REWRITE}")

    for path, meta in ((ds_path, dataset), (nb_path, kernel)):
        if _owner_slug(meta.get("id")) is None:
            raise bad(path, f'"id" must be "OWNER/SLUG" (received {meta.get("id")!r})')
    title = dataset.get("title")
    if not isinstance(title, str) or not 6 <= len(title) <= 50:
        raise bad(ds_path, f'"title" must be 6 to 50 characters (received {title!r})')
    licenses = dataset.get("licenses")
    if not (isinstance(licenses, list) and len(licenses) == 1 and isinstance(licenses[0], dict)
            and licenses[0].get("name")):
        raise bad(ds_path, f'"licenses" must hold exactly one, e.g. [{{"name": "CC0-1.0"}}] (received {licenses!r})')
    title = kernel.get("title")
    if not isinstance(title, str) or len(title) < 5:
        raise bad(nb_path, f'"title" must be at least 5 characters (received {title!r})')
    code = kernel.get("code_file")
    if not isinstance(code, str) or not code or not (nb_path.parent / code).is_file():
        raise bad(nb_path, f'"code_file" {code!r} is not a file in {nb_path.parent}')
    if kernel.get("kernel_type") not in ("notebook", "script") or kernel.get("language") != "python":
        raise bad(nb_path, f'"kernel_type" must be "notebook" or "script" and "language" "python" (received '
                           f'{kernel.get("kernel_type")!r} and {kernel.get("language")!r})')
    if not isinstance(kernel.get("enable_internet"), bool):
        raise bad(nb_path, f'"enable_internet" must be false or true (received {kernel.get("enable_internet")!r}); '
                           f'the client turns the internet on when it is missing, and code competitions do not '
                           f'score notebooks with internet')
    sources = kernel.get("dataset_sources")
    if not isinstance(sources, list) or dataset["id"] not in sources:
        raise bad(nb_path, f'"dataset_sources" ({sources!r}) does not list the dataset {dataset["id"]} of '
                           f'{ds_path}, so the notebook could not read it')
    return dataset, kernel


def read_pushed(folder: os.PathLike | str) -> dict:
    """What the last push of `folder` sent: {"kernel": OWNER/SLUG, "version": N, "url", "dataset", "pushed_at"}."""
    path = Path(folder) / PUSHED_FILE
    if not path.is_file():
        raise NcfmError(f"{path}: not found: {folder} has not been pushed; push it with `ncfm notebook --push` "
                        f"(or pass --notebook OWNER/SLUG)")
    try:
        pushed = json.loads(path.read_text())
        if _owner_slug(pushed["kernel"]) is None or int(pushed["version"]) < 1:
            raise ValueError(f"kernel {pushed['kernel']!r}, version {pushed['version']!r}")
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise NcfmError(f"{path}: not what a push writes ({type(e).__name__}: {e}); push the folder again "
                        f"(`ncfm notebook --push`) or pass --notebook OWNER/SLUG --version N") from None
    return pushed


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s % 60:02d}s" if m else f"{s}s"


def _poll(ask: Callable[[], tuple[str, object]], what: str, over: Callable[[str], bool], creds: Credentials,
          timeout_s: float, poll_s: float) -> tuple[str | None, object, float]:
    """Ask for `what`'s status every `poll_s` seconds, a line each time, until `over(status)` or
    `timeout_s` have passed; returns (last status, its answer, seconds waited). A few failed calls
    in a row (network, Kaggle busy) are waited out; `ask` raises NcfmError for what waiting cannot fix."""
    import requests

    start, missed, status, answer = time.monotonic(), 0, None, None
    while True:
        try:
            with _captured():
                status, answer = ask()
            missed = 0
        except NcfmError:
            raise
        except Exception as e:
            code = getattr(getattr(e, "response", None), "status_code", None)
            passing = (isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))
                       or (code is not None and (code >= 500 or code == 429)))
            missed += 1
            if not passing or missed > MAX_MISSED_POLLS:
                raise explain_failure(e, f"asking for the status of {what}", "", creds) from None
            status = None
            progress.say(f"{what}: no answer ({type(e).__name__}); asking again in {poll_s:g}s")
        elapsed = time.monotonic() - start
        if status is not None:
            progress.say(f"{what}: {status} ({_duration(elapsed)})")
            if over(status):
                return status, answer, elapsed
        if elapsed >= timeout_s:
            return status, answer, elapsed
        time.sleep(poll_s)


def _dataset_exists(api, ref: str, creds: Credentials) -> bool:
    import requests

    with _captured():
        try:
            api.dataset_status(ref)
        except requests.exceptions.HTTPError as e:
            # Kaggle may answer 403 for a dataset that is not there; the client's own create reads any
            # failure of this call as "absent", and a create of a dataset that exists fails clearly.
            if getattr(e.response, "status_code", None) in (403, 404):
                return False
            raise explain_failure(e, f"looking up the dataset {ref}", "", creds) from None
        except Exception as e:
            raise explain_failure(e, f"looking up the dataset {ref}", "", creds) from None
    return True


def push_dataset(api, folder: Path, ref: str, notes: str, creds: Credentials) -> str:
    """Create the private dataset `ref` from `folder`, or add a version to it; returns "created" or
    "versioned". Sub-folders go up as zip archives: the client's default dir_mode, "skip", leaves
    them out without a word, and a notebook without its runs fails only on Kaggle."""
    exists = _dataset_exists(api, ref, creds)
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != DATASET_METADATA]
    size = sum(p.stat().st_size for p in files)
    action = f"{'adding a version to' if exists else 'creating'} the dataset {ref}"
    print(f"{action[0].upper() + action[1:]} (private) from {folder}: {len(files)} files, {size / 2**20:.1f} MiB, "
          f"sub-folders zipped ...", flush=True)
    buf = io.StringIO()
    # not quiet: a file whose upload failed is told only in the client's output ("Upload unsuccessful")
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            if exists:
                result = api.dataset_create_version(str(folder), notes, quiet=False, dir_mode="zip")
            else:
                result = api.dataset_create_new(str(folder), public=False, quiet=False, dir_mode="zip")
        except ValueError as e:  # the client's own checks of dataset-metadata.json
            raise NcfmError(f"{folder / DATASET_METADATA}: the kaggle client refused it "
                            f"({scrub(str(e), creds.secrets)}); {REWRITE}") from None
        except Exception as e:
            raise explain_failure(e, action, "", creds) from None
    said = scrub(buf.getvalue(), creds.secrets)
    lost = [line.split(":", 1)[1].strip() for line in said.splitlines() if line.startswith("Upload unsuccessful:")]
    if lost:
        raise NcfmError(f"{action}: the upload of {', '.join(lost)} failed, so the dataset on Kaggle lacks it; "
                        f"the notebook was not pushed. Run the same command again (it uploads a new version)")
    error = getattr(result, "error", None)
    status = str(getattr(result, "status", "") or "")
    if result is None or error or (status and status.lower() != "ok"):
        raise NcfmError(f"{action}: Kaggle refused it: {error or status or 'no answer'}"
                        f"{_client_output(io.StringIO(said), creds) if result is None else ''}")
    return "versioned" if exists else "created"


def wait_for_dataset(api, ref: str, creds: Credentials, timeout_s: float, poll_s: float) -> None:
    """Return once Kaggle has processed the dataset: a notebook pushed against a dataset still being
    processed fails to start."""
    time.sleep(poll_s)  # right after an upload, the status can still be the previous version's
    status, _, elapsed = _poll(lambda: (str(api.dataset_status(ref)).lower(), None), f"dataset {ref}",
                               lambda s: s in ("ready", *DATASET_FAILED), creds, timeout_s, poll_s)
    if status == "ready":
        return
    page = f"https://www.kaggle.com/datasets/{ref}"
    if status in DATASET_FAILED:
        raise NcfmError(f"Kaggle could not process the dataset {ref} (status {status}); the notebook was not "
                        f"pushed. See {page}, then run the same command again")
    raise NcfmError(f"the dataset {ref} is still {status or 'unknown'} after {_duration(elapsed)}; the notebook was "
                    f"not pushed (it would fail to start against a dataset Kaggle is still processing). When "
                    f"{page} shows the new version, run the same command again (it uploads another version)")


def push_kernel(api, folder: Path, ref: str, creds: Credentials) -> tuple[int | None, str]:
    """Push the notebook in `folder` (Kaggle saves a new version and starts running it); returns its
    version number and address. What Kaggle would not attach (a dataset, a competition) is an error:
    the version was saved, but its run cannot read what it needs."""
    with _captured() as buf:
        try:
            result = api.kernels_push(str(folder))
        except ValueError as e:  # the client's own checks of kernel-metadata.json
            raise NcfmError(f"{folder / KERNEL_METADATA}: the kaggle client refused it "
                            f"({scrub(str(e), creds.secrets)}); {REWRITE}") from None
        except Exception as e:
            raise explain_failure(e, f"pushing the notebook {ref}", "", creds) from None
    said = _client_output(buf, creds)
    if result is None or getattr(result, "error", None):
        raise NcfmError(f"pushing the notebook {ref}: Kaggle refused it: "
                        f"{scrub(str(getattr(result, 'error', None) or 'no answer'), creds.secrets)}{said}")
    version = getattr(result, "version_number", None)
    url = getattr(result, "url", None) or f"https://www.kaggle.com/code/{ref}"
    invalid = {kind: getattr(result, f"invalid_{kind}_sources", None) for kind in ("dataset", "competition",
                                                                                    "kernel", "model")}
    invalid = {kind: list(refs) for kind, refs in invalid.items() if refs}
    if invalid:
        what = "; ".join(f"{kind} sources {', '.join(refs)}" for kind, refs in invalid.items())
        raise NcfmError(f"pushing the notebook {ref}: Kaggle saved version {version or '?'} ({url}) but could not "
                        f"attach its {what}, so that run cannot read them. Check the ids in "
                        f"{folder / KERNEL_METADATA} (a competition must be joined and its rules accepted, a "
                        f"dataset must exist and be ready), then push again")
    if said:  # e.g. that the title does not resolve to the id's slug
        print(f"note{said}", file=sys.stderr)
    return version, url


def push_notebook(folder: os.PathLike | str, message: str | None = None, *, wait_minutes: float = 30,
                  poll_seconds: float = 10) -> int:
    """Push the folder `ncfm notebook --out` wrote: its dataset (created private, or a new version with
    `message`), then, once Kaggle has the dataset ready (at most `wait_minutes`, asking every
    `poll_seconds`), its notebook, which Kaggle starts running. Records the push in folder/pushed.json,
    which `ncfm submit --notebook FOLDER` reads. Returns the exit code; problems are NcfmError."""
    folder = Path(folder)
    creds = find_credentials()
    dataset, kernel = read_push_folder(folder)
    dataset_id, kernel_id = dataset["id"], kernel["id"]
    api = open_client(creds, "")
    user = api.get_config_value(api.CONFIG_NAME_USER)  # known after sign-in, whatever the credentials
    for sub, meta in ((DATASET_DIR, DATASET_METADATA), (NOTEBOOK_DIR, KERNEL_METADATA)):
        ref = dataset_id if sub == DATASET_DIR else kernel_id
        owner = ref.split("/")[0]
        if user and owner.lower() != str(user).lower():
            raise NcfmError(f"{folder / sub / meta}: the id {ref} belongs to the account {owner}, but the Kaggle "
                            f"credentials ({creds.source}) are those of {user}, and an account can push only its "
                            f"own datasets and notebooks. Write the folder again for this account with `ncfm "
                            f"notebook ... --owner {user}`, or use the credentials of {owner}")
    if kernel.get("enable_internet"):
        print(f"warning: {folder / NOTEBOOK_DIR / KERNEL_METADATA} turns the internet on; code competitions "
              f"score only notebooks with internet off", file=sys.stderr)
    now = datetime.now(timezone.utc)
    notes = (message or "").strip() or f"pushed by ncfm on {now:%Y-%m-%d %H:%M} UTC"
    done = push_dataset(api, folder / DATASET_DIR, dataset_id, notes, creds)
    print(f"Dataset {dataset_id} {done}; waiting until Kaggle has processed it (at most "
          f"{_duration(wait_minutes * 60)}) ...", flush=True)
    wait_for_dataset(api, dataset_id, creds, wait_minutes * 60, poll_seconds)
    print(f"Pushing the notebook {kernel_id} ...", flush=True)
    version, url = push_kernel(api, folder / NOTEBOOK_DIR, kernel_id, creds)
    atomic_write_text(folder / PUSHED_FILE, json.dumps({
        "kernel": kernel_id, "version": version, "url": url, "dataset": dataset_id, "dataset_push": done,
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2) + "\n")
    print(f"Pushed the notebook {kernel_id} version {version or '?'}: {url}\nKaggle runs it now. Submit it with "
          f"`ncfm submit --notebook {folder} -m MESSAGE` (or --notebook {kernel_id}"
          f"{f' --version {version}' if version else ''}), which waits for the run to end; recorded in "
          f"{folder / PUSHED_FILE}.")
    return 0


def notebook_to_submit(value: str, version: int | None) -> tuple[str, int | None, float]:
    """(OWNER/SLUG, version, seconds since the push or inf) from --notebook and --version: the id
    itself (no --version: the latest version, Kaggle's default) or a folder pushed by `ncfm notebook
    --push` (its pushed.json's id, version and time)."""
    if version is not None and version < 1:
        raise NcfmError(f"--version must be a notebook version number, 1 or more (received {version})")
    if Path(value).is_dir():
        pushed = read_pushed(value)
        try:
            since = (datetime.now(timezone.utc) - datetime.fromisoformat(pushed["pushed_at"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            since = float("inf")
        return pushed["kernel"], version if version is not None else int(pushed["version"]), since
    if _owner_slug(value) is None:
        raise NcfmError(f"--notebook {value!r} is neither OWNER/SLUG (the notebook's address is "
                        f"https://www.kaggle.com/code/OWNER/SLUG) nor a folder pushed by `ncfm notebook --push`")
    return value, version, float("inf")


def _kernel_status(api, kernel: str, creds: Credentials) -> tuple[str, object]:
    import requests

    try:
        answer = api.kernels_status(kernel)
    except ValueError as e:  # the client's words for HTTP 401/403 on this call; the HTTPError is its context
        if getattr(getattr(e.__context__, "response", None), "status_code", None) == 401:
            raise explain_failure(e.__context__, f"asking for the status of the notebook {kernel}", "",
                                  creds) from None
        raise NcfmError(f"Kaggle refused to show the notebook {kernel}: its OWNER/SLUG is wrong (the notebook's "
                        f"address is https://www.kaggle.com/code/OWNER/SLUG), or it is private and not the "
                        f"account of the credentials in {creds.source}") from None
    except requests.exceptions.HTTPError as e:
        if getattr(e.response, "status_code", None) == 404:
            raise NcfmError(f"Kaggle does not know the notebook {kernel} (HTTP 404); check --notebook (the id in "
                            f"kernel-metadata.json, pushed by `ncfm notebook --push`)") from None
        raise
    status = getattr(answer, "status", None)
    return str(getattr(status, "name", status) or "").upper(), answer


def submit_notebook(api, kernel: str, version: int | None, message: str, competition: str,
                    creds: Credentials) -> int:
    """Submit the notebook's output file as a code submission, once; return Kaggle's submission ref."""
    action = f"submitting the notebook {kernel}" + (f" version {version}" if version else "")
    with _captured() as buf:
        try:
            response = api.competition_submit_code(NOTEBOOK_OUTPUT, message, competition, kernel=kernel,
                                                   kernel_version=version, quiet=True)
        except Exception as e:
            raise explain_failure(e, action, competition, creds) from None
    text = scrub(str(getattr(response, "message", "") or ""), creds.secrets)
    ref = int(getattr(response, "ref", 0) or 0)
    _check_confirmed(text, ref, action, competition, _client_output(buf, creds))
    return ref


# --------------------------------------------------------------------------- commands
DEFAULT_WAIT_MINUTES = 600  # a Kaggle notebook runs for at most 9 hours (12 on CPU), plus the queue
DEFAULT_POLL_SECONDS = 60


def competition_slug(flag: str | None, recorded: str = "") -> str:
    """The Kaggle slug to talk to: --competition if given, else the one split_train_val recorded."""
    slug = (flag or "").strip() or recorded
    if not slug:
        raise NcfmError("no Kaggle competition slug: none is recorded for this competition (split_train_val "
                        "records it when it knows it); pass --competition SLUG, the last part of the "
                        "competition's address https://www.kaggle.com/competitions/SLUG")
    return slug


def _competition_of_flags(args) -> str:
    """--competition, else the slug recorded in (or detected from) --data-dir."""
    flag = getattr(args, "competition", None)
    if flag and flag.strip():
        return competition_slug(flag)
    from ncfm.dataset import competition_for  # reads competition.json, or detects the layout

    data_dir = getattr(args, "data_dir", "data")
    try:
        recorded = competition_for(data_dir).slug
    except NcfmError as e:
        raise NcfmError(f"cannot tell the competition from {data_dir} ({e}); pass --competition SLUG, "
                        f"or --data-dir with the competition's files") from None
    return competition_slug(None, recorded)


def _check_message(message: str) -> None:
    if not message.strip():
        raise NcfmError("the submission message (-m) is empty; describe the submission, e.g. -m 'inception 5-fold'")


def main_submit(args) -> int:
    """`ncfm submit FILE -m MESSAGE`: validate, then upload once; `ncfm submit --notebook ...`: see
    main_submit_notebook."""
    notebook = getattr(args, "notebook", None)
    if args.file and notebook:
        raise NcfmError(f"give a CSV ({args.file}) or --notebook ({notebook}), not both: a file competition "
                        f"takes the CSV, a code competition the notebook")
    if not args.file and not notebook:
        raise NcfmError("nothing to submit: give the CSV (`ncfm submit FILE -m MESSAGE`) or, for a code "
                        "competition, the pushed notebook (`ncfm submit --notebook OWNER/SLUG -m MESSAGE`)")
    if notebook:
        return main_submit_notebook(args)
    if getattr(args, "kernel_version", None) is not None:
        raise NcfmError("--version picks a version of a notebook; it goes with --notebook, not with a CSV")
    from ncfm import submission

    data_dir, sample = getattr(args, "data_dir", "data"), getattr(args, "sample", None)
    comp = submission.competition_of(data_dir, sample)
    competition = competition_slug(getattr(args, "competition", None), comp.slug)
    try:
        checked = submission.validate_file(args.file, comp, stage=getattr(args, "stage", None),
                                           data_dir=data_dir, sample=sample)
    except NcfmError as e:
        raise NcfmError(f"not uploading: {e}\nFix the file (or rebuild it with `ncfm predict`) and run "
                        f"`ncfm validate` until it passes") from None
    _check_message(args.message)
    creds = find_credentials()
    api = open_client(creds, competition)
    info = competition_info(api, competition, creds)
    if info is not None and getattr(info, "is_kernels_submissions_only", False):
        raise NcfmError(f"not uploading {checked.path}: {competition} is a code competition, it takes only "
                        f"notebooks. Build and push one with `ncfm notebook --run RUN --push` (Kaggle runs it), "
                        f"then submit it with `ncfm submit --notebook OWNER/SLUG -m MESSAGE`")
    print(f"Uploading {checked.path} ({checked.rows} rows, stage {checked.stage or '?'}) to {competition} ...",
          flush=True)
    ref = submit_file(api, checked.path, args.message, competition, creds)
    print(f"Submitted {checked.path} to {competition}" + (f" (ref {ref})" if ref else "")
          + f": {args.message!r}. Scoring takes a few minutes; see `ncfm submissions`.")
    _print_submissions_left(api, competition)
    return 0


def main_submit_notebook(args) -> int:
    """`ncfm submit --notebook OWNER/SLUG|FOLDER [--version N] -m MESSAGE`: wait until the notebook's run
    on Kaggle ends, then submit it once. A run that fails, is cancelled or outlasts --wait-minutes is
    not submitted. Kaggle reports the status of the notebook's latest run only, so an older --version
    is submitted once the latest run has completed."""
    if getattr(args, "stage", None) is not None or getattr(args, "sample", None):
        raise NcfmError("--stage and --sample check a CSV; with --notebook Kaggle checks what the notebook writes")
    kernel, version, since_push = notebook_to_submit(args.notebook, getattr(args, "kernel_version", None))
    _check_message(args.message)
    competition = _competition_of_flags(args)
    wait_minutes, poll_seconds = getattr(args, "wait_minutes", None), getattr(args, "poll_seconds", None)
    wait_minutes = DEFAULT_WAIT_MINUTES if wait_minutes is None else wait_minutes
    poll_seconds = DEFAULT_POLL_SECONDS if poll_seconds is None else poll_seconds
    if wait_minutes < 0 or poll_seconds <= 0:
        raise NcfmError(f"--wait-minutes must be 0 or more and --poll-seconds more than 0 (received "
                        f"{wait_minutes:g} and {poll_seconds:g})")
    creds = find_credentials()
    api = open_client(creds, competition)
    competition_info(api, competition, creds)  # an unknown competition: better said now than after hours
    label = f"version {version}" if version else "its latest version"
    print(f"Waiting for the run of the notebook {kernel} to end (asking every {poll_seconds:g}s, for at most "
          f"{_duration(wait_minutes * 60)}); then submitting {label} to {competition} ...", flush=True)
    if since_push < SETTLE_SECONDS:  # so the first answer is about the run just pushed (one interval at most)
        time.sleep(min(SETTLE_SECONDS - since_push, poll_seconds))
    status, answer, elapsed = _poll(lambda: _kernel_status(api, kernel, creds), f"notebook {kernel}",
                                    lambda s: s not in KERNEL_WAITING, creds, wait_minutes * 60, poll_seconds)
    page = f"https://www.kaggle.com/code/{kernel}"
    if status is None or status in KERNEL_WAITING:
        raise NcfmError(f"the notebook {kernel} is still {(status or 'unknown').lower()} after {_duration(elapsed)} "
                        f"(--wait-minutes {wait_minutes:g}); nothing was submitted. The run continues on Kaggle: run "
                        f"the same command again to wait for it and submit it when it completes")
    if status != "COMPLETE":
        failure = scrub(" ".join(str(getattr(answer, "failure_message", None) or "").split()), creds.secrets)
        ended = f"was cancelled ({status})" if status.startswith("CANCEL") else f"ended with {status}"
        raise NcfmError(f"the run of the notebook {kernel} {ended}"
                        + (f": {failure}" if failure else " (Kaggle gave no message)")
                        + f". Nothing was submitted. Its log is on {page}; fix the notebook, push it again "
                          f"(`ncfm notebook --run RUN --push`) and run this command again")
    ref = submit_notebook(api, kernel, version, args.message, competition, creds)
    print(f"Submitted the notebook {kernel} ({label}) to {competition}" + (f" (ref {ref})" if ref else "")
          + f": {args.message!r}. Kaggle now reruns it on the hidden test set to score it, which takes about "
            f"as long as the notebook's run: `ncfm submissions --competition {competition}` "
            f"shows it as pending, then with its score, or with the error (e.g. Notebook Timeout, "
            f"Submission CSV Not Found).")
    with _captured():
        try:
            subs = [s for s in api.competition_submissions(competition) or [] if s is not None]
        except Exception:  # a bonus; never fail a submit that went through
            subs = []
    if subs:
        print(f"Newest submissions to {competition}:")
        print(format_submissions_table([submission_row(s) for s in subs[:3]]))
    _print_submissions_left(api, competition)
    return 0


def _print_submissions_left(api, competition: str) -> None:
    with _captured():
        try:
            left = int(api.competition_get_submission_limits(competition).num_allowed_now)
        except Exception:  # a bonus; never fail a submit that went through
            left = None
    if left is not None:
        print(f"{left} submissions left today.")


def main_submissions(args) -> int:
    """`ncfm submissions`: your past submissions to the competition, newest first."""
    competition = _competition_of_flags(args)
    creds = find_credentials()
    api = open_client(creds, competition)
    with _captured():
        try:
            subs = api.competition_submissions(competition) or []
        except Exception as e:
            raise explain_failure(e, f"listing submissions to {competition}", competition, creds) from None
    rows = [submission_row(s) for s in subs if s is not None]
    if not rows:
        print(f"No submissions to {competition} yet.")
        return 0
    print(f"Submissions to {competition} (newest first):")
    print(format_submissions_table(rows))
    return 0
