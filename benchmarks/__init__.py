"""streamcore's benchmark suite: ``python -m benchmarks [--quick]`` from the repository root."""
