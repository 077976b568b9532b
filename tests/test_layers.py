"""The layers' parallel `forward`, the reference the generation steps are held to
(tests/test_generate.py: the fused kernel and the torch/CUDA-graph step against it)."""

import pytest
import torch

from deepsynth.model.layers import CausalConv1d, GatedResidualBlock, ResidualStack


def reach(layer, x, t, cond=None):
    """Input time steps the output at t depends on, by gradient."""
    x = x.clone().requires_grad_()
    out = layer(x) if cond is None else layer(x, cond)
    out = torch.cat(out, dim=1) if isinstance(out, tuple) else out
    out[0, :, t].sum().backward()
    return torch.nonzero(x.grad.abs().sum(1)[0]).flatten().tolist()


@pytest.mark.parametrize("kernel,dilation", [(2, 1), (2, 8), (3, 2), (1, 1)])
def test_causal_conv_is_causal_with_exact_reach(kernel, dilation):
    torch.manual_seed(0)
    conv = CausalConv1d(2, 3, kernel, dilation)
    x = torch.randn(1, 2, 40)
    assert conv(x).shape == (1, 3, 40)
    assert reach(conv, x, 30) == [30 - j * dilation for j in reversed(range(kernel))]
    assert reach(conv, x, 0) == [0]  # left padding only: nothing before the start


def test_gated_block_needs_its_conditioning():
    block = GatedResidualBlock(4, 4, dilation=1, cond_channels=2)
    with pytest.raises(ValueError):
        block(torch.randn(1, 4, 5))


def test_gated_block_reads_its_conditioning_at_the_same_step_only():
    torch.manual_seed(0)
    block = GatedResidualBlock(6, 4, dilation=2, cond_channels=3)
    x = torch.randn(1, 6, 40)
    cond = torch.randn(1, 3, 40, requires_grad=True)
    res, skip = block(x, cond)
    assert res.shape == (1, 6, 40) and skip.shape == (1, 4, 40)
    (res[0, :, 25].sum() + skip[0, :, 25].sum()).backward()
    assert torch.nonzero(cond.grad.abs().sum(1)[0]).flatten().tolist() == [25]


@pytest.mark.parametrize("cond_channels", [0, 3])
def test_stack_receptive_field_by_gradient(cond_channels):
    torch.manual_seed(0)
    dilations = (1, 2, 4, 8, 16, 1, 2)
    stack = ResidualStack(8, 5, dilations, 2, cond_channels)
    x = torch.randn(1, 8, 80)
    cond = torch.randn(1, 3, 80) if cond_channels else None
    touched = reach(stack, x, 70, cond)
    assert stack.receptive_field == 1 + sum(dilations) == 70 - touched[0] + 1
    assert touched[-1] == 70
