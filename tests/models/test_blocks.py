import pytest
import torch
import torch.nn.functional as F

from napari_medgan.models.blocks import UpsampleConv3d, resize_kernel


def _reference(m: UpsampleConv3d, x: torch.Tensor) -> torch.Tensor:
    return F.conv3d(F.interpolate(x, scale_factor=2, mode="nearest"), m.weight, m.bias,
                    padding=1)


@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 5, 6), (7, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_nearest_upsampling_then_convolution(shape, bias):
    torch.manual_seed(0)
    m = UpsampleConv3d(3, 5, bias=bias).double()
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    out = m(x)
    assert out.shape == (2, 5, *(2 * s for s in shape))
    torch.testing.assert_close(out, _reference(m, x))


def test_gradients_equal_the_reference():
    torch.manual_seed(1)
    m = UpsampleConv3d(2, 3).double()
    x = torch.randn(1, 2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(m(x).square().sum(), (x, m.weight, m.bias))
    ref = torch.autograd.grad(_reference(m, x).square().sum(), (x, m.weight, m.bias))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)


def test_channels_last_input_gives_the_same_output():
    torch.manual_seed(2)
    m = UpsampleConv3d(4, 4)
    x = torch.randn(2, 4, 4, 4, 4)
    torch.testing.assert_close(
        m(x.contiguous(memory_format=torch.channels_last_3d)), m(x), rtol=1e-5, atol=1e-5)


def test_resize_kernel_refuses_other_kernels():
    with pytest.raises(ValueError, match="3, 3, 3"):
        resize_kernel(torch.zeros(2, 2, 4, 4, 4))
