"""Background rebuilds of the FAISS index: searches and writes go on, nothing written meanwhile is lost."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("faiss")

from enhanced_llm.semantic import VectorIndex  # noqa: E402


class GatedIndex(VectorIndex):
    """Real FAISS; building an approximate index waits for ``gate`` (a rebuild that takes as long as we like)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.building = threading.Event()

    def _new_index(self, kind, train=None):
        if kind != "flat":
            self.building.set()
            assert self.gate.wait(30)
        return super()._new_index(kind, train)


def unit(n, d=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_writes_and_searches_during_a_rebuild(index_type):
    ix = GatedIndex(32, max_entries=10_000, approximate_after=300, index_type=index_type, nprobe=16)
    x = unit(600)
    ix.add_many("s", [(f"e{i}", f"q{i}") for i in range(301)], x[:301])  # crosses approximate_after
    assert ix.building.wait(10)
    sc = ix._scopes["s"]
    assert sc.rebuild is not None and not sc.approximate

    # While the new index is being built: searches answer (from the old, exact index) ...
    assert ix.search("s", x[5], 1)[0].entry_id == "e5"
    # ... additions are searchable at once, removals take effect at once.
    ix.add_many("s", [(f"e{i}", f"q{i}") for i in range(301, 600)], x[301:])
    for i in (5, 10, 400, 401):  # two from the snapshot, two added meanwhile
        assert ix.remove(f"e{i}")
    assert ix.search("s", x[450], 1)[0].entry_id == "e450"
    assert all(c.entry_id != "e5" for c in ix.search("s", x[5], 10))

    ix.gate.set()
    assert ix.wait_for_rebuilds(timeout=30)
    sc = ix._scopes["s"]
    assert sc.approximate and sc.kind == index_type and sc.rebuild is None
    assert len(ix) == 596 and ix.stats()["rebuilds"] == 1
    for i in (0, 300, 450, 599):  # from the snapshot and replayed
        assert ix.search("s", x[i], 1)[0].entry_id == f"e{i}"
    for i in (5, 10, 400, 401):  # removed during the rebuild: still gone
        assert all(c.entry_id != f"e{i}" for c in ix.search("s", x[i], 20))


def test_a_scope_cleared_during_its_rebuild_stays_cleared():
    ix = GatedIndex(32, approximate_after=50)
    x = unit(60)
    ix.add_many("s", [(f"e{i}", f"q{i}") for i in range(60)], x)
    assert ix.building.wait(10)
    ix.clear()
    ix.gate.set()
    assert ix.wait_for_rebuilds(timeout=30)
    assert len(ix) == 0 and ix.search("s", x[0], 1) == [] and ix.stats()["rebuilds"] == 0


def test_inline_rebuilds_when_asked():
    ix = VectorIndex(32, approximate_after=50, background_rebuild=False)
    x = unit(60)
    ix.add_many("s", [(f"e{i}", f"q{i}") for i in range(60)], x)
    assert ix._scopes["s"].approximate and not ix._rebuilders
