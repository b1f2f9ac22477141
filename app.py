"""IVT Studio web app.

    python app.py [--workspace DIR] [--host 127.0.0.1] [--port 7860] [--auth-file FILE | $IVT_AUTH]

Opens (creating and filling on first start) the workspace, then serves the UI. It binds to 127.0.0.1 unless told
otherwise; serving on any other address requires credentials (a file or the environment: a password on the
command line shows in ``ps``). Login attempts are limited; files are served from the workspace and the shipped
assets only, and Gradio's temporary files live in the workspace.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ivt_core.config.serving import loopback as is_loopback

MAX_UPLOAD = "200mb"  # larger uploads are refused by the server with a message


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="IVT Studio web app")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: $IVT_WORKSPACE or ./workspace)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs --auth)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics (jobs started, migrations)")
    parser.add_argument("--auth-file", default=None, help="file whose first line is USER:PASS (or set $IVT_AUTH)")
    parser.add_argument("--auth", default=None, help="USER:PASS (visible to other users in `ps`: prefer --auth-file)")
    parser.add_argument("--no-first-eval", action="store_true",
                        help="do not start the first evaluations and trace synthesis on a fresh workspace")
    return parser.parse_args(argv)


def check_serving(host: str, credentials: tuple[str, str] | None) -> None:
    """Raise SystemExit with a message if serving beyond this machine without credentials."""
    if credentials is None and not is_loopback(host):
        raise SystemExit(f"app.py: error: serving on {host} exposes the app beyond this machine; give credentials "
                         "with --auth-file FILE (a USER:PASS line) or $IVT_AUTH")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ui.serving import LoginGuard, private_temp_dir, read_credentials

    credentials = read_credentials(args.auth, args.auth_file)
    check_serving(args.host, credentials)
    if args.auth is not None:
        print("app.py: warning: --auth shows the password to other users of this machine (ps); prefer --auth-file",
              file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ivt_core import jobs, logs
    from ivt_core.bootstrap import ensure_default_data, ensure_shipped_models
    from ivt_core.errors import IVTError
    from ivt_core.first_start import start_first_jobs
    from ivt_core.workspace import Workspace

    logs.setup(args.verbose)
    try:
        workspace = Workspace.open(args.workspace)
        os.environ["GRADIO_TEMP_DIR"] = str(private_temp_dir(workspace.root))
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
    from ui import box_drag, keys  # gradio is imported here, after GRADIO_TEMP_DIR points into the workspace
    from ui.app import create_app
    from ui.context import AppContext

    app = create_app(AppContext(workspace))
    assets = Path(__file__).resolve().parent / "assets"
    app.launch(server_name=args.host, server_port=args.port, auth=LoginGuard(*credentials) if credentials else None,
               show_error=True, head=keys.HEAD + box_drag.HEAD, max_file_size=MAX_UPLOAD,
               allowed_paths=[str(workspace.root), str(assets)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
