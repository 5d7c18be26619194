"""``--download``: fetch an official archive when the machine is online.

Nothing else in the package touches the network, and the tests never call this with a
remote address.
"""
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from .errors import PrepareError

TIMEOUT_SECONDS = 60


def download(url: str, destination: Path) -> Path:
    """Fetch ``url`` into ``destination`` unless it is already there.

    The bytes go to ``destination.part`` first and are renamed when complete, so that an
    interrupted download is never mistaken for an archive.
    """
    destination = Path(destination)
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    print(f"| download {url} -> {destination}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise PrepareError(f"cannot download {url}: {reason} (is this machine online?)") from None
    partial.rename(destination)
    return destination
