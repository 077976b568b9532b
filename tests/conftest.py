import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests use tiny tensors: one thread is fastest, and two thrash on a shared, busy CPU
    (measured: a small conv 50x slower with 2 threads while another process ran)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def packed_model_cache(tmp_path_factory):
    """The packed models `synthesize` caches (generate/packed.py) go to a folder of the test
    session's, not the user's cache (subprocesses inherit it)."""
    import os

    before = os.environ.get("DEEPSYNTH_CACHE")
    os.environ["DEEPSYNTH_CACHE"] = str(tmp_path_factory.mktemp("deepsynth-cache"))
    yield
    if before is None:
        os.environ.pop("DEEPSYNTH_CACHE", None)
    else:
        os.environ["DEEPSYNTH_CACHE"] = before


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A tiny built store the training tests share (read only): 4 toy songs, split seed 4
    (3 train songs, 1 validation song)."""
    from deepsynth.data.build import build_store
    from deepsynth.data.toy import write_toy_corpus

    tmp = tmp_path_factory.mktemp("train-store")
    write_toy_corpus(tmp / "corpus", n_songs=4, bars=4)
    build_store(tmp / "corpus", tmp / "store", seed=4)
    return tmp / "store"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
