"""``--device cpu|gpu|gpu:N|gpu:all`` -> JAX devices, with a clear error when there are none.

``KIND:all`` selects every visible device of that kind for data-parallel learning
(:mod:`omega.agents.parallel`); the other forms select one device.
"""

from __future__ import annotations

import jax

from omega.errors import OmegaError

KINDS = ("cpu", "gpu")


def resolve_devices(spec: str | None) -> list[jax.Device]:
    """The devices ``spec`` names: one for ``cpu``, ``gpu`` or ``gpu:N``, every visible
    device of the kind for ``cpu:all`` or ``gpu:all``."""
    spec = (spec or "cpu").strip().lower()
    kind, _, index = spec.partition(":")
    if kind not in KINDS:
        raise OmegaError(f"--device must be cpu, gpu, gpu:N or gpu:all, got {spec!r}")
    if index != "all":
        try:
            idx = int(index) if index else 0
        except ValueError:
            raise OmegaError(f"--device {spec!r}: N in gpu:N must be an integer or 'all'") \
                from None
    try:
        devices = jax.devices(kind)
    except RuntimeError:
        devices = []
    if not devices:
        raise OmegaError(
            f"--device {spec}: JAX sees no {kind.upper()} (it has {jax.devices()}); install "
            "the CUDA build with pip install 'omega[cuda]' or run with --device cpu")
    if index == "all":
        return list(devices)
    if idx >= len(devices):
        raise OmegaError(f"--device {spec}: only {len(devices)} {kind.upper()}(s) visible "
                         f"(use an index below {len(devices)})")
    return [devices[idx]]


def wants_all_devices(spec: str | None) -> bool:
    return (spec or "").strip().lower().endswith(":all")


def resolve_device(spec: str | None) -> jax.Device:
    """One device, for commands that run on one (``omega eval``)."""
    if wants_all_devices(spec):
        raise OmegaError(f"--device {spec}: this command runs on one device; use cpu, gpu or "
                         "gpu:N")
    return resolve_devices(spec)[0]
