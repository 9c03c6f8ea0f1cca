"""The one settings object of HealthCode Ledger's command line (and the base of the gateway's).

Values come from, in order: explicit arguments, environment variables ``HCL_*``, a ``.env`` file, then
the defaults below. The library itself reads no environment: only the CLI and services build settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ClientSettings"]


class ClientSettings(BaseSettings):
    """Where the chain is and which deployment to use."""

    model_config = SettingsConfigDict(env_prefix="HCL_", env_file=".env", env_ignore_empty=True, extra="ignore")

    rpc_url: str = Field(
        "http://127.0.0.1:8545",
        description="JSON-RPC endpoint of a consortium node; several, comma-separated, fail over in order",
    )
    manifest: Path = Field(Path("deployments/local.json"), description="deployment manifest written by `hcl deploy`")
    rpc_timeout: float = Field(30.0, gt=0, description="seconds to wait for an RPC answer or a receipt")

    @field_validator("rpc_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise ValueError("rpc_url must be an http(s) URL, or several separated by commas (failover order)")
        return ",".join(urls)
