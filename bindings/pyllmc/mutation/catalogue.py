"""The mutant catalogue: small edits of core_c/src, each located by an exact snippet that must
occur exactly once in its file (so a change of the sources fails loudly instead of silently
mutating something else: parity_tests/test_mutation.py checks every entry).

Each entry is data:
  id        short name, used in reports
  file      the source file under core_c/src
  old, new  the edit (old occurs exactly once in file)
  what      the class of bug: constant, stride, bound, off-by-one, missing-term,
            accumulate-vs-overwrite, optimizer, threaded, or equivalent
  kernel    the kernel (or step piece) it lives in, and whether forward or backward
  expect    the tensor kinds (pyllmc.reference.lockstep.tensor_kind) the first divergence
            must name for the mutant to count as localised: the mutated kernel's output, or the
            first gradient in backward order that the mutated code feeds
  env       extra environment (LLMC_GEMM_ISA forces the GEMM micro-kernel a mutant lives in)
  note      why the edit is what it says

`what == "equivalent"` marks rounding-level or structurally equivalent edits (reassociated
sums, a*b -> b*a, work moved between threads): the harness must PASS them, and any failure
is a false alarm.
"""
from __future__ import annotations

from typing import Any, Dict, List

M: List[Dict[str, Any]] = []


def mutant(id: str, file: str, old: str, new: str, what: str, kernel: str, expect: List[str],
           note: str = "", env: Dict[str, str] = None) -> None:
    M.append(dict(id=id, file=file, old=old, new=new, what=what, kernel=kernel, expect=list(expect),
                  note=note, env=dict(env or {})))


GRAD_FC = ["grad.fcw", "grad.fcb"]
GRAD_QKV = ["grad.qkvw", "grad.qkvb"]

# ------------------------------------------------------------------ GELU (gelu.c)
mutant("gelu_k_5digits", "gelu.c", "#define GELU_K 0.7978845608028654f", "#define GELU_K 0.79788f",
       "constant", "gelu forward+backward", ["fch_gelu"], "sqrt(2/pi) rounded to 5 digits (6e-6 relative); issue 12")
mutant("gelu_a_rounded", "gelu.c", "#define GELU_A 0.044715f", "#define GELU_A 0.04472f",
       "constant", "gelu forward+backward", ["fch_gelu"], "0.044715 -> 0.04472; issue 12")
mutant("gelu_bwd_du_factor3", "gelu.c", "(1.0f + 3.0f * GELU_A * x * x)", "(1.0f + GELU_A * x * x)",
       "missing-term", "gelu backward", GRAD_FC, "d/dx of x^3 loses its factor 3")
mutant("gelu_bwd_sech_factor2", "gelu.c", "const float local = s + 2.0f * x * s * (1.0f - s) * du;",
       "const float local = s + x * s * (1.0f - s) * du;", "constant", "gelu backward", GRAD_FC,
       "0.5 sech^2 = 2 s (1 - s): the 2 dropped")
mutant("gelu_thread_chunk_lo", "gelu.c", "const size_t lo = (N) * tid_ / nth_, hi",
       "const size_t lo = (N) * tid_ / nth_ + (tid_ > 0), hi", "threaded", "gelu forward+backward", ["fch_gelu"],
       "the second thread's chunk starts one element late (only with 2 threads)")
mutant("residual_last_element", "gelu.c", "for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];",
       "for (size_t i = 0; i < N - 1; i++) out[i] = a[i] + b[i];", "off-by-one", "residual forward",
       ["residual2"], "the last element of the residual sum is never written")
mutant("eq_residual_commuted", "gelu.c", "out[i] = a[i] + b[i];", "out[i] = b[i] + a[i];",
       "equivalent", "residual forward", [], "a + b -> b + a: bit-identical")
mutant("eq_gelu_cancelling_form", "gelu.c", "return x / (1.0f + llmc_expf(-2.0f * u));",
       "return x - x / (1.0f + llmc_expf(2.0f * u));", "equivalent", "gelu forward", [],
       "x sigmoid(2u) = x - x sigmoid(-2u): the form with 1 + tanh's cancellation, as torch computes it")
mutant("eq_gelu_bwd_reassociated", "gelu.c", "const float local = s + 2.0f * x * s * (1.0f - s) * du;",
       "const float local = s + (2.0f * s) * ((1.0f - s) * (x * du));", "equivalent", "gelu backward", [],
       "the same product in another order")

