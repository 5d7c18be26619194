"""Find the files of an official corpus in a folder, in its archives, or in both.

Users keep the archives they downloaded, or unpack them, or have a mix. Files are looked
up by base name: first anywhere under the folder, then inside the archives, which are
read once, sequentially (a gzip stream cannot seek cheaply), extracting only the members
needed into a scratch folder.
"""
import shutil
import tarfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from .errors import InputError


def find_in_folder(folder: Path, basenames: Iterable[str]) -> Dict[str, Path]:
    """The files under ``folder`` (any depth) with the wanted base names."""
    found = {}
    for name in basenames:
        matches = sorted(path for path in folder.rglob(name) if path.is_file())
        if matches:
            found[name] = matches[0]
    return found


def extract_from_archive(archive: Path, basenames: Iterable[str], scratch: Path) -> Dict[str, Path]:
    """Extract the members with the wanted base names into ``scratch``, in one pass."""
    wanted, found = set(basenames), {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted and name not in found:
                    with tar.extractfile(member) as source, open(scratch / name, "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
                    found[name] = scratch / name
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, OSError) as error:
        raise InputError(archive, f"cannot read the archive ({error})") from None
    return found


def locate_files(
    root: Path,
    basenames: Sequence[str],
    scratch: Path,
    archive_names: Sequence[str] = (),
    layout: Optional[str] = None,
) -> Dict[str, Path]:
    """Map each base name to a readable file.

    ``root`` is a tar archive, or a folder holding the files and/or the archives named in
    ``archive_names``. A missing file is an :class:`InputError` that names where it was
    looked for, and ``layout`` (a description of the expected archive) if given.
    """
    root = Path(root)
    if root.is_dir():
        found = find_in_folder(root, basenames)
        archives = [root / name for name in archive_names if (root / name).is_file()]
    elif root.is_file():
        if not tarfile.is_tarfile(root):
            raise InputError(root, "not a folder or a tar archive")
        found, archives = {}, [root]
    else:
        raise InputError(root, "no such file or folder")
    for archive in archives:
        missing = [name for name in basenames if name not in found]
        if not missing:
            break
        found.update(extract_from_archive(archive, missing, scratch))
    missing = [name for name in basenames if name not in found]
    if missing:
        searched = ""
        if root.is_dir() and archives:
            searched = f" (searched the folder and {', '.join(archive.name for archive in archives)})"
        hint = f"; expected {layout}" if layout else ""
        raise InputError(root, f"missing {missing[0]}{searched}{hint}")
    return found
