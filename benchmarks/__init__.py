"""Benchmarks that print tables (not part of the test suite).

`python -m benchmarks all` runs every benchmark in `SUITE` and writes `benchmarks/RESULTS.md`;
`python -m benchmarks NAME [ARGS...]` runs one (`python -m benchmarks train_step --quick`).
"""

# name -> its arguments inside `all`: the full train_step (arguments after `all` go to it), and
# the quick runs of the others (--quick is dropped for a benchmark whose source lacks it).
SUITE = {
    "train_step": [],
    "kmeans": ["--quick"],
    "tokenize_throughput": ["--quick"],
    "input_pipeline": ["--quick"],
    "method_steps": ["--quick"],
}
