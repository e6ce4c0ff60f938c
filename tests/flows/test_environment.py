"""The command's environment defaults: set before torch is imported, a user's value wins,
and torch honours the huge-page setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows import environment

THP = "THP_MEM_ALLOC_ENABLE"


def test_huge_pages_for_torch_by_default(monkeypatch):
    monkeypatch.delenv(THP, raising=False)
    environment.configure()
    assert environment.os.environ[THP] == "1"


def test_a_users_huge_page_setting_wins(monkeypatch):
    monkeypatch.setenv(THP, "0")
    environment.configure()
    assert environment.os.environ[THP] == "0"


_ALIGNED = """
import torch
x = torch.empty(4 * 1024**2, dtype=torch.uint8)  # 4 MiB: above torch's huge-page threshold
print(x.data_ptr() % 4096 == 0)
"""


@pytest.mark.parametrize(("value", "aligned"), [("1", "True"), ("0", "False")])
def test_torch_allocates_large_tensors_for_huge_pages(value, aligned):
    """PyTorch reads the variable: with it, a large CPU tensor is allocated page-aligned
    and advised for huge pages (``madvise``); without it, with torch's usual 64-byte
    alignment inside glibc's mapping (never on a page boundary in a fresh process)."""
    env = {k: v for k, v in environment.os.environ.items() if k != THP}
    out = subprocess.run([sys.executable, "-c", _ALIGNED], env={**env, THP: value},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == aligned
