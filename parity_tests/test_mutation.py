"""The mutation catalogue (pyllmc.mutation): every entry still fits the sources it mutates (its
snippet occurs exactly once, so drift of core_c/src fails here instead of silently mutating
something else), covers every kernel and every class of bug, and names expected first
divergences that the lockstep engine can produce. The campaign itself is `nox -s mutation`
(CI runs a fixed subset); the end-to-end test here is marked slow."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from pyllmc.mutation.catalogue import CI_SUBSET, ISSUE_MUTANTS, MUTANTS, by_id, check_snippets

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "core_c" / "src"


def test_every_snippet_occurs_exactly_once_in_the_sources():
    problems = check_snippets(SRC)
    assert not problems, "\n".join(problems)


def test_check_snippets_sees_drift(tmp_path):
    """The check can fail: a source that lost a snippet, or holds it twice, is reported."""
    for f in SRC.glob("*.c"):
        (tmp_path / f.name).write_text(f.read_text())
    m = MUTANTS[0]
    p = tmp_path / m["file"]
    p.write_text(p.read_text().replace(m["old"], m["old"] + "\n" + m["old"]))
    m2 = next(x for x in MUTANTS if x["file"] != m["file"])
    p2 = tmp_path / m2["file"]
    p2.write_text(p2.read_text().replace(m2["old"], "/* gone */"))
    problems = check_snippets(tmp_path)
    assert any(pr.startswith(m["id"] + ":") and "2 times" in pr for pr in problems)
    assert any(pr.startswith(m2["id"] + ":") and "0 times" in pr for pr in problems)


def test_catalogue_covers_every_kernel_and_class():
    bugs = [m for m in MUTANTS if m["what"] != "equivalent"]
    eqs = [m for m in MUTANTS if m["what"] == "equivalent"]
    assert len(bugs) >= 40 and len(eqs) >= 10
    classes = collections.Counter(m["what"] for m in bugs)
    for c in ("constant", "stride", "bound", "off-by-one", "missing-term", "accumulate-vs-overwrite",
              "optimizer", "threaded"):
        assert classes[c] >= 2, c
    files = {m["file"] for m in bugs}
    assert files >= {"gelu.c", "attention.c", "layernorm.c", "encoder.c", "crossentropy.c", "matmul.c",
                     "gemm.c", "model.c", "adamw.c"}
    # forward and backward of every kernel with both
    for k in ("gelu", "attention", "layernorm", "encoder", "cross-entropy", "matmul"):
        assert any(k in m["kernel"] and "forward" in m["kernel"] for m in bugs), k
        assert any(k in m["kernel"] and "backward" in m["kernel"] for m in bugs), k
    assert set(CI_SUBSET) <= set(by_id()) and set(ISSUE_MUTANTS) <= set(by_id())


def test_expected_divergences_are_tensors_the_engine_reports():
    from pyllmc.reference import activation_names, backward_param_order, forward_param_order, tensor_kind

    L = 2
    names = activation_names(L, with_targets=True) + ["loss", "grad_norm"]
    names += [f"grad.h{l}.{n}" if l is not None else f"grad.{n}" for n, l in backward_param_order(L)]
    for n, l in forward_param_order(L):
        base = f"h{l}.{n}" if l is not None else n
        names += [f"adam_m.{base}", f"adam_v.{base}", base]
    kinds = {tensor_kind(n)[0] for n in names}
    for m in MUTANTS:
        assert set(m["expect"]) <= kinds, (m["id"], set(m["expect"]) - kinds)


@pytest.mark.slow
def test_campaign_catches_and_localises_a_mutant(tmp_path):
    """End to end: the unmutated build passes, GELU's constant rounded to 5 digits is caught at
    h0.fch_gelu, an equivalent rewrite passes."""
    from pyllmc.mutation.runner import run_campaign

    data = run_campaign(REPO, tmp_path, ids=["gelu_k_5digits", "eq_gelu_cancelling_form"],
                        clean_configs=["mb130_1t"], clean_seeds=[0], say=lambda s: None)
    assert all(r["passed"] for r in data["clean"])
    rows = {r["id"]: r for r in data["mutants"]}
    assert rows["gelu_k_5digits"]["caught"] and rows["gelu_k_5digits"]["localised"]
    assert not rows["eq_gelu_cancelling_form"]["false_alarm"]


def test_thread_twins_fail_a_two_thread_run_that_differs_bitwise():
    """harness.thread_twins: the 2-thread run of a shape must give the 1-thread run's C tensors
    bit for bit; the first differing tensor becomes its first divergence."""
    from pyllmc.mutation.harness import thread_twins

    one = {"config": "mb130_1t", "passed": True, "first_divergence": None,
           "crcs": [["encoded", 1, 1], ["h0.ln1", 1, 2], ["grad.h1.qkvw", 1, 3]]}
    same = {"config": "mb130_2t", "passed": True, "first_divergence": None, "crcs": [list(c) for c in one["crcs"]]}
    thread_twins([one, same])
    assert same["passed"] and same["threads_equal"]
    other = {"config": "mb130_2t", "passed": True, "first_divergence": None,
             "crcs": [["encoded", 1, 1], ["h0.ln1", 1, 99], ["grad.h1.qkvw", 1, 3]]}
    thread_twins([one, other])
    assert not other["passed"] and other["first_divergence"]["name"] == "h0.ln1"
    assert other["first_divergence"]["kind"] == "ln1"
