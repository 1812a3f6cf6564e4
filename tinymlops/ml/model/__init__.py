"""Keras (tf_keras) architectures and seeded, deterministic training."""
