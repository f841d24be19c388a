"""The genotype as a graph, apart from any one framework: the walk (walk.py), its emitters (the MAC count,
macs.py; the profiler's constant TF graph, constant.py; the TFLite flatbuffer written directly,
tflite_writer.py), the TFLite converters (convert.py) and the evaluation network a genotype is timed in
(setting.py). Nothing here imports the profiler."""
