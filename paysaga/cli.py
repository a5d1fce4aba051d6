"""`paysaga dev | api | worker | sandbox | demo`."""

from __future__ import annotations

import argparse
import signal
import sys

from pydantic import ValidationError

from core.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paysaga", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run everything locally: Temporal + UI, sandbox, worker, API")
    commands.add_parser("api", help="serve the HTTP API")
    commands.add_parser("worker", help="run the order sagas (same as `python worker.py`)")
    commands.add_parser("sandbox", help="serve the sandbox Alipay gateway")
    demo = commands.add_parser("demo", help="drive a running system through the scenarios")
    demo.add_argument("--api-url", default=None, help="default: PAYSAGA_PUBLIC_BASE_URL")
    demo.add_argument("--api-key", default=None, help="default: the dev mode's key")
    args = parser.parse_args(argv)

    if args.command == "sandbox":
        from sandbox.app import serve
        from sandbox.settings import SandboxSettings

        serve(SandboxSettings())
        return 0
    try:
        settings = Settings()
    except ValidationError as invalid:
        messages = "; ".join(str(error["msg"]) for error in invalid.errors())
        print(f"paysaga: configuration refused: {messages}", file=sys.stderr)
        return 2
    if args.command == "dev":
        from paysaga.dev import run_dev

        return run_dev(settings)
    if args.command == "api":
        import uvicorn

        from api.app import create_app
        from core.logs import logging_config

        try:
            app = create_app(settings)
        except SettingsError as refused:
            print(f"paysaga: configuration refused: {refused}", file=sys.stderr)
            return 2
        # uvicorn drains on SIGTERM (the requests in flight are answered), then raises it
        # again to die of it: a drained stop is a clean one.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # The API judges who sent a request by PAYSAGA_TRUSTED_PROXIES alone: uvicorn must
        # not rewrite the peer from X-Forwarded-For before it sees it.
        uvicorn.run(
            app,
            host=settings.api_host,
            port=settings.api_port,
            proxy_headers=False,
            log_config=logging_config(settings),
        )
        return 0
    if args.command == "worker":
        from paysaga import worker

        worker.main()
        return 0
    from paysaga.demo import run_demo

    return run_demo(settings, api_url=args.api_url, api_key=args.api_key)


if __name__ == "__main__":
    sys.exit(main())
