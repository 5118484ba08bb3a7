"""`python -m bench callbacks`: completion callbacks delivered to a local receiver (issue 12).

In-process on a throw-away PostgreSQL database (BENCH_CALLBACKS_DB=sqlite for a file): a
project with a callback URL on a local HTTP server (http.server, threaded, answering 204), a
batch of BENCH_TRANSITIONS (5,000) requests created and anonymised (each `in_grace` transition
goes to the outbox in its own transaction), then `CallbackService.deliver` run back to back
until the outbox is empty, timed. Checks: every transition received exactly once here (no
failure injected), every signature valid.

Target: >= 1,000 transitions/s delivered (issue 12).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.harness import env_int, exit_on_sigterm, in_process, new_project

SECRET = b"bench-callbacks-secret-00000000000000000000"
TARGET = 1_000.0  # transitions/s


def main() -> int:
    size = env_int("BENCH_TRANSITIONS", 5_000)
    db_kind = os.environ.get("BENCH_CALLBACKS_DB", "postgresql").strip().lower() or "postgresql"
    exit_on_sigterm()

    from app.domain import webhooks as hooks
    from app.domain.requests import Mode

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the sender reuses its connection

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/callbacks"
    print(f"data:   {size:,} transitions (in_grace) to a local receiver, SQL {db_kind}")
    print(f"target: >= {TARGET:,.0f} transitions/s delivered", flush=True)
    try:
        with in_process("lethe-bench-callbacks", db_kind, SECRET) as container:
            project_id = new_project(container, "bench")
            secret = container.callbacks.register(project_id, url, actor="partner:bench").callback_secret
            container.batches.submit(project_id, [f"cb-user-{i}" for i in range(size)], Mode.GRACE, None,
                                     actor="partner:bench")
            container.erasure.anonymise(datetime.now(UTC))
            started = time.perf_counter()
            runs = 0
            while container.callbacks.deliver(datetime.now(UTC)).processed:
                runs += 1
            took = time.perf_counter() - started
    finally:
        server.shutdown()
    key = hooks.SigningKey(hooks.signing_key(secret))
    bad = 0
    for headers, body in received:
        try:
            hooks.verify(hooks.parse_headers(headers), body, [key], datetime.now(UTC))
        except hooks.WebhookAuthError:
            bad += 1
    ids = {h["webhook-id"] for h, _ in received}
    rate = len(received) / took if took else 0.0
    ok = len(received) == size and len(ids) == size and bad == 0
    print(f"  delivered {len(received):,} in {took:.2f} s over {runs} runs: {rate:,.0f} transitions/s; "
          f"distinct webhook-ids {len(ids):,}; bad signatures {bad}: {'ok' if ok else 'FAIL'}")
    print(f"  target >= {TARGET:,.0f}/s: {'PASS' if rate >= TARGET else 'MISS'} ({rate:,.0f}/s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