# ------------------------------------------------------------------ attention (attention.c)
mutant("att_scale_hs_eps", "attention.c",
       "const float scale = 1.0f / sqrtf((float)hs);\n    const int nblocks",
       "const float scale = 1.0f / sqrtf((float)hs + 0.001f);\n    const int nblocks",
       "constant", "attention forward", ["att"], "1/sqrt(hs) -> 1/sqrt(hs + 0.001) in the forward; issue 12")
mutant("att_bwd_scale_hs_eps", "attention.c",
       "const float scale = 1.0f / sqrtf((float)hs);\n/* static",
       "const float scale = 1.0f / sqrtf((float)hs + 0.001f);\n/* static",
       "constant", "attention backward", GRAD_QKV, "the same in the backward only")
mutant("att_fwd_out_row_offset", "attention.c", "*o = out_bh + (size_t)t0 * C;",
       "*o = out_bh + (size_t)t0 * hs;", "stride", "attention forward", ["atty"],
       "query block t0's output rows at t0*hs instead of t0*C (blocks after the first only); issue 12")
mutant("att_bwd_dout_row_offset", "attention.c", "const float *dy = dout_bh + (size_t)t0 * C;",
       "const float *dy = dout_bh + (size_t)t0 * hs;", "stride", "attention backward", GRAD_QKV,
       "block t0 reads dout rows at t0*hs (blocks after the first only); issue 12")
mutant("att_fwd_scale_skips_diagonal", "attention.c",
       "for (int t2 = 0; t2 <= t; t2++) {\n        arow[t2] *= scale;",
       "for (int t2 = 0; t2 < t; t2++) {\n        arow[t2] *= scale;", "off-by-one", "attention forward", ["att"],
       "the diagonal score is neither scaled nor in the max")
mutant("att_fwd_sum_misses_last", "attention.c", "for (int t2 = 0; t2 <= t; t2++) sum += arow[t2];",
       "for (int t2 = 0; t2 < t; t2++) sum += arow[t2];", "bound", "attention forward", ["att"],
       "the softmax denominator leaves out the diagonal term")
mutant("att_bwd_softmax_missing_dot", "attention.c",
       "dp[t2] = arow[t2] * (dp[t2] - dot) * scale;", "dp[t2] = arow[t2] * dp[t2] * scale;",
       "missing-term", "attention backward", GRAD_QKV, "softmax backward without the - sum P dP term")
mutant("att_bwd_blocks_overwrite", "attention.c", "const float beta = i == nblocks - 1 ? 0.0f : 1.0f;",
       "const float beta = 0.0f;", "accumulate-vs-overwrite", "attention backward", GRAD_QKV,
       "earlier query blocks overwrite dK and dV instead of adding (multi-block only)")
mutant("att_bwd_keys_short", "attention.c", "const int n = t0 + rows;\n        const float beta",
       "const int n = t0 + rows - 1;\n        const float beta", "bound", "attention backward", GRAD_QKV,
       "each block's dK/dV products stop one key short")
mutant("att_fwd_keys_short", "attention.c", "n = t0 + rows; /* keys this block can see */",
       "n = t0 + rows - 1; /* keys this block can see */", "bound", "attention forward", ["att", "atty"],
       "each block's scores stop one key short (its last row's diagonal is never computed)")
mutant("att_fwd_shared_gemm_ws", "attention.c",
       "one.gemm_ws = ex->gemm_ws + (size_t)LLMC_THREAD_ID() * LLMC_GEMM_WS_FLOATS;",
       "one.gemm_ws = ex->gemm_ws;", "threaded", "attention forward+backward", ["att", "atty"],
       "every thread packs into thread 0's GEMM workspace (a race with 2 threads)")
mutant("att_bwd_shared_dp", "attention.c",
       "float *dp = ex->row_ws + (size_t)LLMC_THREAD_ID() * ex->row_ws_len;", "float *dp = ex->row_ws;",
       "threaded", "attention backward", GRAD_QKV, "every thread uses thread 0's d(att) scratch (a race with 2 threads)")
mutant("att_fwd_head_att_slice", "attention.c",
       "att + ((size_t)b * NH + h) * T * T,\n", "att + ((size_t)b * NH) * T * T,\n",
       "stride", "attention forward", ["att"], "every head writes its probabilities into head 0's slice")
