"""Settings: one pydantic model, read from a TOML file and overridden by `PDL_*` variables.

Nothing is read at import time; `load_settings` is called by the command that needs it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ledger.errors import ConfigurationError

_ENV_PREFIX = "PDL_"


class Settings(BaseModel):
    """Everything the ledger needs to start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(
        default=Path("pdl-data"),
        description="Directory of the embedded default: SQLite files, master key, tokens.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://user@host:port/db); unset means SQLite.",
    )
    postgres_schema: str = Field(default="public", description="PostgreSQL schema for all tables.")
    master_key: SecretStr | None = Field(
        default=None, description="Base64 master key; unset means the file in the data dir."
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the base64 master key (made on first run)."
    )
    policy_file: Path | None = Field(
        default=None, description="Policy document (TOML/JSON); unset means the bundled seed."
    )
    policy_effective_at: datetime | None = Field(
        default=None, description="When a custom first policy took effect; default: now."
    )
    bootstrap_principal: str = Field(
        default="pdl-bootstrap", description="Principal recorded on the first policy version."
    )

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from a TOML file, then `PDL_*` variables, then explicit overrides."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data.update(tomllib.loads(config_file.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{config_file} is not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    for name in Settings.model_fields:
        value = env.get(_ENV_PREFIX + name.upper())
        if value is not None and value != "":
            data[name] = value
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
