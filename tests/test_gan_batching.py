"""Generator calls merged into one run (``MicroBatcher``) give each caller exactly its own images."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from service.gan import GanSampler, MicroBatcher
from service.runtime import open_session


def test_concurrent_calls_are_merged_and_each_gets_exactly_its_unbatched_images(exports_dir):
    manifest = json.loads((exports_dir / "manifest.json").read_text())
    entry = manifest["models"]["generator"]
    session = open_session(exports_dir / entry["path"], ["CPUExecutionProvider"])
    alone = GanSampler(session, entry, batching=False)
    merged = GanSampler(session, entry, batching=True)
    cases = [(seed, 1 + seed % 5, 0.5 + (seed % 2) / 2) for seed in range(48)]  # seed, n, truncation
    expected = {c: alone.sample(c[0], c[1], c[2], alone.default_labels(c[1]))[1] for c in cases}
    got, errors = {}, []

    def client(k: int) -> None:
        try:
            for c in cases[k::8]:
                got[c] = merged.sample(c[0], c[1], c[2], merged.default_labels(c[1]))[1]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for c in cases:
        np.testing.assert_array_equal(got[c], expected[c])
    assert merged.batcher.calls == len(cases) and merged.batcher.runs < merged.batcher.calls  # some merged


def test_a_batch_never_exceeds_max_batch_and_an_error_reaches_its_caller(exports_dir):
    manifest = json.loads((exports_dir / "manifest.json").read_text())
    entry = manifest["models"]["generator"]
    session = open_session(exports_dir / entry["path"], ["CPUExecutionProvider"])
    batcher = MicroBatcher(session, max_batch=4)
    z = np.zeros((3, entry["latent_dim"]), np.float32)
    feed = {"z": z, **({"label": np.zeros(3, np.int64)} if entry["class_labels"] else {})}
    results = []
    threads = [threading.Thread(target=lambda: results.append(batcher.run(feed))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r.shape[0] == 3 for r in results)
    assert batcher.runs == 6  # 3 + 3 > 4: never two of these calls in one run
    bad = {"z": np.zeros((2, entry["latent_dim"] + 1), np.float32), **{k: v[:2] for k, v in feed.items() if k != "z"}}
    with pytest.raises(Exception, match="(?i)dimension|z"):  # ONNX Runtime's own complaint, to this caller
        batcher.run(bad)
    assert batcher.run(feed).shape[0] == 3  # the batcher is not left stuck
