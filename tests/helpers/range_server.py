"""A small HTTP server on 127.0.0.1 that serves the files of one folder with ``Range`` support (what GDAL's
``/vsicurl/`` asks for) and counts what it sends: requests, body bytes, and the paths asked for.

``with RangeServer(folder) as server: server.url("scene.tif")``; ``server.bytes_sent`` / ``server.requests`` /
``server.paths`` / ``server.calls`` (``(method, path)`` of each request) afterwards, ``server.reset()`` in
between. A missing file is a 404; a path listed in
``server.status`` gets that status instead (e.g. 500). Only single ranges are served (GDAL asks for one range a
request unless told otherwise); no directory listings.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeServer:
    """Files of ``root`` over HTTP/1.1 at ``http://127.0.0.1:<port>/<name>``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.status: dict[str, int] = {}
        self._lock = threading.Lock()
        self.reset()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, body: bool) -> None:
                name = unquote(urlsplit(self.path).path).lstrip("/")
                server._record(name, 0, self.command)
                path = (server.root / name).resolve()
                code = server.status.get(name)
                if code is None and (server.root not in path.parents or not path.is_file()):
                    code = 404
                if code is not None:
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                size, status, start, end = len(data), 200, 0, len(data) - 1
                found = _RANGE.match(self.headers.get("Range", "").strip())
                if found and (found.group(1) or found.group(2)):
                    if found.group(1):
                        start = int(found.group(1))
                        end = min(int(found.group(2)), size - 1) if found.group(2) else size - 1
                    else:  # the last N bytes
                        start = max(0, size - int(found.group(2)))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                piece = data[start : end + 1]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(len(piece)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/json" if name.endswith(".json") else "image/tiff")
                self.end_headers()
                if body:  # counted before it is sent: a client may have it all before write() returns
                    server._record(None, len(piece))
                    self.wfile.write(piece)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _record(self, name: str | None, sent: int, method: str = "") -> None:
        with self._lock:
            if name is not None:
                self.requests += 1
                self.paths.append(name)
                self.calls.append((method, name))
            self.bytes_sent += sent

    def reset(self) -> None:
        """Start counting again."""
        with self._lock:
            self.requests, self.bytes_sent, self.paths, self.calls = 0, 0, [], []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> RangeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
