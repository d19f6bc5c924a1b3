"""Upload a submission to Kaggle and list past ones, with the official `kaggle` client.

    ncfm submit submissions/inception299_stage1.csv -m "InceptionV3 5-fold + 8 TTA"
    ncfm submissions --data-dir data

The competition is `--competition SLUG`, else the slug split_train_val recorded for `--data-dir`.
`submit` runs the same checks as `ncfm validate` first and refuses to upload a file that fails
them. An upload is never retried: a second submit could use up another of the day's submissions.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ncfm import NcfmError

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
    return Credentials(found[0], tuple(s for s in secrets if s))


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
    """An NcfmError a person can act on, for an exception the client raised while doing `action`."""
    import requests

    detail = scrub(" ".join(str(e).split()), creds.secrets) or type(e).__name__
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(e, requests.exceptions.HTTPError) and status is not None:
        if status == 429 or _is_daily_limit(detail):
            return NcfmError(f"{action}: daily submission limit reached for {competition} (HTTP {status}: {detail}). "
                             f"Kaggle resets the count at 00:00 UTC; submit again then (ncfm never retries)")
        if status == 401:
            return NcfmError(f"{action}: Kaggle rejected the credentials from {creds.source} (HTTP 401: {detail}). "
                             f"Check the username and key, or create a new token at {TOKEN_PAGE}")
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
    if _is_daily_limit(text):
        raise NcfmError(f"submitting {path}: daily submission limit reached for {competition} ({text}). "
                        f"Kaggle resets the count at 00:00 UTC; submit again then")
    if not ref and not text.lower().startswith("successfully"):
        raise NcfmError(f"submitting {path}: Kaggle did not confirm the submission "
                        f"(message: {text or 'none'}){said}. Check `ncfm submissions` before trying again")
    return ref


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


# --------------------------------------------------------------------------- commands
def competition_slug(flag: str | None, recorded: str = "") -> str:
    """The Kaggle slug to talk to: --competition if given, else the one split_train_val recorded."""
    slug = (flag or "").strip() or recorded
    if not slug:
        raise NcfmError("no Kaggle competition slug: none is recorded for this competition (split_train_val "
                        "records it when it knows it); pass --competition SLUG, the last part of the "
                        "competition's address https://www.kaggle.com/competitions/SLUG")
    return slug


def main_submit(args) -> int:
    """`ncfm submit FILE -m MESSAGE`: validate, then upload once."""
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
    if not args.message.strip():
        raise NcfmError("the submission message (-m) is empty; describe the submission, e.g. -m 'inception 5-fold'")
    creds = find_credentials()
    api = open_client(creds, competition)
    print(f"Uploading {checked.path} ({checked.rows} rows, stage {checked.stage or '?'}) to {competition} ...",
          flush=True)
    ref = submit_file(api, checked.path, args.message, competition, creds)
    print(f"Submitted {checked.path} to {competition}" + (f" (ref {ref})" if ref else "")
          + f": {args.message!r}. Scoring takes a few minutes; see `ncfm submissions`.")
    with _captured():
        try:
            left = int(api.competition_get_submission_limits(competition).num_allowed_now)
        except Exception:  # a bonus; never fail a submit that went through
            left = None
    if left is not None:
        print(f"{left} submissions left today.")
    return 0


def main_submissions(args) -> int:
    """`ncfm submissions`: your past submissions to the competition, newest first."""
    flag = getattr(args, "competition", None)
    if flag and flag.strip():
        competition = competition_slug(flag)
    else:
        from ncfm.dataset import competition_for  # reads competition.json, or detects the layout

        data_dir = getattr(args, "data_dir", "data")
        try:
            recorded = competition_for(data_dir).slug
        except NcfmError as e:
            raise NcfmError(f"cannot tell the competition from {data_dir} ({e}); pass --competition SLUG, "
                            f"or --data-dir with the competition's files") from None
        competition = competition_slug(None, recorded)
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
