"""Lethe's benchmarks: `make bench` (or `.venv/bin/python -m bench [module ...]`); see bench/README.md."""
