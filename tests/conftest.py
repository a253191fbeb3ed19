"""Test setup: 8 fake CPU devices (set before jax starts) so sharded runs can be
compared with single-device runs in one process; a persistent compilation cache
so the many tiny end-to-end runs compile each program once; TF kept off
accelerators; absl flags marked parsed so library code can read them.

The suite compiles many small programs once each, so on a fresh machine (cold
cache) compiling dominates its time: XLA's backend optimisation level 0 halves
each compile, and the tiny test programs run as fast unoptimised."""

import os
import tempfile

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import jax
import pytest
import tensorflow as tf
from absl import flags

jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "sslx-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
tf.config.set_visible_devices([], "GPU")
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def npz(tmp_path_factory):
    """A few hundred Fashion-MNIST images as an `arrays` source, for end-to-end runs."""
    from helpers import small_fmnist_npz

    return small_fmnist_npz(str(tmp_path_factory.mktemp("data") / "fmnist_small.npz"))
