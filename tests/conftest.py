"""Test setup: the CPU backend with exactly 8 fake devices (forced before jax starts,
whatever the environment says), so sharded runs can be compared with
single-device runs in one process; a persistent compilation cache so the many
tiny end-to-end runs compile each program once; TF kept off accelerators; absl
flags marked parsed so library code can read them.

The suite compiles many small programs once each, so on a fresh machine (cold
cache) compiling dominates its time: XLA's backend optimisation level 0 halves
each compile, and the tiny test programs run as fast unoptimised. The cache
lives in this checkout's pytest cache (`.pytest_cache/d/jax-compilation-cache`,
ignored by git), so checkouts and users never share or clobber one another's."""

import getpass
import os
import tempfile

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["JAX_NUM_CPU_DEVICES"] = "8"  # helpers.NUM_DEVICES
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as sslx.main: no start-up notice
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import jax
import pytest
import tensorflow as tf
from absl import flags

jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
tf.config.set_visible_devices([], "GPU")
flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
    """Points jax's persistent compilation cache at this checkout's pytest cache
    (a per-user temporary folder when pytest runs without its cache plugin)."""
    if getattr(config, "cache", None) is not None:
        directory = str(config.cache.mkdir("jax-compilation-cache"))
    else:
        directory = os.path.join(tempfile.gettempdir(),
                                 f"sslx-test-jax-cache-{getpass.getuser()}")
    jax.config.update("jax_compilation_cache_dir", directory)


@pytest.fixture(scope="session")
def npz(tmp_path_factory):
    """A few hundred Fashion-MNIST images as an `arrays` source, for end-to-end runs."""
    from helpers import small_fmnist_npz

    return small_fmnist_npz(str(tmp_path_factory.mktemp("data") / "fmnist_small.npz"))
