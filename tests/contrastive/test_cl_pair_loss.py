"""The paper's CL pair loss against the two-vector soft cross-entropy it is defined by."""

import pytest
import torch
import torch.nn.functional as F

from ctseg.contrastive.losses import cl_pair_loss


def _reference(cos: torch.Tensor, target: float, smoothing: float) -> torch.Tensor:
    """``−[(1 − t) log σ₀ + t log σ₁]``, ``σ = softmax([1 − s, s])``, ``s = (cos + 1) / 2``: the authors' form."""
    s = (cos + 1.0) / 2.0
    t = target * (1.0 - smoothing) + smoothing / 2.0
    log_sm = F.log_softmax(torch.stack([1.0 - s, s], dim=-1), dim=-1)
    return -((1.0 - t) * log_sm[..., 0] + t * log_sm[..., 1])


@pytest.mark.parametrize("target", [0.0, 1.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_logits_form_matches_the_soft_cross_entropy_and_its_gradient(target, smoothing):
    cos = torch.linspace(-1.0, 1.0, 41, dtype=torch.float64, requires_grad=True)
    got = cl_pair_loss(cos, target, smoothing, "logits")
    want = _reference(cos, target, smoothing)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    as_tensor = cl_pair_loss(cos, torch.full_like(cos, target), smoothing, "logits")
    torch.testing.assert_close(as_tensor, want, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(got.sum(), cos)
    (want_grad,) = torch.autograd.grad(want.sum(), cos)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)
    t = target * (1.0 - smoothing) + smoothing / 2.0
    torch.testing.assert_close(grad, torch.sigmoid(cos.detach()) - t, rtol=1e-12, atol=1e-12)  # σ(cos) − t


def test_logits_form_bounds_for_the_default_smoothing():
    cos = torch.linspace(-1.0, 1.0, 201, dtype=torch.float64)
    both = torch.cat([cl_pair_loss(cos, 1.0), cl_pair_loss(cos, 0.0)])
    assert 0.363 <= float(both.min()) < 0.364
    assert 1.263 < float(both.max()) <= 1.264


def test_probability_form_and_a_bad_form():
    cos = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
    s = (cos + 1.0) / 2.0
    t = 1.0 - 0.05
    want = -(t * torch.log(s) + (1.0 - t) * torch.log1p(-s))
    torch.testing.assert_close(cl_pair_loss(cos, 1.0, 0.1, "probability"), want)
    with pytest.raises(ValueError, match="cl_form"):
        cl_pair_loss(cos, 1.0, 0.1, "other")
