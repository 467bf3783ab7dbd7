"""NYC TLC trip data: find or download a month, read and clean it.

Lookup order for a month: the months shipped with the package, directories in
RIDES_DATA_DIRS, the download cache, then the official TLC URL (when online).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from rides import RidesError
from rides.stream.events import PAYMENT_TYPES

SHIPPED_DIR = Path(__file__).with_name("data")
TLC_BASE_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
COLUMNS = [
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
    "passenger_count",
    "payment_type",
    "fare_amount",
    "tip_amount",
]


NUMERIC_COLUMNS = [c for c in COLUMNS if not c.startswith("lpep_")]


class DataUnavailable(RidesError):
    """A month could not be found locally nor downloaded; the message lists what was tried."""


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        match = MONTH_RE.match(text)
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise ValueError(f"month must look like YYYY-MM, got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.year, self.month, 1)

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.offsets.MonthBegin(1)

    def file_name(self, color: str = "green") -> str:
        return f"{color}_tripdata_{self}.parquet"


def cache_dir() -> Path:
    return Path(os.environ.get("RIDES_DATA_CACHE", Path.home() / ".cache" / "rides" / "tlc"))


def _search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("RIDES_DATA_DIRS", "").split(os.pathsep) if p]
    return [SHIPPED_DIR, *extra, cache_dir()]


def download(url: str, target: Path, *, progress: bool = True, timeout: float = 30) -> Path:
    """Stream `url` to `target` atomically, with a progress bar."""
    import requests
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length", 0)) or None
        with (
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp,
            tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar,
        ):
            for block in response.iter_content(1 << 20):
                tmp.write(block)
                bar.update(len(block))
    part = Path(tmp.name)
    if part.read_bytes()[:4] != b"PAR1":
        part.unlink()
        raise DataUnavailable(f"{url} did not return a parquet file")
    part.replace(target)
    return target


def month_path(month: str | Month, color: str = "green", *, progress: bool = True) -> Path:
    """A local parquet file for the month: found locally or downloaded into the cache."""
    month = Month.parse(month) if isinstance(month, str) else month
    name = month.file_name(color)
    tried = []
    for directory in _search_dirs():
        candidate = directory / name
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    url = f"{os.environ.get('RIDES_TLC_BASE_URL', TLC_BASE_URL).rstrip('/')}/{name}"
    try:
        return download(url, cache_dir() / name, progress=progress)
    except Exception as exc:  # requests raises many types; the message lists every place
        raise DataUnavailable(
            f"TLC month {month} is not available: not in {', '.join(tried)}; "
            f"download from {url} failed ({type(exc).__name__}: {exc})"
        ) from None


def local_path(source: str) -> Path:
    """A month (YYYY-MM), a local path, or an s3:// URI → a local parquet file."""
    if MONTH_RE.match(source):
        return month_path(source)
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        import boto3

        target = cache_dir() / "s3" / parsed.netloc / parsed.path.lstrip("/")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))
        return target
    path = Path(source)
    if not path.exists():
        raise DataUnavailable(f"{source} does not exist")
    return path


def month_of(source: str, path: Path) -> Month | None:
    """The month a file holds, from the argument or the TLC file name."""
    if MONTH_RE.match(source):
        return Month.parse(source)
    match = re.search(r"(\d{4}-\d{2})\.parquet$", path.name)
    return Month.parse(match.group(1)) if match else None


def cast_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Explicit casts for both schema eras (int32/int64 from 2023-02, float64 with NaN before)."""
    frame = frame.copy()
    frame["lpep_pickup_datetime"] = pd.to_datetime(frame["lpep_pickup_datetime"])
    if "lpep_dropoff_datetime" in frame:
        frame["lpep_dropoff_datetime"] = pd.to_datetime(frame["lpep_dropoff_datetime"])
    # float64 holds both eras, NaN included; valid rows become int64 zones below.
    for column in NUMERIC_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("float64")
    if "payment_type" in frame:  # TLC's codes only; anything else (0, NaN) is not known
        frame["payment_type"] = frame["payment_type"].where(frame["payment_type"].isin(list(PAYMENT_TYPES)))
    if "lpep_dropoff_datetime" in frame:
        frame["duration"] = (frame["lpep_dropoff_datetime"] - frame["lpep_pickup_datetime"]).dt.total_seconds() / 60.0
    return frame


def input_problems(frame: pd.DataFrame, month: Month | None = None) -> dict[str, pd.Series]:
    """Why a row cannot be scored: reason → mask of the rows it applies to (casted frame)."""
    distance = frame["trip_distance"]
    problems = {
        "PULocationID outside 1-265": ~frame["PULocationID"].between(1, 265),
        "DOLocationID outside 1-265": ~frame["DOLocationID"].between(1, 265),
        "trip_distance missing, negative or infinite": ~(np.isfinite(distance) & (distance >= 0)),
        "pickup time missing": frame["lpep_pickup_datetime"].isna(),
    }
    if month is not None:
        pickup = frame["lpep_pickup_datetime"]
        problems[f"pickup outside {month}"] = pickup.notna() & ((pickup < month.start) | (pickup >= month.end))
    return problems


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that passed `input_problems`, with integer zones."""
    return frame.astype({"PULocationID": "int64", "DOLocationID": "int64"})


def clean(frame: pd.DataFrame, month: Month | None = None) -> pd.DataFrame:
    """Training data: valid inputs, pickups inside the month, rides of 1–60 minutes."""
    frame = cast_columns(frame)
    keep = frame["duration"].between(1, 60)
    for mask in input_problems(frame, month).values():
        keep &= ~mask
    return usable(frame.loc[keep].reset_index(drop=True))


def read_trips(source: str, *, columns: list[str] | None = None) -> pd.DataFrame:
    """Read and clean one month of green-taxi trips."""
    path = local_path(source)
    import pyarrow.parquet as pq

    available = set(pq.ParquetFile(path).schema_arrow.names)
    wanted = [c for c in (columns or COLUMNS) if c in available]
    return clean(pd.read_parquet(path, columns=wanted), month_of(source, path))
