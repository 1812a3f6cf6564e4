"""tinymlops: versioned data → trained model → int8 TFLite verified on TFLite Micro → fleet.

The library never imports Prefect; flows/ and tasks/ compose it.
"""

import os

# tensorflow-model-optimization needs Keras 2 (tf_keras). This must be set before the first
# TensorFlow import anywhere in the process, and every entry point imports this package first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
