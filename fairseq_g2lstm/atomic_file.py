"""Output files that appear whole or not at all.

A tool killed half-way through writing its report (or a full disk) must not leave a
truncated JSON or PNG under the name a later step reads. The data goes to a hidden
temporary file in the destination's folder (the same file system, so the final
``os.replace`` is atomic), is flushed to disk, and only then takes the destination's
name; any failure removes the temporary file. Folders have the same guarantee in
:mod:`fairseq_g2lstm.data.atomic_dir`.
"""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, os.PathLike]


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a stream whose contents become ``path`` only when the block ends without error.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. Missing parent folders are created; an
    existing ``path`` is replaced. The file gets the permissions ``open(path, "w")`` would
    give (``mkstemp`` alone gives 0600).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    with atomic_file(path) as stream:
        stream.write(text)
    return Path(path)
