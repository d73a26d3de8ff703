/* debug_fault.c - fault injection for testing the parity harness.
 *
 * A parity harness that has only ever said "pass" has not shown it can find anything. This
 * lets a test break one kernel's output on purpose: llmc_debug_set_fault(model, "h3.fch",
 * delta) adds delta to element 0 of that activation right after the kernel that produces it,
 * in every following CPU forward, so everything downstream computes from the wrong value
 * exactly as it would with a bug in that kernel. The harness must then name h3.fch as the
 * first divergent tensor.
 *
 * Cost when unset: the hooks in model.c's CPU forward are LLMC_DEBUG_FAULT(...), one test of
 * a flag in the model per kernel call (internal.h); nothing else runs. */
#include "internal.h"

#include "bf16.h"

#include <string.h>

LLMC_API int32_t llmc_debug_set_fault(llmc_model *m, const char *tensor_name, float delta) {
    if (!m) return LLMC_ERR_INVALID_ARGUMENT;
    if (!tensor_name || !tensor_name[0]) { /* clear */
        memset(&m->debug_fault, 0, sizeof(m->debug_fault));
        return LLMC_OK;
    }
    if (m->device != LLMC_DEVICE_CPU)
        return llmc_fail(m, LLMC_ERR_UNSUPPORTED,
                         "fault injection hooks exist only in the CPU forward, not on this "
                         "model's device");
    /* the name is looked up in the tensor table, so it is exactly the name the harness uses;
     * delta is taken as given, NaN and inf included (a harness must catch those too) */
    for (int i = 0; i < m->num_entries; i++) {
        const tensor_entry *t = &m->entries[i];
        if (t->kind != LLMC_KIND_ACTS || strcmp(t->name, tensor_name) != 0) continue;
        m->debug_fault.act = t->id;
        m->debug_fault.layer = t->layer;
        m->debug_fault.delta = delta;
        m->debug_fault.armed = 1;
        return LLMC_OK;
    }
    return llmc_fail(m, LLMC_ERR_INVALID_ARGUMENT,
                     "no activation named '%s' (faults go into activations such as encoded, "
                     "h0.qkv, lnf, logits)", tensor_name);
}

void llmc_debug_fault_apply(llmc_model *m, int first_act, int last_act, int layer) {
    const llmc_debug_fault *f = &m->debug_fault;
    if (f->act < first_act || f->act > last_act || f->layer != layer) return;
    /* element 0 of the tensor of this layer: the same address for every (B, T); one kept in
     * bf16 (bf16 precision) gets the delta added to its value and rounded back */
    const size_t at = (size_t)layer * m->act_layer_stride[f->act];
    if (m->a16[f->act]) {
        uint16_t *e = m->a16[f->act] + at;
        *e = (uint16_t)llmc_bf16_bits(llmc_bf16_to_float(*e) + f->delta);
    } else {
        m->a[f->act][at] += f->delta;
    }
}
