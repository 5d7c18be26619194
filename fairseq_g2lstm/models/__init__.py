"""fairseq models; importing this package registers them."""
from .g2lstm import G2LSTMModel  # noqa: F401
from .g2lstm_lm import G2LSTMLanguageModel  # noqa: F401
