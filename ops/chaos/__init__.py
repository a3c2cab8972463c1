"""The chaos benchmark (``ops/bench_chaos.py``): the storm's traffic while the gateway's world breaks."""
