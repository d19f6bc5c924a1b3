"""A fake Kaggle API on 127.0.0.1, so tests drive the real `kaggle` client without the internet.

How the unmodified client (kaggle 2.x / kagglesdk) is pointed here:
  * KAGGLE_API_ENVIRONMENT=LOCALHOST makes it call http://localhost/api/v1/<service>/<method>
    (kagglesdk.kaggle_env; KaggleApi adds `--local` to its args) instead of https://api.kaggle.com.
  * HTTP_PROXY=http://127.0.0.1:<port> (honoured by `requests`) sends those plain-http requests to
    this server as absolute URLs; the blob upload URL we hand out (http://localhost/upload/...) too.
  * HTTPS_PROXY/ALL_PROXY point here as well and CONNECT is refused, so a request for any https://
    address (the real Kaggle) fails here instead of leaving the machine.

What a submit sends, in order (read from kaggle/api/kaggle_api_extended.py, competition_submit):
  POST competitions.CompetitionApiService/StartSubmissionUpload  {fileName, contentLength, ...}
       -> {token, createUrl}
  PUT  <createUrl>  the file's bytes (no auth: the URL is the credential)
  POST competitions.CompetitionApiService/CreateSubmission  {competitionName, blobFileTokens,
       submissionDescription} -> {message, ref}
Listing is POST .../ListSubmissions -> {submissions: [...]}. Errors are JSON {code, message} with
the HTTP status, which the client turns into requests.HTTPError.

A competition is described by competitions.CompetitionApiService/GetCompetition {competitionName}
-> ApiCompetition {ref, isKernelsSubmissionsOnly, ...} (404: no such competition) or found in
ListCompetitions {search, ...} -> {competitions: [...]}.

Pushing a notebook (dataset_create_new / dataset_create_version, dataset_status, kernels_push):
  POST datasets.DatasetApiService/GetDatasetStatus  {ownerSlug, datasetSlug} -> {status: "READY"}
       (404 while the dataset does not exist)
  per file, a sub-folder zipped: POST blobs.BlobApiService/StartBlobUpload {type: "DATASET", name,
       contentLength, ...} -> {token, createUrl}; PUT <createUrl>
  POST datasets.DatasetApiService/CreateDataset  {ownerSlug, slug, title, licenseName, isPrivate,
       files: [{token}], ...}  or  .../CreateDatasetVersion  {ownerSlug, datasetSlug, body: {versionNotes,
       files, ...}} -> {status: "ok", ref, url} or {error}
  POST kernels.KernelsApiService/SaveKernel  {slug, newTitle, text, kernelType, isPrivate,
       enableInternet, datasetDataSources, competitionDataSources, machineShape, ...}
       -> {ref, url, versionNumber, error, invalidDatasetSources, ...}
Submitting it: POST kernels.KernelsApiService/GetKernelSessionStatus {userName, kernelSlug}
  -> {status: QUEUED|RUNNING|COMPLETE|ERROR|CANCEL_*, failureMessage}, then
  POST competitions.CompetitionApiService/CreateCodeSubmission {competitionName, kernelOwner,
  kernelSlug, kernelVersion, fileName, submissionDescription} -> {message, ref}.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

API = "/api/v1/"  # then <service>/<method>, e.g. competitions.CompetitionApiService/CreateSubmission
REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeKaggle:
    """Start with `with FakeKaggle() as kaggle:`; inspect `kaggle.calls`, `kaggle.uploads`, ...

    Knobs a test may set before the client runs:
      upload_status   HTTP status of the blob PUT (200 = accept)
      create_error    (status, message) returned by CreateSubmission / CreateCodeSubmission instead of success
      create_answer   JSON answered by CreateSubmission / CreateCodeSubmission with status 200 (overrides success)
      submissions     what ListSubmissions returns (Kaggle's JSON field names)
      competitions    slug -> ApiCompetition fields (e.g. {"isKernelsSubmissionsOnly": True}) that
                      GetCompetition and ListCompetitions describe it with; any other slug is a
                      competition that takes files
      missing_competitions   slugs GetCompetition answers 404 for and ListCompetitions leaves out
      get_competition_error  (status, message) GetCompetition answers instead (ListCompetitions still works)
      dataset_exists  whether the dataset exists before the push (GetDatasetStatus 404 until it is created)
      dataset_statuses       GetDatasetStatus answers after a create or version, one per call, the last
                             repeated (DatabundleVersionStatus names: "BLOBS_RECEIVED", "READY", "FAILED")
      dataset_answer  JSON answered by CreateDataset / CreateDatasetVersion (default {"status": "ok", ...})
      kernel_push_answer     JSON answered by SaveKernel (default: the next version number and the url)
      kernel_statuses GetKernelSessionStatus answers, one per call, the last repeated: a status name,
                      a dict such as {"status": "ERROR", "failureMessage": "..."}, or an HTTP error status
      kernel_missing  GetKernelSessionStatus answers 404
    Records: calls, json_bodies (per RPC method name), uploads (blob token -> bytes), blob_names
    (blob token -> the file name StartBlobUpload announced).
    """

    def __init__(self, username: str = "fake-user", key: str = "fake-key-3f9c1e7a5b2d4c6e"):
        self.username, self.key = username, key
        self.calls: list[tuple[str, str]] = []       # (method, path) in arrival order
        self.json_bodies: dict[str, list[dict]] = {}  # RPC method name -> request bodies
        self.uploads: dict[str, bytes] = {}           # blob token -> bytes received
        self.auth_headers: list[str] = []
        self.upload_status = 200
        self.create_error: tuple[int, str] | None = None
        self.create_answer: dict | None = None
        self.submissions: list[dict] = []
        self.competitions: dict[str, dict] = {}
        self.missing_competitions: set[str] = set()
        self.get_competition_error: tuple[int, str] | None = None
        self.dataset_exists = False
        self.dataset_statuses: list[str] = ["READY"]
        self.dataset_answer: dict | None = None
        self.kernel_push_answer: dict | None = None
        self.kernel_statuses: list = ["COMPLETE"]
        self.kernel_missing = False
        self.blob_names: dict[str, str] = {}
        self.kernel_versions = 0
        self._dataset_pushed = False  # a create or version arrived: dataset_statuses apply
        self._tokens = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeKaggle":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kaggle", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FakeKaggle":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def client_env(self, home: Path, credentials: bool = True, **extra: str) -> dict:
        """Environment for a process running the real client against this server: a fresh HOME and
        config folder (the user's own credentials are never read), proxies pointing here."""
        home = Path(home)
        (home / ".kaggle").mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO_ROOT),
            "HOME": str(home),
            "KAGGLE_CONFIG_DIR": str(home / ".kaggle"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "TMPDIR": str(home / "tmp"),  # the client keeps resumable-upload notes there
        }
        (home / "tmp").mkdir(exist_ok=True)
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[var] = env[var.lower()] = self.proxy_url
        if credentials:
            env["KAGGLE_USERNAME"], env["KAGGLE_KEY"] = self.username, self.key
        env.update(extra)
        return env

    # ------------------------------------------------------------------ state
    def rpc_bodies(self, method: str) -> list[dict]:
        with self._lock:
            return list(self.json_bodies.get(method, []))

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.calls.append((method, path))

    def _next_token(self, kind: str) -> str:
        with self._lock:
            self._tokens += 1
            return f"{kind}-{self._tokens}"

    def _competition(self, slug: str) -> dict:
        return {"ref": f"https://www.kaggle.com/competitions/{slug}", "title": slug.replace("-", " ").title(),
                "isKernelsSubmissionsOnly": False, "submissionsDisabled": False, "maxDailySubmissions": 5,
                **self.competitions.get(slug, {})}

    @staticmethod
    def _next(sequence: list):
        """The first answer of a sequence, removed unless it is the last (which then repeats)."""
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]


