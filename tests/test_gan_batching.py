"""Generator calls merged into one run (``MicroBatcher``) give each caller exactly its own images."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.gan import GanSampler, MicroBatcher
from service.manifest import load_manifest
from service.runtime import open_session
from tests.helpers import wait_until


def sampler_pair(exports_dir):
    entry = load_manifest(exports_dir).models.generator
    session = open_session(exports_dir / entry.path, ["CPUExecutionProvider"])
    return GanSampler(session, entry, batching=False), GanSampler(session, entry, batching=True)


def sample(sampler: GanSampler, case: tuple[int, int, float]) -> np.ndarray:
    seed, n, truncation = case
    return sampler.sample(seed, n, truncation, sampler.default_labels(n))[1]


CASES = [(seed, 1 + seed % 5, 0.5 + (seed % 2) / 2) for seed in range(48)]  # seed, n, truncation


def test_concurrent_calls_each_get_exactly_their_unbatched_images(exports_dir):
    alone, merged = sampler_pair(exports_dir)
    expected = {c: sample(alone, c) for c in CASES}
    got, errors = {}, []

    def client(k: int) -> None:
        try:
            for c in CASES[k::8]:
                got[c] = sample(merged, c)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for c in CASES:
        np.testing.assert_array_equal(got[c], expected[c])
    assert merged.batcher.calls == len(CASES) and merged.batcher.runs <= merged.batcher.calls


def test_calls_that_arrive_during_a_run_are_merged_into_one_run(exports_dir):
    """Whether calls overlap on a free machine is a matter of timing; here the generator is held
    busy (the test takes the leader's place, as a run in progress does) while eight calls queue,
    then the test runs the next batch, as the leader does when its run ends."""
    alone, merged = sampler_pair(exports_dir)
    batcher = merged.batcher
    cases = CASES[:8]
    with batcher._lock:
        batcher._leading = True  # a run is in progress
    got = {}
    threads = [threading.Thread(target=lambda c=c: got.__setitem__(c, sample(merged, c))) for c in cases]
    for t in threads:
        t.start()
    wait_until(lambda: len(batcher._pending) == len(cases), 10, "eight calls queued behind the run")
    batcher._run_batch()  # the run ends: everything queued runs as one batch
    for t in threads:
        t.join(10)
    assert (batcher.runs, batcher.calls) == (1, len(cases))
    for c in cases:
        np.testing.assert_array_equal(got[c], sample(alone, c))
    assert not batcher._leading  # nothing left: the next caller leads at once


def test_a_batch_never_exceeds_max_batch_and_an_error_reaches_its_caller(exports_dir, manifest):
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
