"""``--device cpu|gpu[:N]`` -> a JAX device, with a clear error when there is none."""

from __future__ import annotations

import jax

from omega.errors import OmegaError


def resolve_device(spec: str | None) -> jax.Device:
    spec = (spec or "cpu").strip().lower()
    kind, _, index = spec.partition(":")
    if kind not in ("cpu", "gpu"):
        raise OmegaError(f"--device must be cpu, gpu or gpu:N, got {spec!r}")
    try:
        idx = int(index) if index else 0
    except ValueError:
        raise OmegaError(f"--device {spec!r}: N in gpu:N must be an integer") from None
    try:
        devices = jax.devices(kind)
    except RuntimeError:
        devices = []
    if not devices:
        raise OmegaError(
            f"--device {spec}: JAX sees no {kind.upper()} (it has {jax.devices()}); install "
            "the CUDA build with pip install 'omega[cuda]' or run with --device cpu")
    if idx >= len(devices):
        raise OmegaError(f"--device {spec}: only {len(devices)} {kind.upper()}(s) visible "
                         f"(use an index below {len(devices)})")
    return devices[idx]