mutant("att_bwd_head_offset", "attention.c",
       "const size_t off = (size_t)b * T * C3 + (size_t)h * hs;", "const size_t off = (size_t)b * T * C3;",
       "stride", "attention backward", GRAD_QKV, "every head's backward works on head 0's q, k, v")
mutant("eq_att_softmax_divide", "attention.c", "for (int t2 = 0; t2 <= t; t2++) arow[t2] *= inv;",
       "for (int t2 = 0; t2 <= t; t2++) arow[t2] /= (float)sum;", "equivalent", "attention forward", [],
       "multiply by the reciprocal -> divide")
mutant("eq_att_bwd_reassociated", "attention.c", "dp[t2] = arow[t2] * (dp[t2] - dot) * scale;",
       "dp[t2] = (arow[t2] * scale) * (dp[t2] - dot);", "equivalent", "attention backward", [],
       "the same product in another order")

# ------------------------------------------------------------------ layernorm (layernorm.c)
mutant("ln_eps_1e6", "layernorm.c", "#define LN_EPS 1e-5", "#define LN_EPS 1e-6", "constant",
       "layernorm forward", ["ln1", "ln1_rstd"], "GPT-2's eps 1e-5 -> 1e-6")
mutant("ln_var_unbiased", "layernorm.c", "v /= C;", "v /= C - 1;", "constant", "layernorm forward",
       ["ln1", "ln1_rstd"], "biased variance (torch) -> unbiased")
mutant("ln_mean_divisor", "layernorm.c", "const double m = s / C;", "const double m = s / (C + 1);",
       "off-by-one", "layernorm forward", ["ln1", "ln1_mean"], "mean over C + 1")
mutant("ln_fwd_missing_bias", "layernorm.c", "o[c] = (x[c] - mf) * r * weight[c] + bias[c];",
       "o[c] = (x[c] - mf) * r * weight[c];", "missing-term", "layernorm forward", ["ln1"], "no bias")
mutant("ln_bwd_dinp_overwrite", "layernorm.c", "di[c] += r * (dn - mean_dn - xhat * mean_dnx);",
       "di[c] = r * (dn - mean_dn - xhat * mean_dnx);", "accumulate-vs-overwrite", "layernorm backward",
       ["grad.attprojw", "grad.attprojb"], "dinp overwrites the residual stream's gradient instead of adding to it")
mutant("ln_bwd_missing_mean", "layernorm.c", "di[c] += r * (dn - mean_dn - xhat * mean_dnx);",
       "di[c] += r * (dn - xhat * mean_dnx);", "missing-term", "layernorm backward",
       ["grad.fcprojw", "grad.fcprojb"], "dinp without the mean term (first seen through lnf's backward)")
mutant("ln_bwd_dweight_no_rstd", "layernorm.c", "aw[j] += d[j] * ((x[j] - m) * r);",
       "aw[j] += d[j] * (x[j] - m);", "missing-term", "layernorm backward", ["grad.lnfw"],
       "dweight from x - mean instead of xhat")
mutant("ln_bwd_dbias_overwrite", "layernorm.c", "ab[j] += d[j];", "ab[j] = d[j];",
       "accumulate-vs-overwrite", "layernorm backward", ["grad.lnfb"], "dbias keeps only the last token")
mutant("ln_bwd_thread_channels", "layernorm.c", "const int c0 = (int)((int64_t)C * tid / nth), c1",
       "const int c0 = (int)((int64_t)C * tid / nth) + (tid > 0), c1", "threaded", "layernorm backward",
       ["grad.lnfw", "grad.lnfb"], "the second thread's channel slice starts one late (only with 2 threads)")
mutant("eq_ln_fwd_reassociated", "layernorm.c", "o[c] = (x[c] - mf) * r * weight[c] + bias[c];",
       "o[c] = (x[c] - mf) * (r * weight[c]) + bias[c];", "equivalent", "layernorm forward", [],
       "(x - m) r w -> (x - m) (r w)")
mutant("eq_ln_bwd_reciprocal", "layernorm.c", "const float mean_dn = (float)(sum_dnorm / C);",
       "const float mean_dn = (float)(sum_dnorm * (1.0 / C));", "equivalent", "layernorm backward", [],
       "divide -> multiply by the reciprocal (in double)")

