"""Latency tables in, a latency predictor (LPM) out: dataset (tables as training data, genotype
encodings), model (the LPM, its recipe, save / load, content hash), training (one run and the size
sweep), metrics (and the comparison of two tables), adapt (a new device from a few timings), registry
(a predictor's name to a ready predictor)."""
