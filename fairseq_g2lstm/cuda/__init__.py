"""The fused CUDA G2 gate kernel (not built yet): every path falls back to torch."""
import warnings


def cuda_sequence_runner(required: bool):
    """The CUDA sequence runner, or None to use the torch path."""
    message = "the fused CUDA gate kernel is not available in this build; using the torch path"
    if required:
        raise RuntimeError(f"--gate-kernel cuda: {message}")
    warnings.warn(message)
    return None
