"""``python -m fairseq_g2lstm.gate_stats``: the same command as ``g2lstm-gates``."""
from .cli import cli_main

if __name__ == "__main__":
    cli_main()
