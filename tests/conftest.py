"""Test setup: 8 fake CPU devices (set before jax starts) so sharded runs can be
compared with single-device runs in one process; TF kept off accelerators and
to few threads; absl flags marked parsed so library code can read them."""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from absl import flags

tf.config.set_visible_devices([], "GPU")
flags.FLAGS.mark_as_parsed()