# ------------------------------------------------------------------ encoder (encoder.c)
mutant("enc_position_shift", "encoder.c", "const float *p = wpe + (size_t)t * C;",
       "const float *p = wpe + (size_t)(t > 0 ? t - 1 : 0) * C;", "off-by-one", "encoder forward",
       ["encoded"], "position t reads wpe row t - 1")
mutant("enc_bwd_dwpe_overwrite", "encoder.c", "pw[c] += d[c];", "pw[c] = d[c];", "accumulate-vs-overwrite",
       "encoder backward", ["grad.wpe"], "dwpe keeps only the last sequence of the batch")
mutant("enc_bwd_thread_channels", "encoder.c", "const int c0 = (int)((int64_t)C * tid / n), c1",
       "const int c0 = (int)((int64_t)C * tid / n) + (tid > 0), c1", "threaded", "encoder backward",
       ["grad.wpe"], "the second thread's channel slice starts one late (only with 2 threads)")
mutant("enc_bwd_token_row", "encoder.c", "float *ew = dwte + (size_t)inp[bt] * C;",
       "float *ew = dwte + (size_t)inp[bt > 0 ? bt - 1 : 0] * C;", "off-by-one", "encoder backward",
       ["grad.wte"], "token gradients go to the previous token's row")
mutant("eq_enc_commuted", "encoder.c", "o[c] = e[c] + p[c];", "o[c] = p[c] + e[c];", "equivalent",
       "encoder forward", [], "bit-identical")

# ------------------------------------------------------------------ cross-entropy (crossentropy.c)
mutant("ce_loss_offset", "crossentropy.c", "const float loss = (float)(lse - x[targets[n]]);",
       "const float loss = (float)(lse - x[targets[n]] + 1e-5);", "constant", "cross-entropy forward",
       ["losses"], "every token's loss 1e-5 too high (2e-6 relative: a few ulps)")
mutant("ce_mean_drops_first", "crossentropy.c", "total += loss;", "total += n > 0 ? loss : 0.0f;",
       "missing-term", "cross-entropy forward", ["loss"], "the mean loss leaves out the first token")
mutant("ce_bwd_target_shift", "crossentropy.c", "d[targets[n]] -= dloss;",
       "d[targets[n] + 1 < V ? targets[n] + 1 : 0] -= dloss;", "off-by-one", "cross-entropy backward",
       ["grad.lnfw", "grad.lnfb"], "the target's -1 lands in the next column")
mutant("ce_exp_bound", "crossentropy.c", "for (int i = 0; i < V; i++) p[i] = llmc_expf(x[i] - maxv);",
       "for (int i = 0; i < V - 1; i++) p[i] = llmc_expf(x[i] - maxv);", "bound", "cross-entropy forward",
       ["probs"], "the last real column's exponential is never computed")
mutant("eq_ce_max_over_padding", "crossentropy.c",
       "for (int i = 0; i < V; i++) maxv = x[i] > maxv ? x[i] : maxv;",
       "for (int i = 0; i < Vp; i++) maxv = x[i] > maxv ? x[i] : maxv;", "equivalent", "cross-entropy forward", [],
       "the max also over the padded (zero) logits: softmax and log-sum-exp do not depend on the shift")
mutant("eq_ce_bwd_padding_kept", "crossentropy.c", "for (int i = V; i < Vp; i++) d[i] = 0.0f;",
       "for (int i = V; i < Vp; i++) d[i] = p[i];", "equivalent", "cross-entropy backward", [],
       "d logits is the probs buffer, whose padded columns are already 0")

# ------------------------------------------------------------------ matmul (matmul.c)
mutant("mm_fwd_no_bias", "matmul.c", "        beta = 1.0f;", "        beta = 0.0f;", "missing-term",
       "matmul forward", ["qkv"], "the GEMM overwrites the bias it should add to")
mutant("mm_fwd_bias_shift", "matmul.c", "o[o2] = bias[o2];", "o[o2] = bias[o2 > 0 ? o2 - 1 : 0];",
       "off-by-one", "matmul forward", ["qkv"], "output column o gets bias o - 1")
mutant("mm_bwd_dbias_overwrite", "matmul.c", "for (int j = 0; j < w; j++) acc[j] += d[j];",
       "for (int j = 0; j < w; j++) acc[j] = d[j];",
       "accumulate-vs-overwrite", "matmul backward", ["grad.fcprojb"], "dbias keeps only the last token")
