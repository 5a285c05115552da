"""Describe the machine a measurement ran on, so every benchmark result names it."""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU model string (from /proc/cpuinfo on Linux, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device | str = "cpu") -> dict[str, str | int]:
    """Machine facts for a benchmark record: device, CPU, core count, torch and Python versions."""
    device = torch.device(device)
    info: dict[str, str | int] = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_label(info: dict[str, str | int]) -> str:
    """One line naming the machine, e.g. ``cpu: AMD EPYC ... (2 cores), torch 2.13.0``."""
    hardware = info.get("gpu") or f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} threads)"
    return f"{info['device']}: {hardware}, torch {info['torch']}"
