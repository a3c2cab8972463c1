"""Files only the gateway's own user may open: the SQLite store holds every tenant's prompts and
answers, and ``./var`` the local API and admin keys.

Directories the gateway creates are 700 and its files 600 whatever the umask, and a file is
created with that mode, so there is no moment another user could open it. A directory that
already exists is left as it is: the user chose it (``/tmp``, a home directory) and owns its mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("gateway.files")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents as 700; directories that exist keep their mode."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # another gateway process made it at the same moment
            continue
        directory.chmod(PRIVATE_DIR)  # mkdir's mode went through the umask


def restrict_file(path: Path) -> None:
    """Make an existing file 600 (one made by an older version or under another umask)."""
    try:
        os.chmod(path, PRIVATE_FILE)
    except FileNotFoundError:
        pass
    except PermissionError:  # not ours: say so rather than refuse to start
        log.warning("cannot make %s private (mode 600): it belongs to another user", path)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty as 600 unless it exists, then make sure it is 600."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    restrict_file(path)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (created 600 in a private directory), replacing what it held."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, PRIVATE_FILE)  # an older file kept its mode through O_CREAT
        out.write(text)
