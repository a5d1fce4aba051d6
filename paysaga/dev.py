"""`paysaga dev`: the whole system on one machine, for trying it and for demos.

Starts the Temporal dev server (with its Web UI), the sandbox gateway, a worker and the API
as child processes, prints where each one is, and stops them all on Ctrl-C or when one dies.
"""

from __future__ import annotations

import compileall
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from api.api_keys import dev_admin_key, dev_api_key
from core.codec import ensure_key
from core.secret_files import kept_secret
from core.settings import (
    DEV_CODEC_KEY_FILE,
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_MERCHANT_SERIAL,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
    Settings,
)
from gateways.alipay_signing import generate_key_pair
from paysaga.temporal_server import dev_server_command
from store.schema import upgrade

APIV3_KEY_ALPHABET = string.ascii_letters + string.digits
START_TIMEOUT_SECONDS = 60
# What the image installs (pyproject's packages).
PACKAGES = ("core", "store", "gateways", "activities", "workflows", "api", "paysaga", "sandbox")


def ensure_dev_keys(keys_dir: Path) -> None:
    """Made once: the merchant's key pairs for Alipay (`app`) and WeChat Pay, the sandbox's own
    pairs standing in for Alipay's and WeChat Pay's, the WeChat Pay APIv3 key the merchant
    and WeChat Pay share, and the key Temporal payloads are encrypted with."""
    for name in ("app", "sandbox", "wechatpay_merchant", "wechatpay_platform"):
        private, public = keys_dir / f"{name}_private.pem", keys_dir / f"{name}_public.pem"
        if not private.exists() or not public.exists():
            generate_key_pair(private, public)
    # WeChat Pay's APIv3 keys are 32 letters and digits, set by the merchant.
    kept_secret(
        keys_dir / "wechatpay_apiv3.key",
        lambda: "".join(secrets.choice(APIV3_KEY_ALPHABET) for _ in range(32)),
    )
    ensure_key(keys_dir / DEV_CODEC_KEY_FILE)


def compile_bytecode() -> None:
    """Compile paysaga's modules now, as pip does when it installs a package (the image's are).

    Temporal's workflow sandbox imports the workflow modules afresh for every workflow run.
    Run from a source tree where no bytecode is written (PYTHONDONTWRITEBYTECODE, as here),
    each of those imports compiled the source again: measured, 13 % of a busy worker's time.
    """
    root = Path(__file__).resolve().parent.parent
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=1)


def prepare_database(url: str) -> None:
    """The schema at head before the processes start: none of them makes tables."""
    upgrade(url)


def sandbox_env(settings: Settings) -> dict[str, str]:
    """The sandbox's configuration that matches these settings: its URL and the dev keys."""
    keys = settings.keys_dir.resolve()
    return {
        "PAYSAGA_SANDBOX_PORT": str(urlsplit(settings.sandbox_url).port or 80),
        "PAYSAGA_SANDBOX_PUBLIC_URL": settings.sandbox_url,
        "PAYSAGA_SANDBOX_APP_PUBLIC_KEY_FILE": str(keys / "app_public.pem"),
        "PAYSAGA_SANDBOX_PRIVATE_KEY_FILE": str(keys / "sandbox_private.pem"),
        "PAYSAGA_SANDBOX_PUBLIC_KEY_FILE": str(keys / "sandbox_public.pem"),
        "PAYSAGA_SANDBOX_WECHATPAY_MCHID": SANDBOX_WECHATPAY_MCHID,
        "PAYSAGA_SANDBOX_WECHATPAY_APPID": SANDBOX_WECHATPAY_APPID,
        "PAYSAGA_SANDBOX_WECHATPAY_MERCHANT_SERIAL": SANDBOX_WECHATPAY_MERCHANT_SERIAL,
        "PAYSAGA_SANDBOX_WECHATPAY_MERCHANT_PUBLIC_KEY_FILE": str(
            keys / "wechatpay_merchant_public.pem"
        ),
        "PAYSAGA_SANDBOX_WECHATPAY_PRIVATE_KEY_FILE": str(keys / "wechatpay_platform_private.pem"),
        "PAYSAGA_SANDBOX_WECHATPAY_PUBLIC_KEY_FILE": str(keys / "wechatpay_platform_public.pem"),
        "PAYSAGA_SANDBOX_WECHATPAY_PUBLIC_KEY_ID": SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        "PAYSAGA_SANDBOX_WECHATPAY_APIV3_KEY_FILE": str(keys / "wechatpay_apiv3.key"),
    }


