#!/usr/bin/env python3
"""Command-line front end of fairseq_g2lstm.data.prepare_lm (see its docstring, or --help)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also works from a checkout

from fairseq_g2lstm.data.prepare_lm import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
