import pytest
import torch

from efficientdet.devices import default_device, resolve_device


def test_none_is_the_default_device():
    assert resolve_device(None) == default_device()


def test_cpu_is_accepted():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["foo", "gpu0", "cuda:x"])
def test_unknown_device_names_it(name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(name):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device(name)


def test_unsupported_type():
    with pytest.raises(ValueError, match="unsupported device type|unknown device"):
        resolve_device("meta")
