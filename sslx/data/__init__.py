"""Input pipeline: sources -> augment/views (tf.data on host CPUs) -> numpy batches.

TF only ever runs on host CPUs here: importing the package hides accelerators
from TF so it never claims memory that XLA needs.
"""

import tensorflow as tf
from absl import logging

try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF initialised its devices before this import: too late to hide them
    logging.warning("sslx.data: TF was initialised before GPUs could be hidden from it")
