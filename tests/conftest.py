"""Shared fixtures: a character tokenizer and a tiny freshly initialised model (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine OpenMP spinning makes two
    threads many times slower than one. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tok():
    from slowthink.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tok):
    from slowthink.models import build_model

    return build_model("tiny", tok)


def tiny_sft(out: Path, tok, steps: int, system2_fraction: float) -> str:
    """A tiny model trained briefly on 1-digit additions, 1 thread; returns its model folder."""
    import torch

    from slowthink.models import build_model
    from slowthink.train.sft import SFTConfig, train
    from slowthink.tasks import Arithmetic

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = SFTConfig(out=str(out), levels=[1], steps=steps, batch_size=32, lr=3e-3, optimizer="adamw", warmup_steps=5,
                    system2_fraction=system2_fraction, micro_batches=1, eval_every=0, eval_per_level=0,
                    checkpoint_every=1000, threads=1, progress=False)
    train(cfg, task=Arithmetic(op="add", max_level=2), model=build_model("tiny", tok, seed=0), tok=tok)
    torch.set_num_threads(threads)
    return str(out / "model")


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory, tok) -> str:
    """A tiny model after 20 SFT steps on 1-digit addition (System-1): it answers, but often malformed
    (about half its samples at temperature 1) and mostly wrong, so rewards vary within groups. The RL
    trainers' tests start from it (read-only: runs write to their own folders)."""
    return tiny_sft(tmp_path_factory.mktemp("sft"), tok, steps=20, system2_fraction=0.0)


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    """Folder of example plugin task files (good and deliberately broken ones)."""
    return PLUGINS


@pytest.fixture(scope="session")
def s2_model(tmp_path_factory, tok) -> str:
    """A tiny model after 40 SFT steps on worked 1-digit additions (System-2 only, ~5 s): it writes lines,
    closes the think block and answers, but gets the digits mostly wrong, so samples differ; it has never
    seen the revise cue. The search and reflect tests share it (read-only)."""
    return tiny_sft(tmp_path_factory.mktemp("s2_sft"), tok, steps=40, system2_fraction=1.0)
