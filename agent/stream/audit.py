"""An append-only audit log for ``dw serve --audit-log PATH``: one JSON object a line.

Events: ``start`` and ``stop`` (the server, with its counters at stop), ``connect`` (client id, peer
address, role, format), ``refused`` (a handshake refused: address, HTTP status, reason, path — never
the token), ``close`` (the server closed a client: why) and ``disconnect`` (with that client's action,
error, frame and drop counts). Every line has ``t`` (Unix seconds) and ``event``.

The file is opened in append mode (``O_APPEND``: lines from this server never overwrite earlier ones),
created readable by its owner only, and flushed per line. A write that fails (disk full) is logged once
and the server goes on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("dw.stream.audit")


class AuditLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._f = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._failed = False
        self.lines = 0

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 6), "event": event, **fields}, default=str,
                          separators=(",", ":"))
        with self._lock:
            if self._f.closed:
                return
            try:
                self._f.write(line + "\n")
                self._f.flush()
                self.lines += 1
            except (OSError, ValueError) as e:
                if not self._failed:
                    self._failed = True
                    log.error("audit log %s: cannot write (%s); going on without it", self.path, e)

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                try:
                    self._f.close()
                except OSError:
                    pass
