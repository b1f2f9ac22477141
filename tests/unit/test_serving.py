"""Serving safely: credentials from a file or the environment, a limit on failed logins."""

import pytest

from ui.serving import LOCKOUT_S, MAX_FAILURES, LoginGuard, private_temp_dir, read_credentials


def test_credentials_come_from_a_file_the_environment_or_the_flag(tmp_path, monkeypatch):
    (tmp_path / "auth").write_text("ana:s3cret\n")
    assert read_credentials(None, str(tmp_path / "auth")) == ("ana", "s3cret")
    monkeypatch.setenv("IVT_AUTH", "bo:pw")
    assert read_credentials(None, None) == ("bo", "pw")
    assert read_credentials("cy:x", None) == ("cy", "x")
    monkeypatch.delenv("IVT_AUTH")
    assert read_credentials(None, None) is None


@pytest.mark.parametrize("auth, file_text", [("nopassword", None), (":pw", None), (None, "")])
def test_unusable_credentials_are_one_line(tmp_path, auth, file_text):
    path = None
    if file_text is not None:
        path = tmp_path / "auth"
        path.write_text(file_text)
    with pytest.raises(SystemExit, match="app.py: error:"):
        read_credentials(auth, str(path) if path else None)


def test_logins_lock_after_repeated_failures():
    now = [0.0]
    guard = LoginGuard("ana", "s3cret", clock=lambda: now[0])
    assert guard("ana", "s3cret")
    for _ in range(MAX_FAILURES):
        assert not guard("ana", "guess")
    assert not guard("ana", "s3cret")  # locked: even the right password waits
    now[0] += LOCKOUT_S + 1
    assert guard("ana", "s3cret")


def test_the_temp_folder_is_the_workspaces_and_old_uploads_go(tmp_path):
    import os
    import time

    folder = private_temp_dir(tmp_path)
    old = folder / "old-upload"
    old.mkdir()
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    fresh = folder / "fresh"
    fresh.mkdir()
    private_temp_dir(tmp_path)
    assert folder == tmp_path / ".gradio" and not old.exists() and fresh.exists()
