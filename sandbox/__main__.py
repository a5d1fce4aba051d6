"""`python -m sandbox`: run the sandbox gateway configured from the environment."""

from __future__ import annotations

from sandbox.app import serve
from sandbox.settings import SandboxSettings


def main() -> None:
    serve(SandboxSettings())


if __name__ == "__main__":
    main()