mutant("mm_bwd_dbias_thread_split", "matmul.c", "const int o0 = (int)((int64_t)OC * tid / n), o1",
       "const int o0 = (int)((int64_t)OC * tid / n) + (tid > 0), o1", "threaded", "matmul backward",
       ["grad.fcprojb"], "the second thread's bias columns start one late (only with 2 threads)")
mutant("mm_bwd_dinp_accumulates", "matmul.c", "OC, weight, IC, 0.0f, dinp, IC, ex);",
       "OC, weight, IC, 1.0f, dinp, IC, ex);", "accumulate-vs-overwrite", "matmul backward",
       ["grad.lnfw", "grad.lnfb", "grad.ln2w", "grad.ln2b"], "dinp adds to the scratch buffer's old contents")
mutant("mm_bwd_dweight_ignores_overwrite", "matmul.c", "dout, OC, inp, IC, ex->dw_beta, dweight, IC, ex);",
       "dout, OC, inp, IC, 1.0f, dweight, IC, ex);", "accumulate-vs-overwrite", "matmul backward", ["grad.fcprojw"],
       "backward(accumulate=False) still adds the previous step's weight gradients (seen at step 2)")

# ------------------------------------------------------------------ GEMM (gemm.c)
mutant("gemm_panel_beta", "gemm.c", "const float beta_k = k0 == 0 ? beta : 1.0f;",
       "const float beta_k = beta;", "accumulate-vs-overwrite", "gemm (backward dW, K > 256)", ["grad.fcprojw"],
       "with beta 0, each K panel overwrites the previous ones (dW GEMMs: K = B*T = 260 > KC)")
mutant("gemm_avx512_k_short", "gemm.c",
       "    for (int k = 0; k < kc; k++) {\n        const __m512 b0",
       "    for (int k = 0; k < kc - 1; k++) {\n        const __m512 b0", "bound", "gemm (AVX-512 micro-kernel)",
       ["qkv"], "the micro-kernel drops the last k of every panel", env={"LLMC_GEMM_ISA": "avx512"})
mutant("gemm_generic_k_first", "gemm.c",
       "    for (int k = 0; k < kc; k++) {\n        const float *b = Bp",
       "    for (int k = 1; k < kc; k++) {\n        const float *b = Bp", "bound", "gemm (portable micro-kernel)",
       ["qkv"], "the portable micro-kernel drops the first k of every panel", env={"LLMC_GEMM_ISA": "generic"})
mutant("gemm_avx2_wrong_strip", "gemm.c", "acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);",
       "acc[r][0] = _mm256_fmadd_ps(a, b1, acc[r][0]);", "stride", "gemm (AVX2 micro-kernel)", ["qkv"],
       "columns 0-7 of the tile multiply B's columns 8-15", env={"LLMC_GEMM_ISA": "avx2"})
mutant("gemm_partial_tile_overwrite", "gemm_plan.h",
       "            for (int c = 0; c < nr; c++) crow[c] += trow[c];",
       "            for (int c = 0; c < nr; c++) crow[c] = trow[c];", "accumulate-vs-overwrite",
       "gemm (partial tiles)", ["qkv"], "edge tiles with beta != 0 overwrite C (the bias) instead of adding")
mutant("eq_gemm_prepack_choice", "gemm_plan.h", "if (M <= N && a <= cap) return 1;",
       "if (M >= N && a <= cap) return 1;", "equivalent", "gemm (packing)", [],
       "which operand is packed once for all threads: the same products in the same order")
mutant("eq_gemm_fma_commuted", "gemm.c", "c##r##a = _mm512_fmadd_ps(a_, b0, c##r##a);",
       "c##r##a = _mm512_fmadd_ps(b0, a_, c##r##a);", "equivalent", "gemm (AVX-512 micro-kernel)", [],
       "a*b -> b*a inside the FMA", env={"LLMC_GEMM_ISA": "avx512"})

# ------------------------------------------------------------------ the step (model.c)
mutant("model_overwrite_skips_wpe", "model.c",
       "if (i != P_WTE && i != P_QKVW && i != P_ATTPROJW && i != P_FCW && i != P_FCPROJW)",
       "if (i != P_WTE && i != P_WPE && i != P_QKVW && i != P_ATTPROJW && i != P_FCW && i != P_FCPROJW)",
       "accumulate-vs-overwrite", "backward (overwrite mode)", ["grad.wpe"],
       "wpe's gradient is not cleared: step 2 adds to step 1's")
