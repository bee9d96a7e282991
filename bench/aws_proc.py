"""The embedded AWS (meterline.devenv.start_moto) in its own process, for the benchmark."""

from __future__ import annotations

import sys
import time

from meterline.devenv import start_moto

if __name__ == "__main__":
    start_moto(port=int(sys.argv[1]))
    while True:
        time.sleep(3600)
