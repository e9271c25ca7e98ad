"""seqlab's benchmarks: ``python -m benchmarks NAME`` runs one and records its figures in
``benchmarks/results/NAME.json``; ``python -m benchmarks.readme`` puts them in README.md."""
