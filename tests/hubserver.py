"""A local HTTP server laid out like the Hugging Face Hub's file endpoint, for huggingface_hub's
``hf_hub_download`` (pointed at it with ``HF_ENDPOINT``): ``HEAD`` and ``GET`` of
``/{org}/{name}/resolve/{revision}/{filename}`` answer with the headers the hub sends (``X-Repo-Commit``,
``ETag``, ``Content-Length``), and a missing file or repository with the hub's error codes."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubServer:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos  # {"org/name": {filename: content}}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.truncate: set[str] = set()  # "org/name/filename": send half the body after a full Content-Length
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body: bool):
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self.fail(404, "RepoNotFound")
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self.fail(404, "RepoNotFound")
                if filename not in hub.repos[repo]:
                    return self.fail(404, "EntryNotFound")
                content = hub.repos[repo][filename]
                self.send_response(200)
                self.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if body:
                    cut = f"{repo}/{filename}" in hub.truncate
                    self.wfile.write(content[: len(content) // 2] if cut else content)

            def fail(self, status: int, code: str):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self, filename: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))


class FileServer(HubServer):
    """Plain files at fixed paths, as a release server such as ml-cvnets' (docs-assets.developer.apple.com)
    lays them out: ``GET /ml-research/models/cvnets/classification/mobilevit_xxs.pt``."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files  # {"/path/file.pt": content}
        super().__init__({})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.command, self.path))
                content = server.files.get(self.path)
                if content is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content[: len(content) // 2] if self.path in server.truncate else content)

        self.server.RequestHandlerClass = Handler
