import os

# Keep JAX on the CPU and quiet in tests, whatever the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def fast_compiles():
    """For modules of tiny programs (``pytestmark = pytest.mark.usefixtures("fast_compiles")``):
    XLA's optimisation passes would take longer than running them unoptimised. Module-scoped
    so other modules compile as usual."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture
def write_ttyrec():
    """Writes raw terminal frames to a path as a bz2-compressed ttyrec, as NLE records them."""
    import bz2
    import struct

    def write(path, frames: list[bytes]) -> None:
        data = b"".join(struct.pack("<iii", 1_700_000_000 + i, 0, len(f)) + f
                        for i, f in enumerate(frames))
        path.write_bytes(bz2.compress(data))

    return write
