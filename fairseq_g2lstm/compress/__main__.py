"""``python -m fairseq_g2lstm.compress``: the same as ``g2lstm-compress``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
