"""``python -m service.serve`` under cProfile, profiling only after start-up (imports and bundle loading
would otherwise dominate). Settings come from ``TURNWISE_*``; the profile is written when the server
stops (SIGTERM).

    python -m benchmarks.profiled_serve OUT.prof
"""

from __future__ import annotations

import cProfile
import sys

from service.config import Settings
from service.serve import build_server, configure_logging


def main() -> None:
    out = sys.argv[1]
    settings = Settings()
    configure_logging(settings.log_level)
    server = build_server(settings)
    profiler = cProfile.Profile()
    startup = server.startup

    async def profiled_startup(sockets: list | None = None) -> None:
        await startup(sockets=sockets)
        profiler.enable()  # the event-loop thread only: the model runs on ONNX Runtime's threads

    server.startup = profiled_startup  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
