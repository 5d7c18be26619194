"""fairseq models; importing this package registers them."""
from .g2lstm import G2LSTMModel  # noqa: F401
