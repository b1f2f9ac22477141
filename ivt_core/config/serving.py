"""``ServeConfig``: how ``ivt serve`` puts a local checkpoint behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ivt_core.config.evaluation import ModelSettings
from ivt_core.config.settings import check_settings, setting
from ivt_core.errors import InvalidInputError


@dataclass
class ServeConfig(ModelSettings):
    """A local checkpoint served at ``http://HOST:PORT/v1`` (chat completions, models)."""

    host: str = setting("127.0.0.1", "address to bind; any other than a loopback address needs --api-key")
    port: int = setting(8000, "port to listen on", min=1, max=65535)
    api_key: str = setting("", "key clients must send (Authorization: Bearer KEY); default $IVT_SERVE_API_KEY",
                           secret=True)
    served_name: str = setting("", "the model name clients use (default: the checkpoint folder's name)")
    max_batch: int = setting(64, "most requests answered together in one batch", min=1, max=4096)
    batch_wait_ms: float = setting(5.0, "how long the first waiting request waits for others to join its batch",
                                   min=0.0, max=10_000.0)
    max_tokens_limit: int = setting(4096, "most tokens one answer may ask for (max_tokens)", min=1, max=32768)
    engine: str = setting("auto", "cached: the cached engine's batched decode (Qwen3-VL); plain: generate; "
                          "auto: cached where supported", choices=("auto", "cached", "plain"))

    def check(self) -> ServeConfig:
        """Return self if the settings make sense. Raises InvalidInputError saying what to fix."""
        check_settings(self)
        self.check_model()
        if not loopback(self.host) and not self.api_key:
            raise InvalidInputError(f"--host {self.host} serves beyond this machine: give --api-key KEY (or set "
                                    "$IVT_SERVE_API_KEY) so that only clients with the key are answered")
        return self


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
