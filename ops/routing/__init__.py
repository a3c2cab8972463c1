"""The routing benchmark's parts: its workload, its stack's configs, and what it measures (``ops/bench_routing.py``)."""
