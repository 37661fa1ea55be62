"""Configuration: the embedded default, the example, and the messages for every kind of mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.analysis import Thresholds
from vms.config import Camera, Config, ServerSettings
from vms.config_loader import MAX_PROBLEMS, ConfigError, default_config_text, load_config, parse_config
from vms.config_media import IngestSettings, PictureSettings, WebRtcSettings
from vms.relay import analysis_spec, camera_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.yaml"
SECRET = "Pa55word-secret"

# Line numbers matter: the tests below name them.
BASE = f"""\
halls:
  - id: tax
    name: 税务大厅
  - id: police
    name: 公安大厅
centres:
  - id: xingning
    name: 兴宁市政务服务中心
    halls: all
cameras:
  - id: tax-1
    name: 大厅全景
    hall: tax
    url: demo://tax-1
  - id: police-1
    name: 窗口区
    hall: police
    url: rtsp://192.168.1.64:554/stream1
    credentials:
      username: viewer
      password: {SECRET}
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``site.yaml`` in a fresh working directory, so messages start with exactly ``site.yaml:``."""
    monkeypatch.chdir(tmp_path)
    return Path("site.yaml")


def problems(site: Path, text: str) -> list[str]:
    site.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(site)
    message = str(caught.value)
    assert SECRET not in message
    return message.splitlines()


def edited(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def test_embedded_default_has_the_eight_halls_with_two_demo_cameras_each() -> None:
    config = load_config(None)
    assert len(config.halls) == 8
    assert len(config.cameras) == 16
    assert [centre.id for centre in config.centres] == ["meizhou", "xingning"]
    assert {camera.scheme for camera in config.cameras} == {"demo"}
    for hall in config.halls:
        assert hall.department
        assert [camera.id for camera in config.cameras_in_hall(hall.id)] == [f"{hall.id}-1", f"{hall.id}-2"]
    for centre in config.centres:
        assert config.halls_for_centre(centre.id) == config.halls
    assert config.hall("tax").name == "国家税务总局兴宁市税务局第一税务分厅办税服务厅"
    assert config.webrtc.ice_servers == []  # never a public STUN server


PLAN_HALLS = [
    # The annex of 《兴宁市政务服务分厅设立工作方案》 (兴市府办函〔2022〕83号), as written there:
    # hall, supervising department.
    ("兴宁市社会保险基金管理局办事大厅", "市社会保险基金管理局"),
    ("兴宁市公共就业服务中心", "市人力资源社会保障局"),
    ("兴宁市公安局综合办证大厅", "市公安局"),
    ("兴宁市医疗保障事业管理中心服务大厅", "市医疗保障局"),
    ("兴宁市退役军人服务中心", "市退役军人事务局"),
    ("兴宁市残疾人联合会服务大厅", "市残联"),
    ("国家税务总局兴宁市税务局第一税务分厅办税服务厅", "市税务局"),
    ("兴宁市公共法律服务中心", "市司法局"),
]


def test_embedded_halls_are_the_plans_with_their_second_plates() -> None:
    config = load_config(None)
    assert [(hall.name, hall.department) for hall in config.halls] == PLAN_HALLS
    plates = [hall.plate for hall in config.halls]
    assert all(re.fullmatch(r"兴宁市政务服务中心\w+分厅", plate) for plate in plates), plates
    assert len(set(plates)) == 8
    assert config.hall("tax").plate == "兴宁市政务服务中心税务分厅"


def test_a_plate_is_optional_and_bounded() -> None:
    config = parse_config(BASE, "site.yaml")
    assert all(hall.plate == "" for hall in config.halls)
    with pytest.raises(ConfigError):
        parse_config(edited("name: 公安大厅", "name: 公安大厅\n    plate: " + "分" * 65), "site.yaml")


def test_embedded_default_states_the_model_defaults() -> None:
    config = load_config(None)
    assert config.server == ServerSettings()
    assert config.webrtc == WebRtcSettings()
    assert config.ingest == IngestSettings()
    assert config.pictures == PictureSettings()
    assert "demo://" in default_config_text()


def test_example_site_loads() -> None:
    config = load_config(EXAMPLE)
    assert {camera.scheme for camera in config.cameras} == {"rtsp", "file", "demo"}
    lobby = config.camera("tax-lobby")
    assert lobby.credentials is not None
    assert lobby.credentials.password.get_secret_value()
    assert [hall.id for hall in config.halls_for_centre("meizhou")] == ["tax"]
    windows = config.ingest_for("tax-windows")
    assert (windows.stall_timeout, windows.offline_after) == (12, 30)
    assert windows.backoff_max == config.ingest.backoff_max == 60
    assert config.ingest_for("tax-lobby") == config.ingest


def test_analysis_settings_of_the_site_and_of_a_camera() -> None:
    text = edited("halls:\n", "analysis:\n  interval: 1\n  thresholds: {dark_brightness: 30}\nhalls:\n")
    text = text.replace(
        "url: demo://tax-1", "url: demo://tax-1\n    analysis: {thresholds: {covered_share: 0.5}}", 1
    )
    config = parse_config(text, "site.yaml")
    first, *others = config.cameras
    spec = analysis_spec(config, first)
    assert spec is not None and spec.interval == 1
    assert (spec.thresholds.dark_brightness, spec.thresholds.covered_share) == (30, 0.5)
    assert all(
        analysis_spec(config, c).thresholds.covered_share == Thresholds().covered_share for c in others
    )
    off = parse_config(
        text.replace("covered_share: 0.5}", "covered_share: 0.5}, enabled: false"), "site.yaml"
    )
    assert analysis_spec(off, off.cameras[0]) is None and analysis_spec(off, off.cameras[1]) is not None


def test_base_text_is_valid(site: Path) -> None:
    site.write_text(BASE, encoding="utf-8")
    config = load_config(site)
    assert config.camera("police-1").transport == "tcp"
    assert config.camera("tax-1").enabled


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "    hall: tax\n",
            "    hall: hall9\n",
            "site.yaml:13:5: cameras[0].hall: unknown hall 'hall9'; use one of: tax, police (or add it "
            "under halls:)",
            id="unknown-hall",
        ),
        pytest.param(
            "    hall: tax\n",
            "    hall: taxx\n",
            "site.yaml:13:5: cameras[0].hall: unknown hall 'taxx'; did you mean 'tax'? use one of: tax, "
            "police "
            "(or add it under halls:)",
            id="unknown-hall-close-match",
        ),
        pytest.param(
            "    halls: all\n",
            "    halls: [tax, customs]\n",
            "site.yaml:9:18: centres[0].halls[1]: unknown hall 'customs'; use one of: tax, police "
            "(or add it under halls:)",
            id="centre-unknown-hall",
        ),
        pytest.param(
            "url: demo://tax-1",
            "url: http://192.168.1.70/video.mjpg",
            "site.yaml:14:5: cameras[0].url: unsupported URL scheme 'http'; use rtsp://, rtsps://, whep://, "
            "wheps://, file:/// or demo://",
            id="bad-scheme",
        ),
        pytest.param(
            "url: demo://tax-1",
            "url: rtsp:///stream1",
            "site.yaml:14:5: cameras[0].url: the rtsp URL has no host; write it like "
            "rtsp://192.168.1.64:554/stream1",
            id="rtsp-without-host",
        ),
        pytest.param(
            "url: demo://tax-1",
            "url: /srv/video/lobby.mp4",
            "site.yaml:14:5: cameras[0].url: the URL has no scheme; write rtsp://host/path, "
            "rtsps://host/path, "
            "file:///absolute/path or demo://name",
            id="no-scheme",
        ),
        pytest.param(
            "url: demo://tax-1",
            "url: file://video/lobby.mp4",
            "site.yaml:14:5: cameras[0].url: 'video' was read as a host name; a file URL takes an absolute "
            "path "
            "after three slashes, e.g. file:///srv/video/lobby.mp4",
            id="file-two-slashes",
        ),
        pytest.param(
            "url: rtsp://192.168.1.64:554/stream1",
            f"url: rtsp://admin:{SECRET}@192.168.1.64:554/stream1",
            "site.yaml:18:5: cameras[1].url: the URL contains a password; remove 'user:password@' from the "
            "url "
            "and write credentials: {username: ..., password: ...} under this camera",
            id="password-in-url",
        ),
        pytest.param(
            "url: rtsp://192.168.1.64:554/stream1",
            f"url: rtsp://admin:{SECRET}/stream1",
            "site.yaml:18:5: cameras[1].url: the URL cannot be parsed: the port must be a number from 1 to "
            "65535 "
            "and an IPv6 host goes in [brackets]",
            id="password-taken-for-port",
        ),
        pytest.param(
            "    hall: tax\n",
            "    hall: tax\n    enabled: maybe\n",
            "site.yaml:14:5: cameras[0].enabled: expected true or false, found 'maybe'",
            id="wrong-type",
        ),
        pytest.param(
            "    hall: tax\n",
            "    hall: tax\n    transport: tpc\n",
            "site.yaml:14:5: cameras[0].transport: expected one of tcp, udp, found 'tpc'; did you mean "
            "'tcp'?",
            id="literal-close-match",
        ),
        pytest.param(
            "  - id: tax-1\n",
            "  - id: Tax 1\n",
            "site.yaml:11:5: cameras[0].id: 'Tax 1' is not a valid id; ids are 1-64 lowercase letters, "
            "digits, "
            "'-' and '_', starting with a letter or digit, e.g. 'tax-1'",
            id="bad-id",
        ),
        pytest.param(
            "      username: viewer\n",
            "      username: viewer\n      user: viewer\n",
            "site.yaml:21:7: cameras[1].credentials: unknown key 'user'; did you mean 'username'? "
            "allowed keys: username, password",
            id="unknown-nested-key",
        ),
        pytest.param(
            "    hall: tax\n",
            "    hall: tax\n    username: viewer\n",
            "site.yaml:14:5: cameras[0]: unknown key 'username' here; it belongs under credentials: "
            "(allowed keys: id, name, hall, url, sub_url, transport, enabled, on_demand, idle_timeout, "
            "audio, credentials, token, ingest, record, record_stream, retention_days, analysis)",
            id="key-in-wrong-section",
        ),
        pytest.param(
            "halls:\n",
            "stall_timeout: 3\nhalls:\n",
            "site.yaml:1:1: unknown key 'stall_timeout' here; it belongs under ingest: "
            "(allowed keys: server, webrtc, ingest, pictures, transcode, recording, exports, analysis, "
            "database, auth, audit, metrics, rtsp_server, centres, halls, cameras, gb28181, cluster)",
            id="setting-outside-its-section",
        ),
        pytest.param(
            "    url: demo://tax-1\n",
            "    url: demo://tax-1\n    credentials: {username: a, password: b}\n",
            "site.yaml:11:5: cameras[0]: credentials are only used by rtsp:// and rtsps:// cameras, "
            "this one is demo://; remove credentials: or fix the url",
            id="credentials-on-demo",
        ),
        pytest.param(
            f"      password: {SECRET}\n",
            "      password: 123456\n",
            "site.yaml:21:7: cameras[1].credentials.password: expected text, found a value that is not text "
            "(not shown); put the value in quotes",
            id="numeric-password",
        ),
        pytest.param(
            "halls:\n",
            "ingest:\n  offline_after: 2\nhalls:\n",
            "site.yaml:1:1: ingest: offline_after (2) is shorter than stall_timeout (5); a camera stalls "
            "before "
            "it goes offline, so make offline_after at least stall_timeout",
            id="ingest-out-of-order",
        ),
        pytest.param(
            "url: demo://tax-1",
            "url: demo://tax-1?size=13x7",
            "site.yaml:14:5: cameras[0].url: demo source tax-1: size must be even, from 32x32 to "
            "3840x2160, not 13x7; for example demo://lobby?size=640x360&fps=25&gop=50",
            id="demo-bad-size",
        ),
        pytest.param(
            "halls:\n",
            "webrtc:\n  ice_host_addresses: [localhost]\nhalls:\n",
            "site.yaml:2:24: webrtc.ice_host_addresses[0]: 'localhost' is not an IP address; "
            "write one like 192.168.1.10 or fd00::10",
            id="ice-host-not-ip",
        ),
        pytest.param(
            "halls:\n",
            "server:\nhalls:\n",
            "site.yaml:1:1: server: expected a mapping with keys such as host, port, data_dir, found "
            "nothing; "
            "remove the empty line or indent its keys under it",
            id="empty-section",
        ),
        pytest.param(
            "halls:\n",
            "exports:\n  max_concurrent: 0\nhalls:\n",
            "site.yaml:2:3: exports.max_concurrent: must be at least 1, found 0",
            id="exports-concurrency",
        ),
        pytest.param(
            "halls:\n",
            "exports:\n  retention: 30\nhalls:\n",
            "site.yaml:2:3: exports: unknown key 'retention'; did you mean 'retention_days'? "
            "allowed keys: directory, retention_days, max_concurrent",
            id="exports-unknown-key",
        ),
        pytest.param(
            "halls:\n",
            "auth:\n  viewer_permissions: [playback, admin]\nhalls:\n",
            "site.yaml:2:34: auth.viewer_permissions[1]: expected one of snapshot, playback, found 'admin'",
            id="viewer-permission-unknown",
        ),
        pytest.param(
            "halls:\n",
            "auth:\n  viewer_permissions: playback\nhalls:\n",
            "site.yaml:2:3: auth.viewer_permissions: expected a list (one '- ' line per item, or [] for "
            "none), found 'playback'",
            id="viewer-permissions-not-a-list",
        ),
        pytest.param(
            "halls:\n",
            "analysis:\n  thresholds:\n    dark: 30\nhalls:\n",
            "site.yaml:3:5: analysis.thresholds: unknown key 'dark'; allowed keys: dark_brightness, "
            "dark_ratio, overexposed_clipped, covered_share, blurred_ratio, frozen_ratio, "
            "moved_in_place, moved_ratio, colour_cast, noisy_sigma",
            id="analysis-threshold-unknown",
        ),
        pytest.param(
            "halls:\n",
            "analysis:\n  interval: 0.05\nhalls:\n",
            "site.yaml:2:3: analysis.interval: must be at least 0.2, found 0.05",
            id="analysis-interval-too-short",
        ),
    ],
)
def test_one_mistake_one_message(site: Path, old: str, new: str, expected: str) -> None:
    assert problems(site, edited(old, new)) == [expected]


def test_unknown_key_is_reported_with_the_missing_key_it_hides(site: Path) -> None:
    assert problems(site, edited("url: demo://tax-1", "urll: demo://tax-1")) == [
        "site.yaml:11:5: cameras[0]: missing required key 'url' (rtsp://, rtsps://, whep://, wheps://, "
        "file:///path or demo://name; no credentials in it); add a 'url:' line to this entry",
        "site.yaml:14:5: cameras[0]: unknown key 'urll'; did you mean 'url'? allowed keys: id, name, hall, "
        "url, sub_url, transport, enabled, on_demand, idle_timeout, audio, credentials, token, ingest, "
        "record, record_stream, retention_days, analysis",
    ]


def test_duplicate_camera_id_points_at_the_second(site: Path) -> None:
    assert problems(site, edited("  - id: police-1\n", "  - id: tax-1\n")) == [
        "site.yaml:15:5: cameras[1].id: duplicate camera id 'tax-1', already used by cameras[0] (line 11); "
        "ids must be unique, so rename or remove one of them"
    ]


def test_cross_references_are_checked_even_when_fields_are_wrong(site: Path) -> None:
    text = edited("    hall: police\n", "    hall: polise\n    enabled: maybe\n")
    assert problems(site, text) == [
        "site.yaml:17:5: cameras[1].hall: unknown hall 'polise'; did you mean 'police'? use one of: tax, "
        "police "
        "(or add it under halls:)",
        "site.yaml:18:5: cameras[1].enabled: expected true or false, found 'maybe'",
    ]


def test_duplicate_mapping_key_names_both_lines(site: Path) -> None:
    text = edited("    url: demo://tax-1\n", "    url: demo://tax-1\n    url: demo://tax-2\n")
    assert problems(site, text) == [
        "site.yaml:15:5: duplicate key 'url' (first at line 14); YAML would silently keep only the last one, "
        "so remove or rename one of them"
    ]


def test_yaml_syntax_error_names_the_line(site: Path) -> None:
    assert problems(site, edited("    name: 大厅全景\n", "\tname: 大厅全景\n")) == [
        "site.yaml:12:1: YAML syntax error: found character '\\t' that cannot start any token; "
        "indent with spaces, never tabs"
    ]
    [message] = problems(site, edited("    name: 大厅全景\n", "    name: 大厅: 全景\n"))
    assert message.startswith("site.yaml:12:13: YAML syntax error: mapping values are not allowed here;")
    assert "must be quoted" in message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(site: Path, text: str) -> None:
    [message] = problems(site, text)
    assert message.startswith("site.yaml:1:1: the file is empty (or only comments); write at least halls:")
    assert "vms/default_config.yaml" in message


def test_top_level_must_be_a_mapping(site: Path) -> None:
    [message] = problems(site, "- id: tax\n  name: x\n")
    assert message.startswith("site.yaml:1:1: the top level must be a mapping of sections (server:, webrtc:,")
    assert message.endswith(
        "found a list; the embedded default (vms/default_config.yaml) is a complete, commented example"
    )


def test_missing_file_names_the_path(site: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("nowhere.yaml"))
    [message] = str(caught.value).splitlines()
    assert message.startswith(
        f"nowhere.yaml: no such file (looked for {Path.cwd() / 'nowhere.yaml'}); check the path"
    )


def test_directory_and_non_utf8(site: Path) -> None:
    Path("conf.d").mkdir()
    with pytest.raises(ConfigError, match=r"^conf.d: is a directory; give the path of the YAML file itself$"):
        load_config(Path("conf.d"))
    site.write_bytes("halls: []\ncameras: []\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"^site.yaml:3: byte 0xe9 is not UTF-8; save the file as UTF-8 text$"
    ):
        load_config(site)


def test_many_problems_are_listed_in_file_order_and_capped(site: Path) -> None:
    cameras = "".join(
        f"  - {{id: cam-{i}, name: c, hall: tax, url: 'demo://c', enabled: maybe}}\n" for i in range(12)
    )
    lines = problems(site, "halls: [{id: tax, name: 税务大厅}]\ncameras:\n" + cameras)
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[0].startswith("site.yaml:3:") and lines[9].startswith("site.yaml:12:")
    assert lines[-1] == "... and 2 more problems; fix these first"


def test_secrets_never_appear_in_repr_or_json(site: Path) -> None:
    site.write_text(
        BASE + "webrtc:\n  ice_servers:\n    - urls: turn:turn.example.org:3478\n"
        "      username: u\n      credential: TurnSecret9\n",
        encoding="utf-8",
    )
    config = load_config(site)
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.model_dump())):
        assert SECRET not in text
        assert "TurnSecret9" not in text
    credentials = config.camera("police-1").credentials
    assert credentials is not None
    assert credentials.password.get_secret_value() == SECRET


def test_validation_error_text_never_echoes_a_url_password() -> None:
    with pytest.raises(ValidationError) as caught:
        Camera(id="c", name="c", hall="h", url=f"rtsp://admin:{SECRET}@10.0.0.5/stream")
    assert SECRET not in str(caught.value)


def test_ingest_override_that_conflicts_after_merging(site: Path) -> None:
    text = edited("    url: demo://tax-1\n", "    url: demo://tax-1\n    ingest: {offline_after: 3}\n")
    assert problems(site, text) == [
        "site.yaml:15:5: cameras[0].ingest: offline_after (3) is shorter than stall_timeout (5) once this "
        "camera's overrides apply; a camera stalls before it goes offline, so make offline_after at least "
        "stall_timeout"
    ]


def test_lookups_and_centre_selection() -> None:
    config = parse_config(edited("    halls: all\n", "    halls: [police]\n"), "site.yaml")
    assert config.camera("tax-1").hall == "tax"
    assert [hall.id for hall in config.halls_for_centre("xingning")] == ["police"]
    with pytest.raises(KeyError):
        config.camera("nope")
    with pytest.raises(KeyError):
        config.hall("nope")
    with pytest.raises(KeyError):
        config.halls_for_centre("nope")


def test_models_are_frozen_and_strict() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.server.port = 1
    with pytest.raises(ValidationError):
        ServerSettings.model_validate({"prot": 1})
    assert ServerSettings.model_validate({"log_level": "debug"}).log_level == "DEBUG"


def test_redacted_url_drops_userinfo() -> None:
    camera = Camera.model_construct(url=f"rtsp://admin:{SECRET}@10.0.0.5:554/stream?ch=1")
    assert camera.redacted_url == "rtsp://10.0.0.5:554/stream?ch=1"
    assert Camera.model_construct(url="demo://x").redacted_url == "demo://x"


def test_yaml_anchors_and_merge_keys_work(site: Path) -> None:
    text = BASE + "  - <<: &cam {name: 备用, hall: tax}\n    id: tax-2\n    url: demo://tax-2\n"
    site.write_text(text, encoding="utf-8")
    assert load_config(site).camera("tax-2").name == "备用"


def test_duplicate_hall_and_centre_ids(site: Path) -> None:
    text = edited("  - id: police\n", "  - id: tax\n").replace(
        "    halls: all\n", "    halls: all\n  - {id: xingning, name: 兴宁}\n", 1
    )
    assert problems(site, text) == [
        "site.yaml:4:5: halls[1].id: duplicate hall id 'tax', already used by halls[0] (line 2); "
        "ids must be unique, so rename or remove one of them",
        "site.yaml:10:6: centres[1].id: duplicate centre id 'xingning', already used by centres[0] (line 7); "
        "ids must be unique, so rename or remove one of them",
        "site.yaml:18:5: cameras[1].hall: unknown hall 'police'; use one of: tax (or add it under halls:)",
    ]


def test_alias_that_contains_itself(site: Path) -> None:
    [message, *_] = problems(site, "halls: &h\n  - *h\ncameras: []\n")
    assert message == "site.yaml:1:8: this list or mapping contains an alias of itself; remove that *alias"


@pytest.mark.parametrize(
    ("ingest", "expected"),
    [
        # start-up work still fits:
        ("ingest:\n  connect_timeout: 0.5\n  stall_timeout: 1\n  offline_after: 1\n", 20.0),
        ("ingest:\n  connect_timeout: 30\n  offline_after: 60\n", 90.0),  # a slow network's own bound
    ],
)
def test_a_camera_may_take_its_sites_timeouts_to_open_but_never_less_than_start_up_needs(
    ingest: str, expected: float
) -> None:
    config = parse_config(ingest + BASE, "site.yaml")
    spec = camera_spec(config, config.camera("tax-1"))
    assert spec.policy.open_timeout == expected
    assert spec.policy.first_packet_timeout == config.ingest.connect_timeout + config.ingest.stall_timeout
