/* A native model that misbehaves on magic input values, for the fault isolation tests:
 * y = 2 * x, except that 666 segfaults, 667 aborts, 888 hangs and 999 allocates without
 * bound. Built with -O0 so that the compiler keeps each fault as written. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ib_native.h"

static volatile intptr_t null_address = 0;
static void *volatile sink;

int32_t ib_abi_version(void) { return IB_ABI_VERSION; }

int32_t ib_infer(const ib_tensor *inputs, int32_t n_inputs, ib_tensor *outputs,
                 int32_t n_outputs, char *message, int32_t message_len) {
    (void)n_inputs; (void)n_outputs; (void)message; (void)message_len;
    const float *x = (const float *)inputs[0].data;
    float *y = (float *)outputs[0].data;
    int64_t n = 1;
    for (int32_t d = 0; d < inputs[0].ndim; d++) n *= inputs[0].shape[d];
    for (int64_t i = 0; i < n; i++) {
        if (x[i] == 666.0f) *(volatile int *)null_address = 1;
        if (x[i] == 667.0f) abort();
        if (x[i] == 888.0f) for (;;) pause();
        if (x[i] == 999.0f) {
            for (;;) {
                char *block = malloc(1 << 24);
                memset(block, 1, 1 << 24); /* no NULL check: at the cap this faults */
                sink = block;
            }
        }
        y[i] = 2.0f * x[i];
    }
    return IB_OK;
}
