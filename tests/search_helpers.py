"""Helpers shared by the search-strategy tests."""

from __future__ import annotations

from slowthink.engine import Engine


class SpyEngine(Engine):
    """Records every request, so generated tokens can be counted independently of the strategies' meters."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.requests = []

    def add(self, prompt_ids, n=1, sampling=None):
        req = super().add(prompt_ids, n, sampling)
        self.requests.append(req)
        return req

    def generated(self) -> int:
        return sum(len(c.token_ids) for r in self.requests for c in r.completions)

    def completions(self) -> int:
        return sum(r.n for r in self.requests)
