"""Run `alacop serve` under cProfile with a per-thread CPU clock (time.thread_time).

The default cProfile clock is wall time, which on a single pinned core also counts the time the
event loop sits descheduled while argon2 threads run. With thread_time each function is charged
only the CPU the event-loop thread itself spent. Used by `bench/signin.py --profile PATH`.

    python bench/profile_serve.py OUT.prof serve --host 127.0.0.1 --port 8000 --workers 1
"""

from __future__ import annotations

import cProfile
import sys
import time

from alacop.cli import main

if __name__ == "__main__":
    out, argv = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        code = main(argv)
    finally:
        profiler.disable()
        profiler.dump_stats(out)
    sys.exit(code)
