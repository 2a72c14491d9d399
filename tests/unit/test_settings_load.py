"""`load_settings`: the listen address's form and port range, and errors that name where the
bad value was set (a file, a `PDL_*` variable or a command-line option)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import ConfigurationError
from server.settings import load_settings


@pytest.mark.parametrize(
    "address", ["127.0.0.1:0", "127.0.0.1:65535", "localhost:50051", "[::1]:50051"]
)
def test_a_listen_address_with_a_port_up_to_65535_is_accepted(address: str) -> None:
    assert load_settings(None, environ={}, listen=address).listen == address


@pytest.mark.parametrize(
    "address", ["127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1", ":50051", "a b:1", "x:-1"]
)
def test_a_listen_address_out_of_form_or_range_is_refused(address: str) -> None:
    with pytest.raises(ConfigurationError, match="from 0 to 65535"):
        load_settings(None, environ={}, listen=address)


def test_a_bad_value_names_the_variable_it_came_from() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(None, environ={"PDL_LISTEN": "bogus"})

    assert str(refused.value).startswith("invalid settings: listen (from PDL_LISTEN): expected")


def test_a_bad_value_names_the_option_or_file_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "pdl.toml"
    config.write_text("max_batch_items = 0\n")

    with pytest.raises(ConfigurationError) as from_file:
        load_settings(config, environ={})
    with pytest.raises(ConfigurationError) as from_option:
        load_settings(None, environ={}, listen="nowhere")

    assert f"max_batch_items (from {config}): " in str(from_file.value)
    assert "listen (from --listen): " in str(from_option.value)
