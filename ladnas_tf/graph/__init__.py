"""The genotype as a graph, apart from any one framework: the walk (walk.py), its emitters (the MAC
count, the profiler's constant TF graph) and the TFLite converters (convert.py)."""
