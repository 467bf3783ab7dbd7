"""Finding and downloading TLC months, offline and 'online' (a local HTTP server)."""

import functools
import http.server
import shutil
import threading

import pytest

from rides.data import SHIPPED_DIR, DataUnavailable, Month, month_path, read_trips


@pytest.fixture
def tlc_server(tmp_path):
    """Serves files like the TLC CDN, on 127.0.0.1, for this test only."""
    root = tmp_path / "cdn"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_shipped_months_are_found_offline(monkeypatch):
    monkeypatch.setenv("RIDES_TLC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    assert month_path("2021-01") == SHIPPED_DIR / "green_tripdata_2021-01.parquet"


def test_downloads_a_month_into_the_cache(tlc_server, tmp_path, monkeypatch):
    root, url = tlc_server
    shutil.copy(SHIPPED_DIR / "green_tripdata_2021-02.parquet", root / "green_tripdata_2019-07.parquet")
    monkeypatch.setenv("RIDES_TLC_BASE_URL", url)
    monkeypatch.setenv("RIDES_DATA_CACHE", str(tmp_path / "cache"))
    path = month_path("2019-07", progress=False)
    assert path == tmp_path / "cache" / "green_tripdata_2019-07.parquet"
    assert path.read_bytes() == (root / "green_tripdata_2019-07.parquet").read_bytes()
    (root / "green_tripdata_2019-07.parquet").unlink()
    assert month_path("2019-07") == path  # cached: no second download


def test_unavailable_month_names_everything_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("RIDES_TLC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("RIDES_DATA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataUnavailable) as info:
        month_path("2015-05", progress=False)
    message = str(info.value)
    assert "TLC month 2015-05 is not available" in message
    assert str(SHIPPED_DIR / "green_tripdata_2015-05.parquet") in message
    assert "http://127.0.0.1:9/green_tripdata_2015-05.parquet" in message


def test_a_non_parquet_answer_is_refused(tlc_server, tmp_path, monkeypatch):
    root, url = tlc_server
    (root / "green_tripdata_2019-08.parquet").write_text("<html>oops</html>")
    monkeypatch.setenv("RIDES_TLC_BASE_URL", url)
    monkeypatch.setenv("RIDES_DATA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataUnavailable, match="did not return a parquet file"):
        month_path("2019-08", progress=False)
    assert not (tmp_path / "cache" / "green_tripdata_2019-08.parquet").exists()


def test_read_trips_filters_to_the_month():
    frame = read_trips("2023-02")
    month = Month.parse("2023-02")
    assert frame["lpep_pickup_datetime"].min() >= month.start
    assert frame["lpep_pickup_datetime"].max() < month.end
    assert frame["duration"].between(1, 60).all()


def test_bad_month_text():
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse("2023-13")
