"""Timing genotypes on devices into latency tables: measure (the one timing protocol), agent (what a
remote board runs; with measure.py, the two files copied there), targets/ (the devices), profiler
(sampling, parallel file making ahead of serial timing), table (the durable CSV), report (what a table
shows). Nothing here knows the predictor's Keras model."""
