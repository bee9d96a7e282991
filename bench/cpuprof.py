"""A CPU-time sampling profiler for one process (no ptrace, no external tool).

`setitimer(ITIMER_PROF)` fires SIGPROF after every `interval` seconds of the process's CPU time
(user + system), and the handler records the main thread's Python stack: each sample is worth the
same CPU, so a frame's share of samples is its share of the CPU, idle waits (epoll) cost nothing.
The handler runs at the next bytecode boundary, so time in a C call is charged to its caller.
Work on other threads (asyncio.to_thread) lands on whatever the main thread runs at that moment.

Output: collapsed stacks ("outer;...;inner count" per line), the format of flamegraph.pl, speedscope
and `python bench/profile_report.py`.
"""

from __future__ import annotations

import collections
import signal
from types import FrameType


class CpuSampler:
    def __init__(self, interval: float = 0.0005):
        self.interval = interval
        self.counts: collections.Counter[str] = collections.Counter()
        self.running = False

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append(f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno})")
            frame = frame.f_back
        self.counts[";".join(reversed(stack))] += 1

    def start(self) -> None:
        self.counts.clear()
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        self.running = True

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)
        self.running = False

    def write(self, path: str) -> None:
        with open(path, "w") as f:
            for stack, count in self.counts.most_common():
                f.write(f"{stack} {count}\n")
