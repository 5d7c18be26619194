"""Output folders that appear whole or not at all.

Everything is written into a hidden temporary sibling of the destination, which is renamed
into place only after the last file is complete. A failed or interrupted run therefore
never leaves a half-written data-bin where fairseq would pick it up; an existing
destination is only replaced when the user passed ``--force``.
"""
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..atomic_file import current_umask
from .errors import PrepareError


def _default_folder_mode() -> int:
    """What ``mkdir`` would give under the current umask."""
    return 0o777 & ~current_umask()


def check_destination(destination: Path, force: bool) -> None:
    """Fail early, before any work, when the destination exists and may not be replaced."""
    if destination.exists() and not force:
        raise PrepareError(f"{destination} already exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_output_dir(destination: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``destination`` on normal exit."""
    destination = Path(destination)
    check_destination(destination, force)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    staging.chmod(_default_folder_mode())  # mkdtemp's 0700 would make the result private
    try:
        yield staging
        if destination.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
            destination.rename(retired / destination.name)
            staging.rename(destination)
            shutil.rmtree(retired)
        else:
            staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@contextlib.contextmanager
def scratch_dir(destination: Path) -> Iterator[Path]:
    """A temporary folder next to ``destination`` for intermediate files, removed on exit.

    Next to the destination rather than in /tmp: the intermediate text of a large corpus
    needs the space the user chose for the output, not the system's temporary space.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{destination.name}.inputs-", dir=destination.parent) as path:
        yield Path(path)