mutant("model_loss_scale_bt", "model.c", "loss_scale / (float)BT;", "loss_scale / (float)(BT + 1);",
       "constant", "cross-entropy backward (mean's 1/BT)", ["grad.lnfw", "grad.lnfb"], "the mean over BT + 1 tokens")
mutant("model_ln1_bwd_input", "model.c",
       "const float *res = l == 0 ? m->a[A_ENCODED] : act(m, A_RESIDUAL3, l - 1);\n        const size_t lc = (size_t)l * C;\n        /* dres",  # noqa: E501
       "const float *res = l == 0 ? m->a[A_ENCODED] : act(m, A_RESIDUAL2, l - 1);\n        const size_t lc = (size_t)l * C;\n        /* dres",  # noqa: E501
       "stride", "layernorm backward (ln1's input)", ["grad.ln1w"], "ln1's backward reads the wrong residual")
mutant("model_qkvb_layer_stride", "model.c", "p[P_QKVB] + lc * 3, BT, C, 3 * C, &ex);",
       "p[P_QKVB] + lc, BT, C, 3 * C, &ex);", "stride", "matmul forward (layer offsets)", ["qkv"],
       "layer l's qkv bias at l*C instead of l*3C (layers after the first)")
mutant("model_attprojw_grad_stride", "model.c", "linear_backward_of(m, dsmall, g[P_ATTPROJW] + lc * C,",
       "linear_backward_of(m, dsmall, g[P_ATTPROJW] + lc,", "stride", "matmul backward (layer offsets)",
       ["grad.attprojw"], "layer l's attproj weight gradient written at l*C instead of l*C*C")
mutant("model_grad_norm_scale", "model.c", "*norm = (float)sqrt(sumsq);",
       "*norm = (float)sqrt(sumsq * 1.00001);", "constant", "grad norm", ["grad_norm"],
       "the norm 5e-6 relative too large")
mutant("model_decay_flag_inverted", "model.c", "return (!hp->decay_matrices_only || PARAM_IS_MATRIX[i])",
       "return (hp->decay_matrices_only || PARAM_IS_MATRIX[i])", "optimizer", "AdamW (decay groups)",
       ["ln1w"], "weight decay on layernorm weights and biases too")

# ------------------------------------------------------------------ AdamW and grad norm (adamw.c)
mutant("adamw_bc1_step", "adamw.c", "const double bc1 = 1.0 - pow(beta1, (double)t);",
       "const double bc1 = 1.0 - pow(beta1, (double)t + 1.0);", "optimizer", "AdamW", ["wte"],
       "first-moment bias correction one step ahead")
mutant("adamw_bc2_step", "adamw.c", "const double bc2 = 1.0 - pow(beta2, (double)t);",
       "const double bc2 = 1.0 - pow(beta2, (double)t + 1.0);", "optimizer", "AdamW", ["wte"],
       "second-moment bias correction one step ahead")
mutant("adamw_eps_inside_sqrt", "adamw.c", "const float denom = sqrtf(vi) / bc2_sqrt + eps_f;",
       "const float denom = sqrtf(vi + eps_f) / bc2_sqrt;", "optimizer", "AdamW", ["wte"],
       "eps inside the square root")
mutant("adamw_decay_without_lr", "adamw.c", "k.decay = (float)(1.0 - lr * weight_decay);",
       "k.decay = (float)(1.0 - weight_decay);", "optimizer", "AdamW", ["wte"],
       "decoupled decay not scaled by lr")
mutant("adamw_m_missing_term", "adamw.c", "const float mi = m[i] + one_minus_b1 * (g - m[i]);",
       "const float mi = m[i] + one_minus_b1 * g;", "missing-term", "AdamW", ["adam_m.wte"],
       "m + (1 - b1)(g - m) -> m + (1 - b1) g (seen from step 2, when m != 0)")
mutant("adamw_v_betas_swapped", "adamw.c", "const float vi = v[i] * b2 + one_minus_b2 * g * g;",
       "const float vi = v[i] * one_minus_b2 + b2 * g * g;", "optimizer", "AdamW", ["adam_v.wte"],
       "beta2 and 1 - beta2 swapped")
