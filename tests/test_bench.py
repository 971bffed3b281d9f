"""The benchmark: its FLOP count, a quick run end to end, and the fairness of what it compares.

No test asserts a timing: they depend on the machine and its load. Memory is not timing.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from minifope import GPT, GPTConfig
from minifope.bench import (attention_flops, generate_with_cache, generate_without_cache,
                            matmul_params, run_worker, train_step_flops)

ROOT = Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_train_step_flops_match_a_hand_count():
    config = GPTConfig(vocab_size=5, n_layer=1, n_head=2, d_model=8, d_ff=16, train_len=4)
    # weights in matmuls: wqkv 8*24 + wo 8*8 + w_in 8*32 + w_out 16*8 + lm_head 8*5
    assert matmul_params(config) == 192 + 64 + 256 + 128 + 40 == 680
    # 2 sequences of 4 tokens: 6 FLOPs per weight and token; each causal sequence has
    # 1+2+3+4 = 10 (query, key) pairs, and each pair costs 12 * d_model in one layer
    assert train_step_flops(config, batch_size=2) == 6 * 680 * 8 + 2 * 10 * 12 * 8 == 34560


def test_attention_flops_count_the_unmasked_pairs():
    B, H, T, d = 2, 3, 5, 4
    pairs = int(np.tril(np.ones((T, T))).sum())  # the causal mask's allowed entries
    # forward q.k and p.v, backward dv, dP, dq, dk: six products of 2d FLOPs per pair and head
    assert attention_flops(B, H, T, d) == B * H * pairs * 6 * 2 * d


def test_quick_json_has_every_section_with_positive_numbers():
    command = [sys.executable, "-m", "minifope.bench", "--quick", "--json", "--threads", "1", "--demo-run"]
    # a guard against a hang, not a speed limit: about 3 min alone, but at nice 19 beside two
    # lab training runs on 2 cores it has taken 30 min
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                            preexec_fn=lambda: os.nice(19))
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)
    engines = ("numpy", "torch") if HAS_TORCH else ("numpy",)
    assert r["failures"] == []
    assert r["settings"]["threads"] == 1 and r["machine"]["numpy"] == np.__version__
    for engine in engines:
        assert r["peak"][engine + "_gflops"] > 0
    assert [row["size"] for row in r["train"]] == ["quick"] == [row["size"] for row in r["attention"]]
    for row in r["train"]:
        assert row["model_flops_per_step"] > 0
        for engine in engines:
            assert row[engine]["tokens_per_s"] > 0
            assert row[engine]["gflops"] > 0 and row[engine]["utilisation"] > 0
    for row in r["attention"]:
        for engine in engines:
            assert row[engine]["forward_s"] > 0 and row[engine]["backward_s"] > 0
    if HAS_TORCH:
        assert r["train"][0]["torch"]["torch_threads"] == 1  # --threads reached torch
        assert r["train"][0]["numpy_over_torch_time"] > 0
        assert r["attention"][0]["numpy_over_torch_time"] > 0
    else:
        assert r["train"][0]["torch"] is None and any("torch" in n for n in r["notes"])
    for impl in ("chunked", "full"):
        assert r["memory"][impl]["peak_mb"] > 0
    g = r["generation"]
    assert g["with_cache_chars_per_s"] > 0 and g["without_cache_chars_per_s"] > 0 and g["same_text"]
    for engine in engines:
        assert r["plain"][engine]["seconds"] > 0
    demo = r["demo_run"]
    assert demo["steps"] == 20 and demo["seconds"] > demo["train_seconds"] > 0  # its quick recipe
    assert demo["eval_tokens_per_s"] > 0 and demo["train_tokens_per_s"] > 0


def test_each_engine_keeps_its_fastest_round(monkeypatch):
    import minifope.bench as bench

    seconds = iter([3.0, 5.0, 2.0, 6.0, 4.0, 1.0])  # numpy, torch in turn, three rounds
    monkeypatch.setattr(bench, "run_worker", lambda spec, threads: dict(
        seconds=next(seconds), tokens_per_s=1.0) if spec["task"].startswith("train") else {"error": "x"})
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object())
    r = bench.run_bench(sizes=["quick"], rounds=3, quick=True)
    assert r["train"][0]["numpy"]["seconds"] == 2.0 and r["train"][0]["torch"]["seconds"] == 1.0
    assert r["plain"]["numpy"] == {"error": "x"}  # a failed measurement is not hidden by a later one


def test_generation_without_cache_writes_what_the_cache_writes():
    # a prompt longer than attn_chunk: recomputing takes the chunked path, decoding the full one
    model = GPT(GPTConfig(d_model=32, n_layer=2, n_head=2, train_len=32))
    prompt = np.random.default_rng(1).integers(0, model.config.vocab_size, (1, 200))
    cached = generate_with_cache(model, prompt, 12)
    recomputed = generate_without_cache(model, prompt, 12)
    assert cached.shape == (1, 212)
    np.testing.assert_array_equal(cached, recomputed)


def test_full_attention_peaks_higher_than_chunked():
    # T = 2048, 4 heads: 'full' keeps a 4 x 2048 x 2048 float32 P (67 MB) per layer for the
    # backward; 'chunked' never holds more than 4 x 128 x 2048 scores (4 MB)
    spec = dict(task="memory", fields=dict(d_model=32, n_layer=2, n_head=4, train_len=128),
                pe="rope", length=2048)
    chunked = run_worker({**spec, "impl": "chunked"}, threads=1)
    full = run_worker({**spec, "impl": "full"}, threads=1)
    assert full["forward_mb"] > chunked["forward_mb"] + 100, (full, chunked)
    assert full["peak_mb"] > chunked["peak_mb"] + 100, (full, chunked)


def test_zero_threads_is_refused_in_one_line():
    result = subprocess.run([sys.executable, "-m", "minifope.bench", "--threads", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --threads must be at least 1, got 0"


def test_machine_info_names_no_torch_where_its_distribution_is_not_installed(monkeypatch):
    # the README's install step has no torch: machine_info must say None, not fail, even where
    # a module named torch can be found (as test_each_engine_keeps_its_fastest_round pretends)
    import importlib.metadata

    import minifope.bench as bench

    def version(name):
        if name == "torch":
            raise importlib.metadata.PackageNotFoundError(name)
        return "1.0"

    monkeypatch.setattr(bench.importlib.metadata, "version", version)
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: object())
    assert bench.machine_info()["torch"] is None
    monkeypatch.setattr(bench.importlib.metadata, "version", lambda name: "2.13.0")
    assert bench.machine_info()["torch"] == "2.13.0"
