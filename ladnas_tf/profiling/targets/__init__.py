"""Targets: where and how a genotype is timed. `base` (the interface, its errors, the retry policy and
the float32 file every file target times), `local` (cpu_tflite, cpu_tflite_int8, gpu on this machine),
`ssh` and `adb` (remote devices), `registry` (the kinds by name, their options, reaching a recorded one)."""
