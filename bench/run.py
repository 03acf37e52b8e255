"""Run every benchmark in turn (``make bench``); each prints ratios against its own baseline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ("bench_drain.py", "bench_workers.py", "bench_cluster.py", "bench_timeline.py")


def main() -> int:
    here = Path(__file__).parent
    for bench in BENCHES:
        print(f"== {bench}", flush=True)
        result = subprocess.run([sys.executable, str(here / bench)], check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
