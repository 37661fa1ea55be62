"""The ``hallwatch`` command: ``serve``, ``check-config``, ``recordings`` and ``verify-export``.

``python -m vms`` runs the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from vms.config_loader import ConfigError, load_config
from vms.server import Server, raise_file_limit, server_config

__all__ = ["main", "server_config"]

log = logging.getLogger("vms")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallwatch",
        description="Pull every hall camera once and serve it live to both monitoring centres.",
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service (default command)")
    serve.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("HALLWATCH_CONFIG") or None,
        help="YAML configuration file (default: $HALLWATCH_CONFIG, else the embedded eight-hall demo)",
    )
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)
    recordings = sub.add_parser("recordings", help="list the recordings' index; --verify checks the files")
    recordings.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("HALLWATCH_CONFIG") or None,
        help="YAML configuration file (default: $HALLWATCH_CONFIG, else the embedded demo)",
    )
    recordings.add_argument("--camera", help="only this camera")
    recordings.add_argument(
        "--verify", action="store_true", help="re-hash every indexed file; report missing, altered, unknown"
    )
    verify = sub.add_parser(
        "verify-export", help="check an export file against its signed manifest; exit 1 if anything fails"
    )
    verify.add_argument("file", type=Path, help="the exported MP4 file")
    verify.add_argument("manifest", type=Path, help="its manifest (JSON)")
    verify.add_argument(
        "--key", type=Path, help="the trusted public key (PEM); default: this instance's signing key"
    )
    verify.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("HALLWATCH_CONFIG") or None,
        help="YAML configuration file whose data_dir holds this instance's key (default: $HALLWATCH_CONFIG)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "check-config":
        return _check(args.file)
    if command == "recordings":
        return _recordings(args.config, args.camera, args.verify)
    if command == "verify-export":
        from vms.export_verify import verify_command

        return verify_command(args.file, args.manifest, args.key, args.config)
    return _serve(getattr(args, "config", None), getattr(args, "host", None), getattr(args, "port", None))


def _check(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    print(
        f"{path}: OK: {len(config.centres)} centres, {len(config.halls)} halls, {len(config.cameras)} cameras"
    )
    return 0


def _recordings(path: Path | None, camera_id: str | None, verify: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    from vms.recordings_cli import report

    lines, status = asyncio.run(report(config, camera_id, verify))
    print("\n".join(lines))
    return status


def _serve(path: Path | None, host: str | None, port: int | None) -> int:
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        print("hallwatch: refusing to start with this configuration", file=sys.stderr)
        return 2
    from vms.app import create_app

    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host = host or config.server.host
    port = port or config.server.port
    source = path or "the embedded default (eight halls, simulated cameras)"
    log.info("configuration: %s", source)
    log.info("dashboard: http://%s:%d/", host, port)
    from vms.storage.opening import startup_problem

    problem = startup_problem(config)  # a read-only or full store: a message, not a traceback
    if problem is not None:
        print(f"hallwatch: cannot start: {problem}", file=sys.stderr)
        return 1
    file_limit = raise_file_limit()
    app = create_app(config)
    options = {"host": host, "port": port, "log_level": config.server.log_level.lower()}
    server = Server(app, server_config(app, file_limit, **options))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down cleanly
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
