"""IVT Studio web app.

    python app.py [--workspace DIR] [--host 127.0.0.1] [--port 7860] [--auth USER:PASS]

Opens (creating and filling on first start) the workspace, then serves the UI. It binds to 127.0.0.1 unless told
otherwise; serving on any other address requires --auth.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

MAX_UPLOAD = "200mb"  # larger uploads are refused by the server with a message


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="IVT Studio web app")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: $IVT_WORKSPACE or ./workspace)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs --auth)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics (jobs started, migrations)")
    parser.add_argument("--auth", default=None, help="USER:PASS required to open the app")
    parser.add_argument("--no-first-eval", action="store_true",
                        help="do not start the first evaluations and trace synthesis on a fresh workspace")
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serving(host: str, auth: str | None) -> tuple[str, str] | None:
    """The (user, password) pair, or None. Raises SystemExit with a message if the combination is unsafe."""
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise SystemExit("app.py: error: --auth must be USER:PASS with both parts non-empty")
        return user, password
    if not is_loopback(host):
        raise SystemExit(f"app.py: error: serving on {host} exposes the app beyond this machine; add --auth USER:PASS")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    auth = check_serving(args.host, args.auth)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ivt_core import jobs, logs
    from ivt_core.bootstrap import ensure_default_data, ensure_shipped_models
    from ivt_core.errors import IVTError
    from ivt_core.first_start import start_first_jobs
    from ivt_core.workspace import Workspace
    from ui import box_drag, keys
    from ui.app import create_app
    from ui.context import AppContext

    logs.setup(args.verbose)
    try:
        workspace = Workspace.open(args.workspace)
        written = ensure_default_data(workspace)
        models = ensure_shipped_models(workspace)
        interrupted = jobs.reconcile(workspace)
        first_jobs = [] if args.no_first_eval else start_first_jobs(workspace, models)
    except IVTError as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    if written:
        print(f"created the default shapes-world splits in {workspace.root}: {written}", file=sys.stderr)
    if interrupted:
        print(f"marked jobs whose process is gone as interrupted (resume them in the Train tab): {interrupted}",
              file=sys.stderr)
    if first_jobs:
        print(f"first start: evaluating the shipped toy models and synthesizing traces as jobs "
              f"{', '.join(map(str, first_jobs))}, one after the other (progress on the Overview tab)", file=sys.stderr)
    app = create_app(AppContext(workspace))
    app.launch(server_name=args.host, server_port=args.port, auth=auth, show_error=True,
               head=keys.HEAD + box_drag.HEAD,
               max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
