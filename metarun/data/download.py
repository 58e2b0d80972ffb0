"""Fetching a dataset's files: with progress, checked against their published checksums, and
never half-written (a failed download leaves nothing where the data belongs)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("metarun")


def download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` with progress, verify its MD5, then move it to ``dest``. The download goes
    to a temporary file elsewhere, so a failed one creates no folder under ``data.root``."""
    digest = hashlib.md5()
    log.info("downloading %s to %s", url, dest)
    fd, tmp = tempfile.mkstemp(suffix=f".{dest.name}.part")
    part = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            with byte_progress(dest.name, total, sys.stderr.isatty()) as advance:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    f.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
        if digest.hexdigest() != md5:
            raise OSError(f"checksum mismatch: got md5 {digest.hexdigest()}, expected {md5}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(part, dest)
    finally:
        part.unlink(missing_ok=True)


@contextmanager
def byte_progress(label: str, total: int, live: bool) -> Iterator[Callable[[int], None]]:
    """Progress of a download: yields ``advance(n_bytes)``; a rich bar on a terminal, else a
    log line every 10%."""
    if live:
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        with Progress(*Progress.get_default_columns(), DownloadColumn(),
                      TransferSpeedColumn()) as progress:
            task = progress.add_task(label, total=total or None)
            yield lambda n: progress.advance(task, n)
        return
    done, next_report = 0, 0.1

    def advance(n: int) -> None:
        nonlocal done, next_report
        done += n
        if total and done / total >= next_report:
            log.info("%s: %d%% of %.1f MB", label, 100 * done // total, total / 1e6)
            next_report += 0.1

    yield advance
