/* A linear classifier for the inferbridge WASM ABI (version 1), in freestanding C.
 *
 * Compiled by inferbridge.examples with clang --target=wasm32 -nostdlib and wasm-ld (no
 * libc, no WASI, no imports). The build writes weights.h (N_FEATURES, N_CLASSES, COEF,
 * INTERCEPT as doubles). Inputs: FP32 [N, features]. Outputs: FP32 [N, classes] scores
 * (x @ coef.T + intercept, summed in double) and INT64 [N] labels (argmax).
 */
#include <stdint.h>

#include "weights.h"

#define EXPORT(name) __attribute__((export_name(name)))
#define PAGE 65536u

extern unsigned char __heap_base;

static const char *error_message = 0;

/* One scratch block at the heap base, grown as needed; 0 when memory.grow is refused. */
EXPORT("ib_alloc") uint32_t ib_alloc(uint32_t size) {
    uintptr_t base = ((uintptr_t)&__heap_base + 15u) & ~(uintptr_t)15u;
    uintptr_t need = (base + size + PAGE - 1) / PAGE;
    uintptr_t have = __builtin_wasm_memory_size(0);
    if (need > have && __builtin_wasm_memory_grow(0, need - have) == (uintptr_t)-1) {
        return 0;
    }
    return (uint32_t)base;
}

EXPORT("ib_error") const char *ib_error(void) { return error_message; }

EXPORT("ib_infer") int32_t ib_infer(int32_t batch, void **inputs, void **outputs) {
    const float *x = (const float *)inputs[0];
    float *scores = (float *)outputs[0];
    int64_t *labels = (int64_t *)outputs[1];
    for (int32_t r = 0; r < batch; r++) {
        const float *row = x + r * N_FEATURES;
        int best = 0;
        double top = 0.0;
        for (int c = 0; c < N_CLASSES; c++) {
            double s = INTERCEPT[c];
            for (int f = 0; f < N_FEATURES; f++) {
                double v = (double)row[f];
                if (v - v != 0.0) { /* NaN or infinity */
                    error_message = "inputs must be finite numbers";
                    return 1;
                }
                s += v * COEF[c * N_FEATURES + f];
            }
            scores[r * N_CLASSES + c] = (float)s;
            if (c == 0 || s > top) {
                best = c;
                top = s;
            }
        }
        labels[r] = best;
    }
    return 0;
}
