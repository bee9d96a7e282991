"""Summarise a collapsed-stack profile (bench/cpuprof.py, or py-spy's raw format): the frames with
the most CPU of their own, and the frames with the most CPU under them (percent of all samples).

    python bench/profile_report.py FILE [--top 30] [--match meterline]
"""

from __future__ import annotations

import argparse
import collections
import re

PATH_NOISE = [(re.compile(r"/[^ ;()]*/site-packages/"), ""), (re.compile(r"/[^ ;()]*/layers/"), ""),
              (re.compile(r"/[^ ;()]*/lib/python3\.\d+/"), "std:"), (re.compile(r":\d+\)"), ")")]


def short(frame: str) -> str:
    for pattern, replacement in PATH_NOISE:
        frame = pattern.sub(replacement, frame)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="", help="inclusive list: only frames containing this text")
    args = parser.parse_args()
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.file) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [short(x) for x in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                under[frame] += n
    print(f"{total} samples")
    print("\nown CPU")
    for frame, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\nCPU under (inclusive)")
    shown = [(frame, n) for frame, n in under.most_common() if args.match in frame]
    for frame, n in shown[: args.top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
