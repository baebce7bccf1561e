"""Describe the machine a benchmark ran on, so every result file names its hardware.

``describe_hardware()`` returns a JSON-ready dict (CPU model, cores, memory,
torch/CUDA/cuDNN/MONAI versions, GPU name and memory when there is one, load
average at the time); ``hardware_slug()`` a short file-name-safe tag.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The CPU features that decide whether bf16 / AVX-512 kernels are fast here."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe_hardware(device: str | None = None) -> dict[str, Any]:
    """Hardware and software facts for a benchmark record.

    Parameters
    ----------
    device : str, optional
        The torch device the benchmark used (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
        GPU details are given for that CUDA device, or device 0.
    """
    import torch

    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_cores_usable": _usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import monai

        info["monai"] = monai.__version__
    except ImportError:
        info["monai"] = None
    if torch.cuda.is_available():
        index = torch.device(device).index if device and device.startswith("cuda:") else 0
        props = torch.cuda.get_device_properties(index or 0)
        info.update({
            "gpu_name": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        })
    return info


def hardware_slug(info: dict[str, Any], device: str) -> str:
    """A file-name-safe tag: the GPU name on CUDA, else the host name, plus the device kind."""
    name = info.get("gpu_name") if device.startswith("cuda") else info.get("hostname")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(name or "unknown")).strip("-").lower()
    return f"{slug}-{device.split(':')[0]}"


if __name__ == "__main__":
    import json

    print(json.dumps(describe_hardware(), indent=2))
