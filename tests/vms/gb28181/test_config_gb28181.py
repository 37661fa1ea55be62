"""The cascade's configuration: mistakes named with their line, IDs stable across reordering."""

from __future__ import annotations

import pytest

from tests.vms.gb28181.test_cascade import site
from vms.config_gb28181 import CAMERA_TYPE, channel_id
from vms.config_loader import ConfigError, parse_config


def test_an_id_that_is_not_20_digits_is_named_with_its_line() -> None:
    yaml_text = """
centres: [{id: xingning, name: 兴宁市政务服务中心}]
halls: [{id: tax, name: 税务分厅}]
gb28181:
  platforms:
    - name: meizhou
      server_id: "4414000000200000001"
      domain: "4414000000"
      host: 127.0.0.1
      local_id: "44148100002000000001"
      password: secret
      centre: meizhou
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_text, "site.yaml")
    message = str(caught.value)
    assert "site.yaml:7:" in message and "server_id" in message


def test_channel_ids_keep_to_the_division_code_and_survive_reordering() -> None:
    config = site("udp", 5060, cameras=6)
    ids = {c.id: channel_id(config.gb28181, CAMERA_TYPE, c.id) for c in config.cameras}
    assert all(len(i) == 20 and i.startswith("4414810000131") for i in ids.values())
    assert len(set(ids.values())) == 6
    again = site("udp", 5060, cameras=3)
    assert {c.id: channel_id(again.gb28181, CAMERA_TYPE, c.id) for c in again.cameras}.items() <= ids.items()
