"""The shipped latency predictors, one LPM directory per name (package data, found by
ladnas_tf.latency.registry through importlib.resources)."""
