"""The storm benchmark (``ops/bench_storm.py``): the seed's worked example, measured three ways."""
