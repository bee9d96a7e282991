"""`meterline dev`: the gateway on loopback over the embedded AWS and the simulator.

Order matters for a newcomer: the port is bound (and the registry checked) before anything else,
so a second instance on a taken port fails at once and never prints a key that cannot work. State
(tables, vault key, the demo key) persists per port under the state dir unless `--fresh`. Ctrl-C
stops accepting requests, drains the rollups, saves the state and exits within a few seconds (at any
moment, also while starting; a second Ctrl-C while the state is saved quits at once).
Each request prints one line (model, tokens, cost, cache, latency) unless `--quiet`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from meterline.cli import target
from meterline.money import micros_to_usd

GRACEFUL_S = 1
DRAIN_S = 1.0


class RequestLine(logging.Handler):
    """One human line per request, from the gateway's structured request log."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = getattr(record, "request", None) or {}
        if not fields:
            return
        tokens = ""
        if fields.get("input_tokens") is not None:
            tokens = f" in={fields['input_tokens']} out={fields.get('output_tokens', 0)}"
            if fields.get("cached_tokens"):
                tokens += f" cached={fields['cached_tokens']}"
        line = (f"{time.strftime('%H:%M:%S')} {fields.get('status')} {fields.get('endpoint')} "
                f"{fields.get('model') or '-'}{tokens} ${micros_to_usd(int(fields.get('cost_micros') or 0))} "
                f"{fields.get('latency_ms')}ms {fields.get('outcome')} {fields.get('request_id')}")
        with contextlib.suppress(BrokenPipeError, ValueError):
            print(line, flush=True)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            owner = next((s for _, s in target.running_instances() if s.get("port") == port), None)
            who = f" by `meterline dev` (pid {owner.get('pid')})" if owner else " by another program"
            sys.exit(f"error: port {port} on {host} is already in use{who}; pick another with --port")
        sys.exit(f"error: cannot listen on {host}:{port}: {exc.strerror}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Interrupts:
    """Ctrl-C and SIGTERM as a request to stop, never as an exception raised wherever the main thread
    happens to be. A KeyboardInterrupt that lands inside an import leaves the interpreter's import
    lock held; the embedded AWS's thread, importing a module while it holds the lock that applies AWS
    calls one at a time, then waits on it forever, and so does the final save (a loaded machine hung
    this way). Until uvicorn runs (it takes the signals over while it serves) a stop is noticed at the
    next step of the startup; once the server exists it is told directly. A second signal while the
    state is being saved quits at once."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.server: Any = None
        self.cleaning = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        if self.cleaning:
            os._exit(128 + signum)
        self.requested.set()
        if self.server is not None:
            self.server.should_exit = True  # uvicorn checks it after startup and on every tick


ADMIN_PREFIX = "/admin"


def with_admin(gateway: Any, admin: Any) -> Any:
    """One ASGI app: /admin/... to the admin API (root_path set, as a mount does), the rest to the
    gateway, which alone receives the lifespan events."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")):
            await admin({**scope, "root_path": scope.get("root_path", "") + ADMIN_PREFIX}, receive, send)
            return
        await gateway(scope, receive, send)

    return app


def cmd_dev(args: argparse.Namespace) -> None:
    stop = Interrupts()  # before the port is bound: from a connectable port on, a signal never raises
    sock = bind(args.host, args.port)  # a taken port fails before anything is printed
    poller: Any = None
    saver: Any = None
    path: Any = None
    code = 0
    try:
        import uvicorn

        from meterline import devstate
        from meterline.admin.app import create_admin_app
        from meterline.admin.local import LocalTokens
        from meterline.devenv import provision, seed_demo, start_moto
        from meterline.gateway.app import create_app
        from meterline.rollup import StreamPoller

        data = devstate.data_dir(target.state_dir(), args.port)
        state_path = data / "state.json"
        if args.fresh and data.exists():
            shutil.rmtree(data)
        saved = devstate.load(state_path)
        embedded = start_moto()
        lock = embedded.server.app.lock
        settings = provision(embedded.endpoint)
        if saved is not None:
            settings = devstate.restore(settings, lock, saved)
            demo = saved["demo"]
        else:
            demo = seed_demo(settings)
        if stop.requested.is_set():
            return  # stopped while starting: nothing new is worth saving yet
        # The admin API on the same port, under /admin: only for holders of a local admin token (0600 in the
        # data dir; the CLI reads it from there), never for anyone who can reach loopback.
        tokens = LocalTokens.ensure(data)
        saver = devstate.Saver(state_path, lambda: devstate.snapshot(settings, lock, demo))
        poller = StreamPoller(settings)
        admin_url = f"http://{args.host}:{args.port}{ADMIN_PREFIX}"
        path = target.write_dev_state(settings, {"workspace": demo["workspace"], "port": args.port,
                                                 "admin_url": admin_url, "admin_dir": str(data)})
        poller.start()
        saver.start()
        # proxy_headers off: uvicorn would otherwise take the client address from X-Forwarded-For (IP policies).
        app = with_admin(create_app(settings), create_admin_app(settings, tokens))
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_S,
                                lifespan="on", proxy_headers=False)
        stop.server = uvicorn.Server(config)
        print("Meterline dev: embedded AWS at", embedded.endpoint, flush=True)
        print(f"state: {data} ({'restored' if saved is not None else 'new'}; --fresh starts clean)")
        print(f"base_url: http://{args.host}:{args.port}/v1")
        print(f"api_key: {demo['api_key']}")
        print(f"workspace: {demo['workspace']}")
        print(f"admin API: {admin_url} (bearer token: `meterline admins token`; `meterline api GET /whoami`)")
        print("Try: model='sim/gpt-4o-mini' (or any catalog model as sim/<model>); "
              "`meterline requests` or `meterline spend --by feature` in another shell.", flush=True)

        requests_log = logging.getLogger("meterline.requests")
        if not args.quiet:
            requests_log.setLevel(logging.INFO)
            requests_log.addHandler(RequestLine())
            requests_log.propagate = False
        if not stop.requested.is_set():  # a stop from here on sets the server's should_exit
            stop.server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn's own exit (a failed startup)
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        stop.cleaning = True
        if path is not None:
            target.remove_dev_state(path)
        if poller is not None:
            # Let the rollups finish the page they are applying, for at most DRAIN_S: under a backlog the
            # state is saved anyway (the ledger is complete; spend reports may miss the unapplied records).
            stopper = threading.Thread(target=poller.stop, daemon=True)
            stopper.start()
            stopper.join(DRAIN_S)
        if saver is not None:
            try:
                saver.stop()
            except Exception as exc:
                print(f"warning: could not save the dev state to {state_path}: {exc}", file=sys.stderr)
        sock.close()
        # Everything is saved (under the embedded AWS's lock: no request half-applied). Skip the
        # interpreter's teardown and the embedded AWS's shutdown: native libraries loaded by the AWS
        # SDKs join their own threads at exit, which took seconds after Ctrl-C.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="run the gateway locally on embedded AWS and the simulated provider",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dev.add_argument("--port", type=int, default=8787, help="port to listen on (default 8787)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    dev.add_argument("--fresh", action="store_true",
                     help="discard this port's saved state (keys, budgets, spend) and start clean")
    dev.add_argument("--quiet", action="store_true", help="do not print a line per request")
    dev.set_defaults(func=cmd_dev)
