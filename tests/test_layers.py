"""The layers' one-sample `step` must reproduce their parallel `forward` exactly."""

import pytest
import torch

from deepsynth.model.layers import CausalConv1d, GatedResidualBlock, ResidualStack


def run_steps(layer, x, cond=None):
    """Feed (B, C, T) one time step at a time through `layer.step` from a fresh state."""
    state = layer.init_state(x.shape[0])
    outs = []
    for t in range(x.shape[-1]):
        c = None if cond is None else cond[:, :, t]
        if isinstance(layer, CausalConv1d):
            outs.append(layer.step(x[:, :, t], state))
        elif isinstance(layer, GatedResidualBlock):
            outs.append(torch.cat(layer.step(x[:, :, t], c, state), dim=1))
        else:
            outs.append(layer.step(x[:, :, t], c, state))
    return torch.stack(outs, dim=-1)


@pytest.mark.parametrize("kernel,dilation", [(2, 1), (2, 4), (2, 16), (3, 2), (1, 1)])
def test_causal_conv_step_equals_forward(kernel, dilation):
    torch.manual_seed(0)
    conv = CausalConv1d(3, 5, kernel, dilation)
    x = torch.randn(2, 3, 50)
    with torch.no_grad():
        full = conv(x)
        steps = run_steps(conv, x)
    assert full.shape == (2, 5, 50)
    assert (steps - full).abs().max() <= 1e-5


def test_causal_conv_is_causal_with_exact_reach():
    torch.manual_seed(0)
    conv = CausalConv1d(2, 2, 2, dilation=8)
    x = torch.randn(1, 2, 40, requires_grad=True)
    conv(x)[0, :, 30].sum().backward()
    touched = torch.nonzero(x.grad.abs().sum(1)[0]).flatten().tolist()
    assert touched == [22, 30]  # t - d and t, nothing later


def test_gated_block_step_equals_forward():
    torch.manual_seed(0)
    block = GatedResidualBlock(6, 4, dilation=2, cond_channels=3)
    x, cond = torch.randn(2, 6, 40), torch.randn(2, 3, 40)
    with torch.no_grad():
        res, skip = block(x, cond)
        steps = run_steps(block, x, cond)
    assert res.shape == (2, 6, 40) and skip.shape == (2, 4, 40)
    assert (steps - torch.cat([res, skip], dim=1)).abs().max() <= 1e-5


def test_gated_block_needs_its_conditioning():
    block = GatedResidualBlock(4, 4, dilation=1, cond_channels=2)
    with pytest.raises(ValueError):
        block(torch.randn(1, 4, 5))


@pytest.mark.parametrize("cond_channels", [0, 3])
def test_stack_step_equals_forward(cond_channels):
    torch.manual_seed(0)
    stack = ResidualStack(8, 5, (1, 2, 4, 8, 16, 1, 2), 2, cond_channels)
    x = torch.randn(2, 8, 80)
    cond = torch.randn(2, 3, 80) if cond_channels else None
    with torch.no_grad():
        full = stack(x, cond)
        steps = run_steps(stack, x, cond)
    assert stack.receptive_field == 1 + 34
    assert (steps - full).abs().max() <= 1e-5
