"""A secret kept in a file that every process on the machine shares (0600).

The first process to need it creates it: the secret is written to a private temporary file
and `link(2)`ed into place, which is atomic, so of two processes starting at once exactly
one secret wins and both read it. No imports from the rest of the project, so
`core.config` can use it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)
                   ) -> str:
    """The secret in `path`, created with `make()` (mode 0600) when the file is missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(make() + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()