def _make_handler(fake: FakeKaggle):
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hang the test's server thread forever
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        # -------------------------------------------------------------- plumbing
        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: dict | None = None) -> None:
            body = json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"code": status, "message": message})

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            with fake._lock:
                fake.auth_headers.append(header)
            good = "Basic " + base64.b64encode(f"{fake.username}:{fake.key}".encode()).decode()
            return header == good

        # -------------------------------------------------------------- verbs
        def do_CONNECT(self):  # an https:// request: would be the real internet; refuse
            fake._record("CONNECT", self.path)
            self._error(403, "fake Kaggle: no https tunnels")

        def do_GET(self):
            path = urlsplit(self.path).path
            fake._record("GET", path)
            self._error(404, f"fake Kaggle: no GET {path}")

        def do_PUT(self):
            path = urlsplit(self.path).path
            body = self._body()
            fake._record("PUT", path)
            if not path.startswith("/upload/"):
                return self._error(404, f"fake Kaggle: no PUT {path}")
            if fake.upload_status not in (200, 201):
                return self._error(fake.upload_status, "fake Kaggle: upload refused")
            with fake._lock:
                fake.uploads[path.rsplit("/", 1)[1]] = body
            self._send(200, {})

        def do_POST(self):
            path = urlsplit(self.path).path
            raw = self._body()
            fake._record("POST", path)
            if not path.startswith(API) or path.count("/") != 4:
                return self._error(404, f"fake Kaggle: no POST {path}")
            method = path.rsplit("/", 1)[1]
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._error(400, "fake Kaggle: body is not JSON")
            with fake._lock:
                fake.json_bodies.setdefault(method, []).append(body)
            if not self._authorized():
                return self._error(401, "Unauthenticated")
            handler = getattr(self, f"rpc_{method}", None)
            if handler is None:
                return self._error(404, f"fake Kaggle: no RPC {method}")
            handler(body)

        # -------------------------------------------------------------- RPCs
        def rpc_StartSubmissionUpload(self, body):
            token = fake._next_token("blob")
            self._send(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

        def _submitted(self, body, file_name: str) -> None:
            with fake._lock:
                ref = 1000 + len(fake.submissions)
                fake.submissions.insert(0, {
                    "ref": ref, "date": "2026-01-02T03:04:05.000Z", "fileName": file_name,
                    "description": body.get("submissionDescription", ""), "status": "PENDING",
                })
            self._send(200, {"message": "Successfully submitted to The Nature Conservancy Fisheries Monitoring",
                             "ref": ref})

        def rpc_CreateSubmission(self, body):
            if fake.create_error is not None:
                return self._error(*fake.create_error)
            if fake.create_answer is not None:
                return self._send(200, fake.create_answer)
            token = body.get("blobFileTokens", "")
            with fake._lock:
                known = token in fake.uploads
            if not known:
                return self._error(400, f"fake Kaggle: unknown blob token {token!r}")
            self._submitted(body, "submission.csv")

        def rpc_CreateCodeSubmission(self, body):
            if fake.create_error is not None:
                return self._error(*fake.create_error)
            if fake.create_answer is not None:
                return self._send(200, fake.create_answer)
            if not (body.get("kernelOwner") and body.get("kernelSlug")):
                return self._error(400, "fake Kaggle: no kernel")
            self._submitted(body, body.get("fileName") or "submission.csv")

        def rpc_ListSubmissions(self, body):
            with fake._lock:
                self._send(200, {"submissions": list(fake.submissions)})

        def rpc_GetSubmissionLimits(self, body):
            with fake._lock:
                n = len(fake.submissions)
            self._send(200, {"numToday": n, "numTotal": n, "numAllowedNow": max(0, 5 - n)})

        # competitions
        def rpc_GetCompetition(self, body):
            slug = body.get("competitionName", "")
            if fake.get_competition_error is not None:
                return self._error(*fake.get_competition_error)
            if slug in fake.missing_competitions:
                return self._error(404, f"Competition '{slug}' not found")
            self._send(200, fake._competition(slug))

        def rpc_ListCompetitions(self, body):
            search = body.get("search") or ""
            found = [] if not search or search in fake.missing_competitions else [fake._competition(search)]
            self._send(200, {"competitions": found})

        # datasets and their blobs
        def rpc_StartBlobUpload(self, body):
            token = fake._next_token("dsblob")
            with fake._lock:
                fake.blob_names[token] = body.get("name", "")
            self._send(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

        def rpc_GetDatasetStatus(self, body):
            with fake._lock:
                if not fake.dataset_exists:
                    return self._error(404, "Dataset not found")
                status = fake._next(fake.dataset_statuses) if fake._dataset_pushed else "READY"
            self._send(200, {"status": status})

        def _dataset_created(self, files: list) -> None:
            with fake._lock:
                unknown = [f.get("token") for f in files if f.get("token") not in fake.uploads]
            if unknown:
                return self._error(400, f"fake Kaggle: unknown blob tokens {unknown}")
            with fake._lock:
                fake.dataset_exists = fake._dataset_pushed = True
            self._send(200, fake.dataset_answer or {"status": "ok", "ref": "/datasets/x",
                                                    "url": "https://www.kaggle.com/datasets/x"})

        def rpc_CreateDataset(self, body):
            if fake.dataset_exists:
                return self._error(409, "fake Kaggle: the dataset exists already")
            self._dataset_created(body.get("files") or [])

        def rpc_CreateDatasetVersion(self, body):
            if not fake.dataset_exists:
                return self._error(404, "Dataset not found")
            self._dataset_created((body.get("body") or {}).get("files") or [])

        # kernels
        def rpc_SaveKernel(self, body):
            if fake.kernel_push_answer is not None:
                return self._send(200, fake.kernel_push_answer)
            with fake._lock:
                fake.kernel_versions += 1
                version = fake.kernel_versions
            slug = body.get("slug", "")
            self._send(200, {"ref": f"/code/{slug}", "url": f"https://www.kaggle.com/code/{slug}",
                             "versionNumber": version})

        def rpc_GetKernelSessionStatus(self, body):
            if fake.kernel_missing:
                return self._error(404, "Kernel not found")
            with fake._lock:
                answer = fake._next(fake.kernel_statuses)
            if isinstance(answer, int):
                return self._error(answer, "fake Kaggle: unavailable")
            self._send(200, answer if isinstance(answer, dict) else {"status": answer})

    return Handler
