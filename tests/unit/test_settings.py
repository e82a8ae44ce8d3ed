import os

import pytest

from server.app import ServeSettings, load_settings

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "ops", "funnel.example.toml")


def test_example_config_documents_every_setting():
    settings = load_settings(EXAMPLE)
    assert settings == ServeSettings(data_dir="./funnel-data")
    text = open(EXAMPLE).read()
    for name in ServeSettings.__dataclass_fields__:
        assert f"\n{name} = " in text


def test_flags_override_file(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text('[serve]\nport = 6000\nworkers = 2\n')
    settings = load_settings(str(path), port=7000, workers=None)
    assert settings.port == 7000 and settings.workers == 2


@pytest.mark.parametrize("body, message", [
    ("[serve]\nprot = 1\n", "unknown keys in \\[serve\\]: prot"),
    ("[server]\nport = 1\n", "unknown tables: server"),
    ("[serve]\nworkers = 0\n", "workers must be at least 1"),
    ("[serve]\nport = -1\n", "port must be a non-negative number"),
    ("[serve]\ngrace_s = \"ten\"\n", "grace_s must be a non-negative number"),
])
def test_bad_configs_are_rejected(tmp_path, body, message):
    path = tmp_path / "f.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_settings(str(path))


def test_serve_start_removes_what_a_crashed_index_upload_left(tmp_path):
    from server.app import UPLOADS_DIR, _remove_stale_uploads

    (tmp_path / UPLOADS_DIR).mkdir()
    (tmp_path / UPLOADS_DIR / "index-abc.usearch").write_bytes(b"partial")
    (tmp_path / "keep.txt").write_text("data")
    _remove_stale_uploads(str(tmp_path))
    assert not (tmp_path / UPLOADS_DIR).exists() and (tmp_path / "keep.txt").exists()
    _remove_stale_uploads(str(tmp_path))  # nothing to remove: fine
