"""Android phones over ADB, by role; `devices/adb.py` composes them into the device.

- `transport.py`: the ADB connection (adb-shell over our TCP transport, or USB), the host key,
  push by sha256, pull, and `run` with its exit marker, pid file and orphan kill.
- `benchmark_model.py`: TFLite's benchmark tool as the measuring driver: the argv of one launch,
  the launch's report from the tool's parsed output, why a run failed.
- `outputs.py`: the evaluation set through the same tool (`--input_layer_value_files`,
  `--output_filepath`) for each delegate's outputs on the phone.
- `parsers.py`: pure parsers of what the phone prints (getprop, thermal zones, thermalservice).
"""
