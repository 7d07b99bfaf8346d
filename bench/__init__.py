"""Measurement tooling, run by hand or from the Makefile rather than by pytest: ``make smoke``
(``bench.smoke``, the whole path in miniature), ``make bench`` (``bench.bench``, serving latency),
``make bench-train`` (``bench.bench_train``, training throughput), ``make soak`` (``bench.soak``,
then ``bench.upload_burst``) and ``python -m bench.cuda_options`` (CUDA provider options, on a GPU).
Beside them, the harness they share with the test suite: ``bench.pipeline`` (tiny trainings,
export, a real ``bentoml serve``) and ``bench.hostile_images`` (good and hostile uploads built in
memory). ``tests/`` imports from here, never the other way round; nothing here goes into the bento.
"""
