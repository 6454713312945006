"""A minimal local stand-in for the Hugging Face Hub HTTP API, for tests.

Enough of the API for huggingface_hub 2.4's own client code to create model repos, push folders with
``HfApi.upload_folder`` / ``create_commit`` and fetch them back with ``snapshot_download`` /
``hf_hub_download``::

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)          # conftest sets HF_HUB_OFFLINE=1
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no user-agent probe of huggingface.co
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.url, token="fake")
        api.create_repo("me/model", exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id="me/model")
        path = snapshot_download("me/model", cache_dir=tmp_path, endpoint=hub.url, token="fake")

Pass ``endpoint=hub.url`` to every call: ``HF_ENDPOINT`` is read once, when huggingface_hub is imported.

Storage is in memory. Every file is stored as a plain git blob: the preupload endpoint answers
``"uploadMode": "regular"`` for every file, so contents come base64-encoded inside the commit's NDJSON
and neither LFS nor Xet is ever used (uploads and downloads stay on this server). Only model repos and
the ``main`` branch exist; revisions are ``main`` or a full 40-hex commit sha. Tokens are accepted and
ignored, and private repos are recorded but not hidden. A repo has no commit until its first push
(the real Hub adds an initial ``.gitattributes`` commit), so downloading an empty repo is a 404.
Whatever is not implemented answers a JSON 404 or 501 rather than hanging.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub"]

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"  # "name" or "namespace/name"
_API = re.compile(r"/api/(?P<kind>models|datasets|spaces|kernels)/" + _REPO
                  + r"(?:/(?P<action>revision|tree|preupload|commit)/(?P<rest>.*))?")
_RESOLVE = re.compile(_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<file>.+)")


def git_blob_sha(data):
    """The git object id of a file (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error answer; `code` becomes the X-Error-Code header that huggingface_hub maps to an exception."""

    def __init__(self, status, message, code=None, headers=None, extra=None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.payload = {"error": message, **(extra or {})}


class FakeHub:
    """A Hub on 127.0.0.1 in a background thread. `repos`: repo_id -> {"private", "commits"}, where each
    commit is {"sha", "message", "files"} and "files" is the full tree {path: bytes} after that commit."""

    def __init__(self):
        self.repos = {}
        self.url = None
        self._lock = threading.Lock()
        self._server = self._thread = None

    def __enter__(self):
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def files(self, repo_id, revision=None):
        """The full tree {path: bytes} at `revision` (default: the latest commit)."""
        return dict(self._commit(repo_id, revision or "main")["files"])

    # -- storage ----------------------------------------------------------------------------------------

    def _repo(self, repo_id):
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id!r} not found", "RepoNotFound")
        return self.repos[repo_id]

    def _commit(self, repo_id, revision):
        commits = self._repo(repo_id)["commits"]
        if revision == "main" and commits:
            return commits[-1]
        for commit in commits:
            if commit["sha"] == revision:
                return commit
        reason = "the repository has no commit yet" if revision == "main" else "only 'main' and full commit shas"
        raise HubError(404, f"Revision {revision!r} not found in {repo_id!r} ({reason})", "RevisionNotFound")

    def _create(self, payload):
        name, org = payload.get("name"), payload.get("organization")
        if not name:
            raise HubError(400, "'name' is required")
        if payload.get("type", "model") != "model":
            raise HubError(501, "FakeHub only implements model repos")
        repo_id = f"{org}/{name}" if org else name
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        with self._lock:
            if repo_id in self.repos:
                # the client reads "url" from this 409 body when create_repo(exist_ok=True)
                raise HubError(409, f"You already created this model repo: {repo_id}",
                               extra={"url": f"{self.url}/{repo_id}"})
            self.repos[repo_id] = {"private": private, "commits": []}
        return {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def _apply_commit(self, repo_id, revision, lines):
        if revision != "main":
            raise HubError(501, "FakeHub only commits to the 'main' branch")
        header, ops = None, []
        for line in lines:
            if line.strip():
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                else:
                    ops.append((item["key"], item["value"]))
        if header is None:
            raise HubError(400, "commit payload has no header line")
        with self._lock:
            commits = self._repo(repo_id)["commits"]
            parent = commits[-1]["sha"] if commits else None
            if header.get("parentCommit") not in (None, parent):
                raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of main ({parent})")
            tree = dict(commits[-1]["files"]) if commits else {}
            for key, value in ops:
                path = value["path"]
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    tree[path] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for name in [p for p in tree if p.startswith(prefix)]:
                        del tree[name]
                else:  # lfsFile: this hub never asks for LFS uploads, so it holds no LFS object to point to
                    raise HubError(501, f"FakeHub does not implement {key!r} commit operations")
            message = header.get("summary") or ""
            digest = hashlib.sha1(json.dumps([repo_id, parent, len(commits), message,
                                              sorted((p, git_blob_sha(d)) for p, d in tree.items())]).encode())
            sha = digest.hexdigest()
            commits.append({"sha": sha, "message": message, "files": tree})
        return {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                "commitMessage": message, "pullRequestUrl": None, "success": True}

    # -- read endpoints ---------------------------------------------------------------------------------

    def _info(self, repo_id, revision=None):
        """model_info: with no revision an empty repo answers "sha": None; an explicit one must exist."""
        empty = revision is None and not self._repo(repo_id)["commits"]
        commit = {"sha": None, "files": {}} if empty else self._commit(repo_id, revision or "main")
        return {"id": repo_id, "modelId": repo_id, "sha": commit["sha"], "private": self.repos[repo_id]["private"],
                "siblings": [{"rfilename": p, "size": len(d), "blobId": git_blob_sha(d)}
                             for p, d in sorted(commit["files"].items())]}

    def _tree(self, repo_id, revision, path, recursive):
        files = self._commit(repo_id, revision)["files"]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries = {}

        def add_folder(folder):
            entries[folder] = {"type": "directory", "path": folder, "size": 0,
                               "oid": hashlib.sha1(folder.encode()).hexdigest()}

        for name, data in files.items():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            if not recursive and len(parts) > 1:
                add_folder(prefix + parts[0])
                continue
            for depth in range(1, len(parts)):
                add_folder(prefix + "/".join(parts[:depth]))
            entries[name] = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha(data)}
        if prefix and not entries:
            raise HubError(404, f"{path!r} not found at {revision!r}", "EntryNotFound")
        return [entries[k] for k in sorted(entries)]

    def _preupload(self, repo_id, revision, payload):
        if revision != "main":
            raise HubError(501, "FakeHub only commits to the 'main' branch")
        commits = self._repo(repo_id)["commits"]
        tree = commits[-1]["files"] if commits else {}
        # "regular" => the client inlines the bytes (base64) in the commit NDJSON: no LFS / Xet round trip.
        # "oid" of an existing file lets the client skip files that did not change, as the real Hub does.
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": git_blob_sha(tree[f["path"]]) if f["path"] in tree else None}
                          for f in payload.get("files", [])]}


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    server_version = "FakeHub/1.0"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PATCH(self):
        self._handle("PATCH")

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self, method):
        body = self._body()  # always drain the request before answering
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._route(method, url.path, query, body)
        except HubError as err:
            self._send_json(err.status, err.payload, code=err.code, headers=err.headers)
        except Exception as err:  # a bug here should be a clear 500, not a hung client
            self._send_json(500, {"error": f"FakeHub failed: {err!r}"})

    def _route(self, method, path, query, body):
        hub = self.hub
        if (method, path) == ("POST", "/api/repos/create"):
            return self._send_json(200, hub._create(json.loads(body or b"{}")))
        if (method, path) == ("POST", "/api/validate-yaml"):
            return self._send_json(200, {"errors": [], "warnings": []})
        match = _API.fullmatch(path)
        if match:
            if match["kind"] != "models":
                raise HubError(501, f"FakeHub only implements model repos, not {match['kind']}")
            repo_id, action, rest = match["repo"], match["action"], match["rest"]
            revision, _, sub = (rest or "").partition("/")
            revision = unquote(revision)
            if method == "GET" and action is None:
                return self._send_json(200, hub._info(repo_id))
            if method == "GET" and action == "revision":
                return self._send_json(200, hub._info(repo_id, unquote(rest)))
            if method == "GET" and action == "tree":
                recursive = query.get("recursive", "false").lower() in ("1", "true")
                return self._send_json(200, hub._tree(repo_id, revision, unquote(sub), recursive))
            if method == "POST" and action == "preupload":
                return self._send_json(200, hub._preupload(repo_id, revision, json.loads(body)))
            if method == "POST" and action == "commit":
                if query.get("create_pr") in ("1", "true"):
                    raise HubError(501, "FakeHub does not implement pull requests")
                return self._send_json(200, hub._apply_commit(repo_id, revision, body.decode().splitlines()))
        match = _RESOLVE.fullmatch(path.lstrip("/"))
        if match and method in ("GET", "HEAD"):
            return self._send_file(method, match["repo"], unquote(match["rev"]), unquote(match["file"]))
        raise HubError(404 if method in ("GET", "HEAD") else 501, f"FakeHub does not implement {method} {path}")

    def _send_file(self, method, repo_id, revision, filename):
        commit = self.hub._commit(repo_id, revision)
        headers = {"X-Repo-Commit": commit["sha"]}
        if filename not in commit["files"]:
            raise HubError(404, f"{filename!r} not found at {revision!r}", "EntryNotFound", headers)
        data = commit["files"][filename]
        headers["ETag"] = f'"{git_blob_sha(data)}"'
        headers["Accept-Ranges"] = "bytes"
        status, start, end = 200, 0, len(data)
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and method == "GET" and int(ranged[1]) < len(data):
            start, end = int(ranged[1]), min(int(ranged[2] or len(data) - 1) + 1, len(data))
            status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{len(data)}"
        self._send(status, data[start:end], "application/octet-stream", headers, head=method == "HEAD")

    def _send_json(self, status, payload, code=None, headers=None):
        headers = dict(headers or {})
        if code:
            headers["X-Error-Code"] = code
        if status >= 400:
            headers["X-Error-Message"] = " ".join(payload["error"].encode("ascii", "replace").decode().split())
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, status, data, content_type, headers, head=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)
