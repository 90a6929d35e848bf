"""A local stand-in for the Hugging Face Hub (the hub cannot be reached here), enough for
huggingface_hub's `snapshot_download` pointed at it with HF_ENDPOINT.

The routes it answers are the ones snapshot_download and hf_hub_download use
(huggingface_hub/_snapshot_download.py, hf_api.py, file_download.py):

- GET /api/models/{repo}/revision/{rev}: the model's info, whose `sha` is the commit;
- GET /api/models/{repo}/tree/{rev}?recursive=...: the file listing (one page, no Link header);
- HEAD and GET /{repo}/resolve/{rev}/{file}: X-Repo-Commit, ETag (the file's sha256, as the hub
  gives LFS files) and Content-Length; GET honours `Range: bytes=N-` with a 206.

What it records for tests: each request's method, path, Range and Authorization header. A file
can be made to break off: its next GET sends `drop_after` bytes and closes the connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    repo_id: str
    files: dict[str, bytes]
    token: str | None = None  # when set, every request must carry `Bearer <token>`
    requests: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)  # file -> bytes to send before breaking off
    broken: set[str] = field(default_factory=set)  # files answered with a 500 (the hub failing)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ranges(self, name: str) -> list[str | None]:
        """The Range header of every GET of `name`."""
        return [
            r for method, path, r, _ in self.requests if method == "GET" and path.endswith(f"/resolve/{COMMIT}/{name}")
        ]

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeHub]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
                if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._json(401, {"error": "Invalid credentials"}, head)
                    return
                api = f"/api/models/{hub.repo_id}/"
                if path.startswith(api + "revision/"):
                    siblings = [{"rfilename": name} for name in hub.files]
                    self._json(
                        200, {"id": hub.repo_id, "modelId": hub.repo_id, "sha": COMMIT, "siblings": siblings}, head
                    )
                elif path.startswith(api + "tree/"):
                    self._json(200, [_tree_entry(name, data) for name, data in hub.files.items()], head)
                elif path.startswith(f"/{hub.repo_id}/resolve/"):
                    self._file(path.split("/resolve/", 1)[1].split("/", 1)[1], head)
                else:
                    self._json(404, {"error": f"no route {path}"}, head)

            def _json(self, status: int, body: object, head: bool) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _file(self, name: str, head: bool) -> None:
                if name in hub.broken:
                    self._json(500, {"error": "internal error"}, head)
                    return
                data = hub.files.get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and not head:
                    start = int(wanted.removeprefix("bytes=").split("-", 1)[0])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                drop = hub.drops.pop(name, None)
                if drop is not None:  # send part of it, then break off
                    self.wfile.write(data[start : start + drop])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)


def _tree_entry(name: str, data: bytes) -> dict[str, object]:
    sha256 = hashlib.sha256(data).hexdigest()
    return {
        "type": "file",
        "path": name,
        "size": len(data),
        "oid": hashlib.sha1(data).hexdigest(),
        "lfs": {"oid": sha256, "size": len(data), "pointerSize": 134},
    }
