"""Speed and memory of one spiking ResNet training step, minisnn against a plain-PyTorch peer.

    python benchmarks/bench.py                                   # ResNet-19, T = 2 4 6, batch 8 32
    python benchmarks/bench.py -T 2 --batch 8 --repeats 3 --results benchmarks/RESULTS.md
    python benchmarks/bench.py --model resnet_small -T 2 --batch 64 --no-peer

The same as ``minisnn bench``; see minisnn/bench.py for what is measured and how.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minisnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
