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


def test_networks_on_the_meta_device_have_the_real_parameters_without_importing_dynamo():
    """Counting parameters (memory planner) and checking a checkpoint's sizes run in the
    training thread; importing torch._dynamo there stalls napari's GUI thread."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_medgan.config import ModelConfig\n"
        "from napari_medgan.models import MODELS, build_discriminator, build_generator, "
        "on_meta_device\n"
        "for name in MODELS:\n"
        "    cfg = ModelConfig(name=name, num_classes=3, channels=8)\n"
        "    with on_meta_device():\n"
        "        shapes = [build_generator(cfg), build_discriminator(cfg)]\n"
        "    assert all(p.is_meta for n in shapes for p in n.parameters()), name\n"
        "    real = [build_generator(cfg), build_discriminator(cfg)]\n"
        "    count = [sum(p.numel() for p in n.parameters()) for n in shapes]\n"
        "    assert count == [sum(p.numel() for p in n.parameters()) for n in real], name\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_spectral_norm_is_left_out_only_on_the_meta_device():
    from napari_medgan.models.blocks import on_meta_device, spectral_norm

    real = spectral_norm(torch.nn.Conv3d(2, 3, 3))
    with on_meta_device():
        skeleton = spectral_norm(torch.nn.Conv3d(2, 3, 3))
    assert "parametrizations.weight.original" in real.state_dict()
    assert set(skeleton.state_dict()) == {"weight", "bias"}
    conv = spectral_norm(torch.nn.Conv3d(2, 3, 3))  # the switch is off again afterwards
    assert "parametrizations.weight.original" in conv.state_dict()