@dataclass
class Supervisor:
    """Child processes that live and die together."""

    env: dict[str, str]
    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], **env: str) -> None:
        """Start a child, with `env` added to the shared environment; output goes to a log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as out:
            self.children[name] = subprocess.Popen(
                command,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_paysaga(self, command: str, *, name: str | None = None, **env: str) -> None:
        self.start(name or command, [sys.executable, "-m", "paysaga.cli", command], **env)

    def dead(self) -> str | None:
        return next((name for name, p in self.children.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for process in reversed(self.children.values()):
            if process.poll() is None:
                # SIGTERM, not SIGINT: a shell that starts us in the background makes its
                # children ignore SIGINT.
                process.terminate()
        deadline = time.monotonic() + 15
        for process in reversed(self.children.values()):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_port(host: str, port: int, *, supervisor: Supervisor, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if supervisor.dead() is not None:
            raise RuntimeError(f"{supervisor.dead()} stopped while starting")
        if port_in_use(host, port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on {host}:{port} in {START_TIMEOUT_SECONDS} s")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def interrupt_on_sigterm() -> None:
    """`kill`, docker and CI stop a process with SIGTERM: unwind then as on Ctrl-C, so that
    whatever it started is stopped too, not left running without it."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_dev(settings: Settings) -> int:
    home = settings.home.resolve()
    ensure_dev_keys(settings.keys_dir)
    compile_bytecode()
    prepare_database(settings.resolved_database_url)
    # Keys given in the environment are the ones taken, and are not echoed to the terminal.
    api_key = "(PAYSAGA_API_KEYS)" if settings.api_key_list else dev_api_key(settings)
    admin_key = "(PAYSAGA_ADMIN_KEYS)" if settings.admin_key_list else dev_admin_key(settings)
    codec_endpoint = f"{settings.public_base_url.rstrip('/')}/codec"
    ui_url = f"http://127.0.0.1:{settings.temporal_ui_port}"
    temporal_host, _, temporal_port = settings.temporal_address.rpartition(":")
    sandbox = urlsplit(settings.sandbox_url)
    wanted = {
        "Temporal": (temporal_host, int(temporal_port)),
        "the Temporal UI": ("127.0.0.1", settings.temporal_ui_port),
        "the sandbox": (sandbox.hostname or "127.0.0.1", sandbox.port or 80),
        "the API": (settings.api_host, settings.api_port),
    }
    taken = [
        f"{name} ({host}:{port})"
        for name, (host, port) in wanted.items()
        if port_in_use(host, port)
    ]
    if taken:
        print(
            f"paysaga dev: ports already in use for {', '.join(taken)}: "
            "is another `paysaga dev` running?",
            file=sys.stderr,
        )
        return 1
    supervisor = Supervisor(env={**os.environ, "PAYSAGA_HOME": str(home)}, log_dir=home / "logs")
    interrupt_on_sigterm()
    try:
        supervisor.start(
            "temporal",
            dev_server_command(
                port=int(temporal_port),
                ui_port=settings.temporal_ui_port,
                db_file=home / "temporal.db",
                codec_endpoint=codec_endpoint,
            ),
        )
        supervisor.start_paysaga("sandbox", **sandbox_env(settings))
        wait_for_port(*wanted["Temporal"], supervisor=supervisor, name="Temporal")
        wait_for_port(*wanted["the sandbox"], supervisor=supervisor, name="the sandbox")
        supervisor.start_paysaga("worker")
        supervisor.start_paysaga("api")
        wait_for_port(*wanted["the API"], supervisor=supervisor, name="the API")
        print(
            f"""
paysaga is running (logs in {home / "logs"}):
  API docs      {settings.public_base_url}/docs
  API key       {api_key}   (Authorization: Bearer …)
  Admin key     {admin_key}   (admin routes, the codec server)
  Temporal UI   {ui_url}   (payloads decrypted by {codec_endpoint})
  Sandbox       {settings.sandbox_url}/sandbox/trades
Try it:  paysaga demo      Stop: Ctrl-C
""",
            flush=True,
        )
        while (dead := supervisor.dead()) is None:
            time.sleep(0.5)
        print(f"{dead} stopped; see {home / 'logs' / (dead + '.log')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as failure:
        print(f"paysaga dev: {failure}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop()
