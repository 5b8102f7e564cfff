"""`python -m hpa.external download` against a local server: full, flaky, killed, corrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from external_server import HPAServer, public_hpa, write_list
from hpa.data.images import CHANNELS, read_channel, read_sample, resize
from hpa.external.__main__ import main
from procs import child_env

SIZE = 64
WORKERS = 4
OPTIONS = [  # short backoffs; the timeouts stay the defaults (30 s a read, 300 s a file)
    f"size={SIZE}",
    "progress=false",
    f"download.workers={WORKERS}",
    "download.retries=3",
    "download.backoff_s=0.01",
    "download.max_backoff_s=0.05",
]
# For the one test of timeouts: the server's stalls last until it closes, and these are what
# end them. A healthy answer on a loaded machine takes well under them: no attempt times out
# but the faulty ones, so the number of requests per file is exact.
SHORT_TIMEOUTS = ["download.timeout_s=2", "download.deadline_s=4"]


def download(list_path: Path, out: Path, *extra: str) -> None:
    main(["download", f"list={list_path}", f"out={out}", *OPTIONS, *extra])


def tree(out: Path) -> dict[str, bytes]:
    """Every file of a data root by name: two runs that end alike have equal trees."""
    return {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def channel_paths(rows: list[dict]) -> list[str]:
    return [f"{r['path']}_{c}.jpg" for r in rows for c in CHANNELS]


@pytest.fixture(scope="module")
def data():
    return public_hpa(6)


def test_full_download_writes_competition_layout(tmp_path, data):
    files, rows, planes = data
    with HPAServer(files) as server:
        download(write_list(tmp_path / "list.tsv", server.url, rows), tmp_path / "out")
        requests = dict(server.requests)
    table = pd.read_csv(tmp_path / "out" / "train.csv", dtype=str)
    assert table["ID"].tolist() == [r["path"].strip("/").replace("/", "_") for r in rows]
    assert table["group"].tolist() == [r["path"].split("/")[1] for r in rows]  # antibody folder
    assert requests == {path: 1 for path in channel_paths(rows)}
    for sid in table["ID"]:
        image = read_sample(tmp_path / "out" / "train", sid)
        assert image.shape == (SIZE, SIZE, 4)
        # Tinted JPGs come back as the grayscale channel (brightest plane), resized.
        assert np.abs(image.astype(int) - resize(planes[sid], SIZE).astype(int)).mean() < 4
    assert not list((tmp_path / "out").rglob("*.part"))
    assert not (tmp_path / "out" / "failures.csv").exists()


def test_flaky_server_retries_and_times_out(tmp_path, data, capsys):
    files, rows, _ = data
    paths = channel_paths(rows)
    faults = {
        paths[0]: ["500", "500"],
        paths[1]: ["stall"],
        paths[2]: ["stall_body"],
        paths[3]: ["truncate", "500"],
        paths[4]: ["trickle"],
        paths[5]: ["500"] * 10,  # more than the retries allow
    }
    out = tmp_path / "out"
    with HPAServer(files) as server:
        list_path = write_list(tmp_path / "list.tsv", server.url, rows)
        download(list_path, tmp_path / "clean")
        server.requests.clear()
        server.faults = {k: list(v) for k, v in faults.items()}
        download(list_path, out, *SHORT_TIMEOUTS)
        assert {p: server.requests[p] for p in faults} == {
            paths[0]: 3,
            paths[1]: 2,
            paths[2]: 2,
            paths[3]: 3,
            paths[4]: 2,
            paths[5]: 4,
        }
        printed = capsys.readouterr().out
        assert "1 failed" in printed and "HTTP 500 (after 4 attempts): 1" in printed
        failures = pd.read_csv(out / "failures.csv")
        assert failures["url"].str.endswith(paths[5]).tolist() == [True]
        assert failures["ID"][0] not in pd.read_csv(out / "train.csv")["ID"].tolist()
        assert not list(out.rglob("*.part"))
        for path in (out / "train").iterdir():  # nothing half-written under a final name
            assert read_channel(path).shape == (SIZE, SIZE)

        server.faults.clear()  # the server recovers: a rerun fetches just the missing file
        server.requests.clear()
        download(list_path, out)
        assert dict(server.requests) == {paths[5]: 1}
    assert tree(out) == tree(tmp_path / "clean")


def test_kill_and_rerun_fetches_only_what_is_missing(tmp_path, data):
    files, rows, _ = data
    paths = channel_paths(rows)
    out = tmp_path / "out"
    answered = 9  # two samples and one channel of a third
    with HPAServer(files, answer_first=answered) as server:
        list_path = write_list(tmp_path / "list.tsv", server.url, rows)
        cmd = [sys.executable, "-m", "hpa.external", "download", f"list={list_path}", f"out={out}"]
        env = child_env(threads=None)
        proc = subprocess.Popen(
            [*cmd, *OPTIONS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # Every connection waits on the server: the download can go no further, and has
            # no request on the way. Killed now, it is killed mid-way on any machine.
            while server.held < WORKERS and proc.poll() is None:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the download ended before the kill"
        done = {p.name for p in out.glob("train/*.png")}
        assert len(done) == answered
        assert not (out / "train.csv").exists()
        for name in done:  # every final name holds a whole image
            assert read_channel(out / "train" / name).shape == (SIZE, SIZE)

        server.requests.clear()
        server.release()
        download(list_path, out)
        rerun = dict(server.requests)
        download(list_path, tmp_path / "clean")
    missing = {p for p in paths if f"{p.strip('/').replace('/', '_')[:-4]}.png" not in done}
    assert rerun == dict.fromkeys(missing, 1)  # each missing file once, no finished one again
    assert tree(out) == tree(tmp_path / "clean")


def test_corrupt_and_missing_files_are_reported_and_skipped(tmp_path, data, capsys):
    files, rows, _ = data
    paths = channel_paths(rows)
    with HPAServer({k: v for k, v in files.items() if k != paths[9]}) as server:
        server.corrupt = {paths[4]}
        download(write_list(tmp_path / "list.tsv", server.url, rows), tmp_path / "out")
        assert server.requests[paths[4]] == 1 and server.requests[paths[9]] == 1  # never retried
    failures = pd.read_csv(tmp_path / "out" / "failures.csv").set_index("channel")
    assert sorted(failures["reason"]) == ["HTTP 404", "corrupt image (does not decode)"]
    kept = pd.read_csv(tmp_path / "out" / "train.csv")["ID"].tolist()
    assert len(kept) == len(rows) - 2 and not set(failures["ID"]) & set(kept)
    assert "2 failed" in capsys.readouterr().out
    assert not (
        tmp_path / "out" / "train" / f"{failures['ID'].iloc[0]}_{failures.index[0]}.png"
    ).exists()


def test_listing_filters_and_settings_guard(tmp_path, data, capsys):
    files, rows, _ = data
    rows = [dict(r) for r in rows]
    rows[0]["in_trainset"] = "True"
    rows[1]["Label"] = "Nucleoplasm,Rods & Rings"
    rows[2]["Label"] = "vesicles;  CYTOSOL"
    with HPAServer(files) as server:
        list_path = write_list(tmp_path / "list.tsv", server.url, rows)
        download(list_path, tmp_path / "out")
        assert len(server.requests) == 4 * (len(rows) - 2)
    printed = capsys.readouterr().out
    assert "2 dropped" in printed and "unmapped label 'Rods & Rings': 1" in printed
    table = pd.read_csv(tmp_path / "out" / "train.csv", dtype=str).set_index("ID")
    assert table.loc[rows[2]["path"].strip("/").replace("/", "_"), "Label"] == "16|17"
    with pytest.raises(SystemExit) as exit_info:  # same folder, other size: refused
        download(list_path, tmp_path / "out", "size=32")
    assert exit_info.value.code == 2
    assert "holds images stored with" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["download", "out=x"], "missing list=..."),
        (["fetch"], "first argument must be one of"),
        (["download", "list=nowhere.tsv", "out=x"], "missing list nowhere.tsv"),
    ],
)
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