mutant("adamw_no_decay", "adamw.c", "const float pn = p + neg_step_size * (mi / denom)",
       "const float pn = (p0) + neg_step_size * (mi / denom)", "missing-term", "AdamW", ["wte"],
       "the decayed parameter is computed and thrown away")
mutant("adamw_ignores_grad_scale", "adamw.c", "const float g = grad[i] * grad_scale;",
       "const float g = grad[i];", "optimizer", "AdamW (clipping)", ["adam_m.wte"],
       "the clipping factor is not applied")
mutant("adamw_thread_chunk", "adamw.c", "const size_t lo = n * tid / nth, hi",
       "const size_t lo = n * tid / nth + (tid > 0), hi", "threaded", "AdamW", ["adam_m.wte"],
       "the second thread's chunk starts one late: one element per tensor never updated (only with 2 threads)")
mutant("sumsq_drops_first_block", "adamw.c", "for (long b = 0; b < nb; b++) s += block_sums[b];",
       "for (long b = 1; b < nb; b++) s += block_sums[b];", "bound", "grad norm", ["grad_norm"],
       "the first 16384 squares are left out of the norm")
mutant("eq_sumsq_reverse_blocks", "adamw.c", "for (long b = 0; b < nb; b++) s += block_sums[b];",
       "for (long b = nb - 1; b >= 0; b--) s += block_sums[b];", "equivalent", "grad norm", [],
       "the block sums added in reverse order (double)")
mutant("eq_adamw_sqrt_of_quotient", "adamw.c", "const float denom = sqrtf(vi) / bc2_sqrt + eps_f;",
       "const float denom = sqrtf(vi / (bc2_sqrt * bc2_sqrt)) + eps_f;", "equivalent", "AdamW", [],
       "sqrt(v) / sqrt(bc2) -> sqrt(v / bc2)")
mutant("eq_adamw_step_reassociated", "adamw.c", "const float pn = p + neg_step_size * (mi / denom)",
       "const float pn = p + (neg_step_size * mi) / denom", "equivalent", "AdamW", [],
       "-lr/bc1 * (m / d) -> (-lr/bc1 * m) / d")

MUTANTS: List[Dict[str, Any]] = M

#: A fixed, small subset for CI (.ci/run): the issue's five mutants (the smallest systematic
#: errors and the multi-block strides), a threaded one, an optimizer one and two
#: equivalents.
CI_SUBSET = ["gelu_k_5digits", "gelu_a_rounded", "att_scale_hs_eps", "att_fwd_out_row_offset",
             "att_bwd_dout_row_offset", "adamw_thread_chunk", "adamw_eps_inside_sqrt", "eq_gelu_cancelling_form",
             "eq_att_bwd_reassociated"]

#: The mutants of issue 12 whose before/after the report gives.
ISSUE_MUTANTS = ["gelu_k_5digits", "gelu_a_rounded", "att_scale_hs_eps", "att_fwd_out_row_offset",
                 "att_bwd_dout_row_offset"]


def by_id() -> Dict[str, Dict[str, Any]]:
    return {m["id"]: m for m in MUTANTS}


def check_snippets(src_dir: Any) -> List[str]:
    """Problems with the catalogue against the sources in src_dir (core_c/src): an `old`
    snippet that does not occur exactly once, a duplicate id, an edit that changes nothing,
    a bug without an expected tensor. Empty when all is well."""
    from pathlib import Path

    problems = []
    seen = set()
    texts: Dict[str, str] = {}
    for m in MUTANTS:
        if m["id"] in seen:
            problems.append(f"{m['id']}: duplicate id")
        seen.add(m["id"])
        p = Path(src_dir) / m["file"]
        if m["file"] not in texts:
            texts[m["file"]] = p.read_text() if p.is_file() else ""
        n = texts[m["file"]].count(m["old"])
        if n != 1:
            problems.append(f"{m['id']}: snippet occurs {n} times in {p} (must be exactly once): {m['old']!r}")
        if m["old"] == m["new"]:
            problems.append(f"{m['id']}: old == new")
        if (m["what"] == "equivalent") == bool(m["expect"]):
            problems.append(f"{m['id']}: a bug needs expected tensors, an equivalent mutant none")
    return problems
