"""The gate math: noise law, modes, and the hand-written derivative."""
import math

import pytest
import torch

from fairseq_g2lstm.gates import (
    LOGISTIC_EPS, GateConfig, GateSpec, activate_gates, gate_preact_grad, gate_slice,
    logistic_noise, sample_gate_noise,
)

H = 8


def clamped_logistic_moments(eps=LOGISTIC_EPS, n=2_000_001):
    """Mean and variance of log(U+eps) - log(1-U+eps) by midpoint quadrature."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    values = logistic_noise(u, eps)
    return values.mean().item(), values.pow(2).mean().item()


def test_logistic_noise_has_mean_zero_and_clamped_logistic_variance():
    torch.manual_seed(0)
    noise = sample_gate_noise((400_000,), 1.0, dtype=torch.float64)
    _, expected_var = clamped_logistic_moments()
    assert expected_var < math.pi ** 2 / 3  # the eps clamp trims the tails a little
    assert expected_var > 0.95 * math.pi ** 2 / 3  # by about 4% at eps = 1e-3
    assert abs(noise.mean().item()) < 0.02
    assert noise.var().item() == pytest.approx(expected_var, rel=0.02)
    assert noise.abs().max().item() <= math.log((1 + LOGISTIC_EPS) / LOGISTIC_EPS) + 1e-9


def assert_noise_law(noise: torch.Tensor, p: float) -> None:
    """The statistical check of ``B * L`` draws: the share of noised (non-zero) elements is
    p, and those follow the clamped logistic law (mean, second moment, bound, and a
    Kolmogorov-Smirnov distance to its exact CDF)."""
    n = noise.numel()
    noised = noise[noise != 0].double()
    assert noised.numel() / n == pytest.approx(p, abs=5 * math.sqrt(max(p * (1 - p), 1e-12) / n))
    if p == 0.0:
        return
    mean, second_moment = clamped_logistic_moments()
    bound = 5 * math.sqrt(second_moment / noised.numel())
    assert abs(noised.mean().item() - mean) < bound
    assert noised.pow(2).mean().item() == pytest.approx(second_moment, rel=0.03 if p < 0.1 else 0.015)
    assert noised.abs().max().item() <= math.log((1 + LOGISTIC_EPS) / LOGISTIC_EPS) + 1e-9
    # Kolmogorov-Smirnov against the exact CDF: L(u) is increasing, so P(L <= l) = u(l).
    values = noised.sort().values
    e = values.exp()
    cdf = ((e * (1 + LOGISTIC_EPS) - LOGISTIC_EPS) / (1 + e)).clamp(0, 1)
    steps = torch.arange(1, values.numel() + 1, dtype=torch.float64) / values.numel()
    distance = torch.maximum(steps - cdf, cdf - (steps - 1 / values.numel())).max().item()
    assert distance < 1.95 / math.sqrt(values.numel())  # the 0.1% critical value


@pytest.mark.parametrize("p", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_share_and_law_of_noised_elements_for_any_p(p):
    """B ~ Bernoulli(p) picks the noised elements; those follow the clamped logistic law,
    whatever p (one uniform draws both B and L, so a wrong rescaling of v would show)."""
    torch.manual_seed(1)
    assert_noise_law(sample_gate_noise((1_000_000,), p, dtype=torch.float64), p)


def wrong_samplers(n: int, p: float):
    """Samplers with one deliberate mistake each, drawn from the same kind of uniforms."""
    v = torch.rand(n, dtype=torch.float64)
    w = torch.rand(n, dtype=torch.float64)
    keep = lambda mask, values: torch.where(mask, values, torch.zeros_like(values))  # noqa: E731
    return {
        "mask probability 5% high": keep(v < 1.05 * p, logistic_noise(w)),
        "mask probability 5% low": keep(v < 0.95 * p, logistic_noise(w)),
        "u = v, not rescaled by p": keep(v < p, logistic_noise(v)),
        "u in [0, 0.9)": keep(v < p, logistic_noise(0.9 * w)),
        "logistic without the eps clamp": keep(v < p, logistic_noise(w, eps=1e-12)),
        "logistic scaled by 1.1": keep(v < p, 1.1 * logistic_noise(w)),
        "Gaussian with the logistic's variance, clamped to its bound": keep(
            v < p, (torch.randn(n, dtype=torch.float64) * math.sqrt(clamped_logistic_moments()[1]))
            .clamp(-math.log(1 / LOGISTIC_EPS), math.log(1 / LOGISTIC_EPS))),
    }


@pytest.mark.parametrize("mistake", list(wrong_samplers(10, 0.2)))
def test_the_statistical_check_rejects_a_wrong_sampler(mistake):
    """The law check above can fail: each deliberately wrong sampler is rejected, while the
    right one built from the same kind of draws passes."""
    torch.manual_seed(7)
    n, p = 1_000_000, 0.2
    with pytest.raises(AssertionError):
        assert_noise_law(wrong_samplers(n, p)[mistake], p)
    v, w = torch.rand(n, dtype=torch.float64), torch.rand(n, dtype=torch.float64)
    assert_noise_law(torch.where(v < p, logistic_noise(w), torch.zeros_like(w)), p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.05, 0.2, 1.0])
def test_noise_is_the_documented_function_of_torchs_uniforms(dtype, p):
    """B = 1[v < p] and L = logistic_noise(1 - v / p) from one seeded torch.rand draw:
    the mask exactly, the values to the draw dtype's rounding."""
    torch.manual_seed(11)
    v = torch.rand(200_000, dtype=dtype)
    torch.manual_seed(11)
    noise = sample_gate_noise((200_000,), p, dtype=dtype)
    expected = torch.where(v < p, logistic_noise(1 - v / p), torch.zeros_like(v))
    assert torch.equal(noise != 0, v < p)
    assert torch.allclose(noise, expected, rtol=0, atol=1e-10 if dtype == torch.float64 else 2e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("p", [0.2, 1.0])
def test_low_precision_noise_is_finite_with_the_right_share_and_law(dtype, p):
    """Drawing in bf16 once gave NaN (eps - 1 rounds to -1, L(1) = inf, inf * 0 = NaN);
    low precision may change nothing but the final rounding."""
    torch.manual_seed(3)
    n = 400_000
    noise = sample_gate_noise((n,), p, dtype=dtype)
    assert noise.dtype == dtype
    assert torch.isfinite(noise).all()
    noised = noise[noise != 0].double()
    assert noised.numel() / n == pytest.approx(p, abs=5 * math.sqrt(max(p * (1 - p), 1e-12) / n))
    _, second_moment = clamped_logistic_moments()
    assert abs(noised.mean().item()) < 5 * math.sqrt(second_moment / noised.numel())
    assert noised.pow(2).mean().item() == pytest.approx(second_moment, rel=0.03)
    # The same draws as in float32, rounded: nothing but the final cast differs.
    torch.manual_seed(3)
    assert torch.equal(noise, sample_gate_noise((n,), p, dtype=torch.float32).to(dtype))


def test_noise_follows_torch_manual_seed():
    torch.manual_seed(5)
    a = sample_gate_noise((3, 4, 2 * H), 0.2)
    torch.manual_seed(5)
    b = sample_gate_noise((3, 4, 2 * H), 0.2)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # every step gets its own draws


def test_only_input_and_forget_gates_see_noise():
    a = torch.randn(5, 4 * H)
    spec = GateSpec(inv_temperature=1 / 0.9, noise_prob=0.2)
    quiet = activate_gates(a, spec, None)
    loud = activate_gates(a, spec, torch.full((5, 2 * H), 3.0))
    for name in "go":
        assert torch.equal(quiet[:, gate_slice(name, H)], loud[:, gate_slice(name, H)])
    for name in "if":
        assert (loud[:, gate_slice(name, H)] > quiet[:, gate_slice(name, H)]).all()


def test_gumbel_gate_formula():
    a = torch.randn(6, 4 * H, dtype=torch.float64)
    noise = torch.randn(6, 2 * H, dtype=torch.float64)
    tau = 0.9
    gates = activate_gates(a, GateConfig("gumbel", tau).resolve(training=True), noise)
    assert torch.allclose(gates[:, : 2 * H], torch.sigmoid((a[:, : 2 * H] + noise) / tau))
    assert torch.allclose(gates[:, gate_slice("g", H)], torch.tanh(a[:, gate_slice("g", H)]))
    assert torch.allclose(gates[:, gate_slice("o", H)], torch.sigmoid(a[:, gate_slice("o", H)]))


@pytest.mark.parametrize("training", [True, False])
def test_sharpened_mode_is_sigmoid_of_a_over_tau_in_train_and_eval(training):
    a = torch.randn(6, 4 * H, dtype=torch.float64)
    spec = GateConfig("sharpened").resolve(training)
    assert spec.noise_prob == 0.0
    gates = activate_gates(a, spec)
    assert torch.allclose(gates[:, : 2 * H], torch.sigmoid(a[:, : 2 * H] / 0.2))


def test_eval_is_plain_sigmoid_and_hard_eval_is_a_step():
    a = torch.randn(6, 4 * H)
    soft = activate_gates(a, GateConfig("gumbel").resolve(training=False))
    assert torch.equal(soft, activate_gates(a, GateSpec()))
    assert torch.allclose(soft[:, : 2 * H], torch.sigmoid(a[:, : 2 * H]))
    hard = activate_gates(a, GateConfig("gumbel", eval_mode="hard").resolve(training=False))
    assert torch.equal(hard[:, : 2 * H], (a[:, : 2 * H] >= 0).float())
    assert torch.equal(hard[:, 2 * H:], soft[:, 2 * H:])


def test_mode_defaults():
    assert GateConfig("gumbel").resolve(True) == GateSpec(1 / 0.9, 0.2, False)
    assert GateConfig("sharpened").resolve(True) == GateSpec(1 / 0.2, 0.0, False)
    assert GateConfig("plain").resolve(True) == GateSpec()
    assert GateConfig("gumbel").resolve(False) == GateSpec()


@pytest.mark.parametrize("kwargs, flag", [
    ({"mode": "foo"}, "--gate-mode"), ({"noise_prob": 1.5}, "--gate-noise-prob"),
    ({"temperature": 0.0}, "--gate-temperature"), ({"eval_mode": "x"}, "--gate-eval"),
])
def test_bad_gate_flags_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        GateConfig(**kwargs)


@pytest.mark.parametrize("spec", [GateSpec(), GateSpec(1 / 0.9, 0.2), GateSpec(1 / 0.2), GateSpec(hard=True)])
def test_in_place_activation_matches_the_differentiable_one(spec):
    a = torch.randn(5, 4 * H)
    noise = sample_gate_noise((5, 2 * H), 0.5) if spec.noisy else None
    expected = activate_gates(a, spec, noise)
    buf = a.clone()
    activate_gates(buf, spec, noise, out=buf)
    assert torch.allclose(buf, expected, atol=1e-7)


@pytest.mark.parametrize("spec", [GateSpec(), GateSpec(1 / 0.9, 0.2), GateSpec(1 / 0.2)])
def test_gate_derivative_from_saved_gates_equals_autograd(spec):
    a = torch.randn(5, 4 * H, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(5, 2 * H, dtype=torch.float64) if spec.noisy else None
    gates = activate_gates(a, spec, noise)
    upstream = torch.randn_like(gates)
    (expected,) = torch.autograd.grad(gates, a, upstream)
    assert torch.allclose(gate_preact_grad(upstream, gates.detach(), spec), expected, atol=1e-12)
