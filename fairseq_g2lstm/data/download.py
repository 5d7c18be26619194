"""``--download``: fetch an official archive when the machine is online.

Nothing else in the package touches the network, and the tests never call this with a
remote address.
"""
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..atomic_file import atomic_file
from .errors import PrepareError

TIMEOUT_SECONDS = 60


def download(url: str, destination: Path) -> Path:
    """Fetch ``url`` into ``destination`` unless it is already there.

    The bytes go to a hidden temporary file first (:func:`~fairseq_g2lstm.atomic_file.atomic_file`)
    and take the name only when complete, so that an interrupted download is never
    mistaken for an archive.
    """
    destination = Path(destination)
    if destination.exists():
        return destination
    print(f"| download {url} -> {destination}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, \
                atomic_file(destination, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PrepareError(f"cannot download {url}: {reason} (is this machine online?)") from None
    return destination
