"""The shipped latency predictors, one LPM directory per name (package data, found by
ladnas_tf.lpm.registry through importlib.resources)."""
