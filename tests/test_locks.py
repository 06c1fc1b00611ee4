from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from medcurate.locks import exclusive


def _bump(folder: str, times: int) -> None:
    counter = Path(folder) / "n"
    for _ in range(times):
        with exclusive(Path(folder) / ".lock"):
            n = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(n + 1))


def test_read_modify_write_under_the_lock_loses_nothing(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        list(pool.map(_bump, [str(tmp_path)] * 4, [200] * 4))
    assert (tmp_path / "n").read_text() == "800"


def test_lock_file_folder_is_created(tmp_path: Path) -> None:
    with exclusive(tmp_path / "a" / "b" / ".lock"):
        assert (tmp_path / "a" / "b" / ".lock").exists()
