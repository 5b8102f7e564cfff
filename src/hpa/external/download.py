"""Concurrent, resumable download of channel images: bounded connections, retries, timeouts.

Every file goes `NAME.download.part` (bytes as they arrive) -> decoded and checked -> converted
-> renamed to its final name, so a final name always holds a whole, decodable image and a rerun
skips it. Only the standard library talks HTTP: no extra dependency on a Kaggle machine.
"""

from __future__ import annotations

import http.client
import random
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hpa.errors import InputError
from hpa.external.store import StoreOptions, convert_channel

USER_AGENT = "hpa-external/1 (+urllib)"
CHUNK = 1 << 18


@dataclass(frozen=True)
class FetchOptions:
    workers: int  # parallel connections
    retries: int  # extra attempts after the first, for transient failures only
    timeout_s: float  # connect and per-read socket timeout: a stalled server fails fast
    deadline_s: float  # whole-file limit: a server that trickles bytes fails too
    backoff_s: float  # first retry waits about this long, doubling each time (with jitter)
    max_backoff_s: float

    def __post_init__(self) -> None:
        if self.workers < 1 or self.retries < 0 or self.timeout_s <= 0 or self.deadline_s <= 0:
            raise InputError(
                f"download options {self}: need workers >= 1, retries >= 0, timeouts > 0"
            )


@dataclass(frozen=True)
class FileJob:
    sample_id: str
    channel: str
    url: str
    dest: Path


@dataclass
class Outcome:
    job: FileJob
    ok: bool
    reason: str = ""  # why it failed, e.g. "HTTP 404", "timeout", "corrupt image"
    nbytes: int = 0
    attempts: int = 0


class Transient(Exception):
    """Worth another try: 5xx/429, timeouts, dropped or truncated transfers."""


class Permanent(Exception):
    """Another try would get the same answer: 404 and alike, a complete but undecodable file."""


def fetch(url: str, part: Path, opts: FetchOptions) -> tuple[int, bool]:
    """Stream `url` into `part`: (bytes, whether the server announced that length). Raises
    Transient or Permanent."""
    start = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with (
            urllib.request.urlopen(request, timeout=opts.timeout_s) as response,
            part.open("wb") as out,
        ):
            expected = response.headers.get("Content-Length")
            total = 0
            # read1 returns what has arrived: the deadline is checked even while bytes trickle.
            read = getattr(response, "read1", response.read)
            while chunk := read(CHUNK):
                out.write(chunk)
                total += len(chunk)
                if time.monotonic() - start > opts.deadline_s:
                    raise Transient(f"slower than deadline_s={opts.deadline_s:g}")
    except urllib.error.HTTPError as err:
        retry = err.code in (408, 425, 429) or err.code >= 500
        wait_s = _retry_after(err)
        raise (Transient if retry else Permanent)(f"HTTP {err.code}", wait_s) from None
    except urllib.error.URLError as err:
        reason = (
            "timeout" if isinstance(err.reason, TimeoutError) else f"cannot connect ({err.reason})"
        )
        raise Transient(reason) from None
    except TimeoutError:
        raise Transient("timeout") from None
    except (http.client.HTTPException, ConnectionError, ssl.SSLError) as err:
        raise Transient(f"connection dropped ({type(err).__name__})") from None
    known = expected is not None and expected.isdigit()
    if known and total != int(expected):
        raise Transient(f"truncated ({total} of {expected} bytes)")
    return total, known


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    value = err.headers.get("Retry-After") if err.headers else None
    return float(value) if value and value.isdigit() else None


def backoff(attempt: int, opts: FetchOptions, hint: float | None = None) -> float:
    """Exponential backoff with jitter (so parallel workers don't retry in lock-step)."""
    base = min(opts.max_backoff_s, opts.backoff_s * 2**attempt)
    if hint is not None:
        base = min(opts.max_backoff_s, max(base, hint))
    return base * random.uniform(0.5, 1.0)


def run_job(
    job: FileJob, fetch_opts: FetchOptions, store: StoreOptions, stop: threading.Event
) -> Outcome:
    """Download, verify and convert one file, retrying transient failures."""
    part = job.dest.with_name(job.dest.name + ".download.part")
    reason = ""
    for attempt in range(fetch_opts.retries + 1):
        if stop.is_set():
            return Outcome(job, False, "interrupted", attempts=attempt)
        hint = None
        try:
            nbytes, complete = fetch(job.url, part, fetch_opts)
            try:
                convert_channel(part, job.dest, store, move_unchanged=True)
            except InputError:
                if not complete:  # no Content-Length: it may have been cut short
                    raise Transient("does not decode (length unknown)") from None
                # Every announced byte arrived, yet they are no image: a retry gets the same.
                raise Permanent("corrupt image (does not decode)") from None
            return Outcome(job, True, nbytes=nbytes, attempts=attempt + 1)
        except Permanent as err:
            return Outcome(job, False, str(err.args[0]), attempts=attempt + 1)
        except Transient as err:
            reason = str(err.args[0])
            hint = err.args[1] if len(err.args) > 1 else None
        finally:
            part.unlink(missing_ok=True)
        if attempt < fetch_opts.retries:
            stop.wait(backoff(attempt, fetch_opts, hint))
    return Outcome(
        job,
        False,
        f"{reason} (after {fetch_opts.retries + 1} attempts)",
        attempts=fetch_opts.retries + 1,
    )


@dataclass
class RunReport:
    outcomes: list[Outcome] = field(default_factory=list)
    present: int = 0  # files already complete from an earlier run
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.outcomes)

    def reasons(self) -> Counter[str]:
        return Counter(o.reason for o in self.failed)


def download_files(
    jobs: list[FileJob], fetch_opts: FetchOptions, store: StoreOptions, progress: bool = True
) -> RunReport:
    """Run the jobs whose final file is missing, `workers` at a time, with a progress bar."""
    report = RunReport()
    todo = [j for j in jobs if not j.dest.exists()]
    report.present = len(jobs) - len(todo)
    stop = threading.Event()
    start = time.monotonic()
    bar = tqdm(
        total=len(jobs), initial=report.present, unit="file", desc="download", disable=not progress
    )
    # Submit lazily: a list of 300k files must not become 300k futures at once.
    pending, queue = set(), iter(todo)
    with ThreadPoolExecutor(max_workers=fetch_opts.workers, thread_name_prefix="hpa-dl") as pool:
        try:
            while True:
                while (
                    len(pending) < 4 * fetch_opts.workers and (job := next(queue, None)) is not None
                ):
                    pending.add(pool.submit(run_job, job, fetch_opts, store, stop))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    report.outcomes.append(future.result())
                    bar.update()
                rate = report.nbytes / max(time.monotonic() - start, 1e-6) / 1e6
                bar.set_postfix_str(f"{rate:.1f} MB/s, {len(report.failed)} failed")
        except BaseException:
            stop.set()  # workers finish their current attempt and return; parts are removed
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()
    report.seconds = time.monotonic() - start
    return report
