"""Speed, memory and accuracy benchmarks. Each prints one JSON document; run `python -m benchmarks --list`."""
