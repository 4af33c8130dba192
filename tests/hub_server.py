"""A small in-process Hugging Face hub for the tests: the routes huggingface_hub 2.x calls, on 127.0.0.1.

Downloads (`hf_hub_download`): `HEAD`/`GET /{repo}/resolve/{revision}/{path}` answering with the `X-Repo-Commit`,
`ETag` and `Content-Length` headers huggingface_hub reads, and `X-Error-Code` on errors (`RepoNotFound`,
`RevisionNotFound`, `EntryNotFound`). The model-info API: `GET /api/models/{repo}[/revision/{revision}]`. Uploads
(`HfApi.create_repo`, `upload_folder` / `create_commit`): `POST /api/repos/create`, `POST
/api/models/{repo}/preupload/{revision}` (every file "regular", so no LFS transfer) and `POST
/api/models/{repo}/commit/{revision}` with its NDJSON body. Written from huggingface_hub's own client code
(`file_download.py`, `_commit_api.py`, `utils/_http.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class Hub:
    """Repositories as `{repo_id: {"branches": {name: commit}, "commits": {commit: {path: bytes}}}}`."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self._counter = 0

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main", parent: str | None = None) -> str:
        """Adds a commit holding `files` (on top of the branch's files) and moves `branch` to it."""
        repo = self.repos.setdefault(repo_id, {"branches": {}, "commits": {}})
        base = repo["commits"].get(parent or repo["branches"].get(branch, ""), {})
        self._counter += 1
        oid = hashlib.sha1(f"{repo_id}:{self._counter}".encode()).hexdigest()
        repo["commits"][oid] = {**base, **files}
        repo["branches"][branch] = oid
        return oid

    def resolve(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        if revision in repo["commits"]:
            return revision
        return repo["branches"].get(revision)


def _handler(hub: Hub, endpoint: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, data, status: int = 200) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _error(self, code: str, status: int = 404, head: bool = False) -> None:
            self._send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, head)

        def _resolve(self, head: bool) -> None:
            parts = unquote(urlsplit(self.path).path).lstrip("/").split("/")
            # /{org}/{name}/resolve/{revision}/{path...}; the revision is quoted whole (refs/pr/1 -> refs%2Fpr%2F1)
            raw = urlsplit(self.path).path.lstrip("/").split("/")
            repo_id, revision, path = "/".join(parts[:2]), unquote(raw[3]), unquote("/".join(raw[4:]))
            if repo_id not in hub.repos:
                return self._error("RepoNotFound", 401, head)
            commit = hub.resolve(repo_id, revision)
            if commit is None:
                return self._error("RevisionNotFound", 404, head)
            files = hub.repos[repo_id]["commits"][commit]
            if path not in files:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head)
            body = files[path]
            etag = hashlib.sha1(body).hexdigest()
            self._send(200, body, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, head)

        def do_HEAD(self) -> None:
            hub.requests.append(("HEAD", self.path))
            if "/resolve/" in self.path:
                return self._resolve(head=True)
            self._error("NotFound", 404, head=True)

        def do_GET(self) -> None:
            hub.requests.append(("GET", self.path))
            path = urlsplit(self.path).path
            if path.startswith("/api/models/"):
                rest = path[len("/api/models/") :].split("/")
                repo_id = "/".join(rest[:2])
                revision = unquote(rest[3]) if len(rest) > 3 and rest[2] == "revision" else "main"
                commit = hub.resolve(repo_id, revision)
                if commit is None:
                    return self._error("RepoNotFound" if repo_id not in hub.repos else "RevisionNotFound")
                files = hub.repos[repo_id]["commits"][commit]
                return self._json({"id": repo_id, "sha": commit, "siblings": [{"rfilename": f} for f in files]})
            if "/resolve/" in path:
                return self._resolve(head=False)
            self._error("NotFound")

        def do_POST(self) -> None:
            hub.requests.append(("POST", self.path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlsplit(self.path).path
            if path == "/api/repos/create":
                data = json.loads(body)
                repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                if repo_id in hub.repos:
                    return self._json({"error": "already exists", "url": f"{endpoint[0]}/{repo_id}"}, 409)
                hub.repos[repo_id] = {"branches": {}, "commits": {}}
                return self._json({"url": f"{endpoint[0]}/{repo_id}"})
            if path.startswith("/api/models/") and ("/preupload/" in path or "/commit/" in path):
                rest = path[len("/api/models/") :].split("/")
                repo_id, kind, revision = "/".join(rest[:2]), rest[2], unquote("/".join(rest[3:]))
                if repo_id not in hub.repos:
                    return self._error("RepoNotFound", 404)
                if kind == "preupload":
                    files = json.loads(body)["files"]
                    modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    return self._json({"files": modes})
                files = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                oid = hub.commit(repo_id, files, branch=revision)
                return self._json(
                    {"commitUrl": f"{endpoint[0]}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
                )
            self._error("NotFound")

    return Handler


class HubServer:
    """`with HubServer() as server:` serves `server.hub` at `server.endpoint` from a thread."""

    def __init__(self) -> None:
        self.hub = Hub()
        self._endpoint: list[str] = [""]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub, self._endpoint))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._endpoint[0] = self.endpoint
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
