"""Secrets the embedded dev mode makes for itself on first use and keeps in files.

Several processes may start at once on the same home (`paysaga dev`'s API and worker, a test's
processes) and each would make a secret of its own: the file is written under another name and
linked into place, which fails for all but the first, so every process reads the same secret.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`; made by `make` and kept there, readable by its owner only, when
    there is none yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp makes the file readable and writable by its owner alone.
        handle, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "w") as out:
                # Exactly the secret, no newline: some readers (WeChat Pay SDKs reading the
                # APIv3 key) take a file's text as it is.
                out.write(make())
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process was first: its secret is the one
        finally:
            os.unlink(draft)
    return path.read_text().strip()
