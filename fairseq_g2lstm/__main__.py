"""``g2lstm-user-dir`` (also ``python -m fairseq_g2lstm``): print the folder of the
installed package, for fairseq's ``--user-dir``.

fairseq imports a plugin from a folder path, so ``--user-dir fairseq_g2lstm`` only works
from the repository's root; from anywhere else fairseq fails much later, with a long
unpickling error when it meets a g2lstm checkpoint. This prints the absolute path::

    fairseq-generate data-bin --user-dir "$(g2lstm-user-dir)" --path checkpoint_best.pt
"""
import os
import sys
from typing import Optional, Sequence

from .cli_args import OneLineParser

PROG = "g2lstm-user-dir"


def package_dir() -> str:
    """The absolute folder of this package, as fairseq's ``--user-dir`` wants it."""
    return os.path.dirname(os.path.abspath(__file__))


def main(argv: Optional[Sequence[str]] = None) -> int:
    OneLineParser(prog=PROG, description="Print the folder to pass to fairseq's --user-dir, e.g. "
                                         "fairseq-train ... --user-dir \"$(g2lstm-user-dir)\".").parse_args(argv)
    print(package_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
