"""The shared configuration's hash and the ``cluster:`` section's validation."""

from __future__ import annotations

import pytest

from tests.vms.cluster.helpers import site
from vms.cluster.config_hash import SHARED, config_hash, differing, section_hashes
from vms.config_loader import ConfigError, parse_config


def hashes(instance_id: str, extra: str = "", **cluster: object) -> dict[str, str]:
    return section_hashes(parse_config(site(instance_id, 2, extra, **cluster), "test.yaml"))


def test_an_instance_s_own_settings_do_not_count() -> None:
    mine = hashes("a")
    theirs = hashes(
        "b",
        "server:\n  port: 8001\n  data_dir: /srv/b\nrecording:\n  directory: /mnt/b\n"
        "rtsp_server:\n  enabled: true\n  port: 9554\n",
        http_url="http://10.0.0.12:8000",
        rtsp_url="rtsp://10.0.0.12:8554",
    )
    assert mine == theirs and config_hash(mine) == config_hash(theirs)
    assert list(mine) == list(SHARED)


def test_a_shared_difference_names_its_section() -> None:
    mine = hashes("a")
    assert differing(mine, hashes("a", "recording:\n  retention_days: 7\n")) == ["recording"]
    assert differing(mine, hashes("a", lease_timeout=3)) == ["cluster"]
    assert differing(mine, hashes("a", "auth:\n  lockout_seconds: 60\n")) == ["auth"]
    camera = site("a", 1).replace("demo://cam-00?size=160x90&gop=25", "rtsp://10.0.0.5/main")
    secret = "    credentials: {username: u, password: %s}\n"
    one, two = (camera.replace("cluster:", secret % word + "cluster:") for word in ("one", "two"))
    one, two = parse_config(one, "t.yaml"), parse_config(two, "t.yaml")
    assert differing(section_hashes(one), section_hashes(two)) == ["cameras"]  # a secret counts too
    assert differing(mine, {}) == list(SHARED)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("renew_interval: 5", "renew_interval (5 s) must be shorter than lease_timeout minus fence_margin"),
        ("fence_margin: 4.5", "must be shorter than lease_timeout minus fence_margin (1.5 s)"),
        ("http_url: ftp://x", "http_url must be a http:// or https:// URL"),
        ("rtsp_url: rtsp://user:pw@x:8554", "rtsp_url must not carry a user name or password"),
        ("max_moves: 0", "cluster.max_moves: must be at least 1"),
        ("leases: 3", "cluster: unknown key 'leases'"),
    ],
)
def test_the_cluster_section_is_checked(setting: str, says: str) -> None:
    text = f"cluster:\n  lease_timeout: 6\n  {setting}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "site.yaml")
    assert says in str(refused.value) and "site.yaml" in str(refused.value)
    assert "pw" not in str(refused.value)


def test_the_timing_follows_the_lease_timeout() -> None:
    cluster = parse_config("cluster: {lease_timeout: 6}\nrtsp_server: {enabled: true}\n", "t.yaml").cluster
    assert cluster is not None
    assert (cluster.renew_every, cluster.fence_after, cluster.instance_id) == (2.0, 5.0, None)


def test_a_cluster_without_the_rtsp_re_serve_is_refused_naming_the_line_and_the_fix() -> None:
    text = "halls: []\ncluster:\n  lease_timeout: 6\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "site.yaml")
    message = str(refused.value)
    assert message.startswith("site.yaml:2:1: cluster: "), message
    assert "rtsp_server: {enabled: true}" in message
    assert parse_config(text + "rtsp_server: {enabled: true}\n", "site.yaml").cluster is not None
