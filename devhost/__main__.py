"""``python -m devhost --app MODULE:ATTR --port N``: run the local Functions host in the foreground.

Loads ``local.settings.json`` like ``func start``, indexes the app, binds 127.0.0.1:PORT, starts
timers, local Event Grid and the durable engine, and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError

logger = logging.getLogger("devhost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default=None, help="MODULE:ATTR of the FunctionApp (CONTINUITY_DEVHOST_APP)")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (CONTINUITY_DEVHOST_PORT)")
    parser.add_argument("--no-durable", action="store_true", help="do not start the durable engine")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    settings.load_local_settings()
    args = build_parser().parse_args(argv)
    from continuity import telemetry

    # Like the Functions host with Application Insights: traces, metrics and structured JSON logs, to Azure
    # Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set, else to this process's stderr (the devhost log).
    telemetry.configure("continuity-devhost", level=getattr(logging, args.log_level))
    app_spec = args.app or settings.get("CONTINUITY_DEVHOST_APP")
    port = args.port or settings.get_int("CONTINUITY_DEVHOST_PORT")

    from devhost.host import Host
    from devhost.http import serve

    try:
        host = Host(app_spec, port, durable=not args.no_durable)
        server = serve(host, port, settings.get_int("CONTINUITY_MAX_REQUEST_BYTES"))
    except ContinuityError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"devhost: cannot listen on 127.0.0.1:{port} ({exc}); free the port or set "
              f"CONTINUITY_DEVHOST_PORT", file=sys.stderr)
        return 2

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="devhost-http",
                               daemon=True)
    # Serve first: a timer that runs on start-up may call the durable client, which calls us back.
    serving.start()
    try:
        host.start()
    except ContinuityError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        server.shutdown()
        server.server_close()
        return 2
    logger.info("devhost ready on %s (app %s)", host.base_url, app_spec)
    stopping.wait()
    logger.info("devhost stopping")
    server.shutdown()
    server.server_close()
    host.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
