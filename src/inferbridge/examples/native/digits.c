/* A digits logistic-regression classifier as a C shared library (inferbridge native ABI v1).
 *
 * Built by inferbridge.examples with gcc; the weights (the standard scaler folded into the
 * linear layer) come from a generated weights.h. Inputs: `pixels` FP32 [N, 64], values
 * 0..16. Outputs: `probabilities` FP32 [N, 10] and `label` INT64 [N].
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ib_native.h"
#include "weights.h"

int32_t ib_abi_version(void) { return IB_ABI_VERSION; }

static int32_t fail(char *message, int32_t len, int32_t code, const char *text) {
    if (message != NULL && len > 0) {
        snprintf(message, (size_t)len, "%s", text);
    }
    return code;
}

int32_t ib_infer(const ib_tensor *inputs, int32_t n_inputs, ib_tensor *outputs,
                 int32_t n_outputs, char *message, int32_t message_len) {
    char text[160];
    if (n_inputs != 1 || n_outputs != 2) {
        return fail(message, message_len, IB_INVALID_INPUT, "expected 1 input and 2 outputs");
    }
    const ib_tensor *in = &inputs[0];
    if (in->dtype != IB_FP32 || in->ndim != 2 || in->shape[1] != N_FEATURES) {
        return fail(message, message_len, IB_INVALID_INPUT, "input must be FP32 [N, 64]");
    }
    const float *x = (const float *)in->data;
    float *probs = (float *)outputs[0].data;
    int64_t *labels = (int64_t *)outputs[1].data;
    for (int64_t r = 0; r < in->shape[0]; r++) {
        const float *row = x + r * N_FEATURES;
        double scores[N_CLASSES];
        int best = 0;
        for (int c = 0; c < N_CLASSES; c++) {
            double s = INTERCEPT[c];
            for (int f = 0; f < N_FEATURES; f++) {
                if (!isfinite(row[f])) {
                    snprintf(text, sizeof text,
                             "row %lld pixel %d is not finite; pixels must be 0..16",
                             (long long)r, f);
                    return fail(message, message_len, IB_INVALID_INPUT, text);
                }
                s += COEF[c * N_FEATURES + f] * (double)row[f];
            }
            scores[c] = s;
            if (s > scores[best]) {
                best = c;
            }
        }
        double total = 0.0, top = scores[best];
        for (int c = 0; c < N_CLASSES; c++) {
            scores[c] = exp(scores[c] - top);
            total += scores[c];
        }
        for (int c = 0; c < N_CLASSES; c++) {
            probs[r * N_CLASSES + c] = (float)(scores[c] / total);
        }
        labels[r] = best;
    }
    return IB_OK;
}
