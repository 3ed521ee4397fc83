"""Where a run computes and in which precision: decided once, here, for the whole engine.

``train.device``: ``auto`` (the local CUDA device if there is one, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. Under torchrun each process takes ``cuda:LOCAL_RANK``.

``train.amp``:
    off    float32 everywhere.
    auto   bf16 autocast where it is fast: CUDA GPUs with bf16, CPUs with native bf16
           (AVX512-BF16 or AMX); fp16 autocast + GradScaler on CUDA GPUs without bf16;
           otherwise float32. On a CPU without bf16 instructions autocast would *slow*
           training down (bf16 is emulated) and lose precision, so auto stays in float32.
           ``PARSENET_CPU_BF16=0|1`` overrides the CPU detection (:func:`cpu_has_native_bf16`).
    bf16   bf16 autocast (no loss scaling is needed: bf16 has float32's exponent range).
    fp16   fp16 autocast + GradScaler; CUDA only.
The L2Norm layers compute in float32 under autocast (see :class:`parsenet.layers.L2Norm`);
the loss is computed in float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from parsenet.choices import AMP_MODES
from parsenet.errors import ConfigError

__all__ = ["AmpPolicy", "resolve_device", "resolve_amp", "cpu_has_native_bf16", "CPU_BF16_ENV",
           "cpu_kind", "cpu_has_amx", "cpu_bf16_units"]


@dataclass(frozen=True)
class AmpPolicy:
    dtype: torch.dtype | None  # autocast dtype; None: no autocast
    use_scaler: bool  # GradScaler (fp16 only)
    reason: str  # why, for the run log

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_device(name: str, local_rank: int = 0, *, key: str = "train.device"
                   ) -> torch.device:
    """The torch device ``name`` (auto, cpu, cuda, cuda:N) means here; ``key`` names the
    setting in the :class:`ConfigError` raised for a device that is not one or not present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = name.partition(":")
    if kind == "cuda":
        if colon and not index.isdigit():
            raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name!r} but CUDA is not available")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{key}={name!r} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name if index else f"cuda:{local_rank}")
    if name != "cpu":
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


CPU_BF16_ENV = "PARSENET_CPU_BF16"


def _bf16_override() -> str:
    # The one place the variable is read ("" when unset): the detection, the machine kind
    # and auto's reason all report the same override.
    return os.environ.get(CPU_BF16_ENV, "").strip()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs on which bf16 matmuls/convs are faster than fp32.

    ``PARSENET_CPU_BF16=1`` (or ``0``) overrides the detection, so that either kind of CPU can
    be tested, or forced, from the other (:func:`_bf16_override` reads it).
    """
    forced = _bf16_override()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ConfigError(f"{CPU_BF16_ENV}={forced!r}: expected 0 or 1 (or unset)")
    return _detected_native_bf16()


def _torch_says(check: str) -> bool:
    # torch's own CPUID checks (absent from some builds: then the answer is no)
    probe = getattr(torch.cpu, check, None)
    return probe is not None and bool(probe())


def _detected_native_bf16() -> bool:
    return _torch_says("_is_avx512_bf16_supported") or cpu_has_amx()


def cpu_has_amx() -> bool:
    """AMX tiles (Intel Xeon 4th generation on), by torch's check: bf16 there runs on the
    tiles, not on AVX512-BF16's vector units, so runtimes rank differently than on a CPU with
    AVX512-BF16 alone (:func:`parsenet.engine.backends.cpu_bf16_kind`)."""
    return _torch_says("_is_amx_tile_supported")


def cpu_kind() -> str:
    """The machine kind that figures are reported for: ``AVX512-BF16`` or the CPU's vector
    capability (``AVX2``, ``AVX512``, ...), plus a note when PARSENET_CPU_BF16 overrides it."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    kind = "AVX512-BF16" if _detected_native_bf16() else capability
    forced = _bf16_override()
    return f"{kind} ({CPU_BF16_ENV}={forced})" if forced else kind


def cpu_bf16_units() -> str:
    """The native bf16 units, as the run log and the model cards (publish_run) name them: a
    CPU with AMX has AVX512-BF16 too, and one with native bf16 but no AMX has AVX512-BF16."""
    return "AVX512-BF16 + AMX" if cpu_has_amx() else "AVX512-BF16, no AMX"


def _cpu_bf16_reason() -> str:
    """Why auto chose bf16 on the CPU, for the run log: the units it has, or the override
    that forced bf16 (on a CPU that may have none)."""
    forced = _bf16_override()
    if forced:
        detected = cpu_bf16_units() if _detected_native_bf16() else "none detected"
        return f"auto: {CPU_BF16_ENV}={forced} forces native bf16 (the CPU's: {detected})"
    return f"auto: the CPU has native bf16 ({cpu_bf16_units()})"


def resolve_amp(amp: str, device: torch.device) -> AmpPolicy:
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {AMP_MODES}, got {amp!r}")
    cuda = device.type == "cuda"
    cuda_bf16 = cuda and torch.cuda.is_bf16_supported()
    if amp == "off":
        return AmpPolicy(None, False, "train.amp=off")
    if amp == "fp16":
        if not cuda:
            raise ConfigError("train.amp=fp16 needs a CUDA device (use bf16 or off on CPU)")
        return AmpPolicy(torch.float16, True, "train.amp=fp16")
    if amp == "bf16":
        if cuda and not cuda_bf16:
            raise ConfigError("train.amp=bf16 but this GPU does not support bf16")
        return AmpPolicy(torch.bfloat16, False, "train.amp=bf16")
    if cuda:
        if cuda_bf16:
            return AmpPolicy(torch.bfloat16, False, "auto: the GPU supports bf16")
        return AmpPolicy(torch.float16, True, "auto: GPU without bf16, fp16 with loss scaling")
    if cpu_has_native_bf16():
        return AmpPolicy(torch.bfloat16, False, _cpu_bf16_reason())
    return AmpPolicy(None, False, "auto: the CPU has no native bf16, float32")
