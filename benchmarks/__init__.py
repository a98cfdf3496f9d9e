"""Speed and memory probes: `python -m benchmarks.<name>`, each writing JSON (and most a markdown table) to results/."""
