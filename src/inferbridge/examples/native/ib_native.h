/* inferbridge native runtime ABI, version 1.
 *
 * A model is a shared library (.so) exporting two functions:
 *
 *   int32_t ib_abi_version(void);    returns IB_ABI_VERSION (1)
 *   int32_t ib_infer(const ib_tensor *inputs, int32_t n_inputs,
 *                    ib_tensor *outputs, int32_t n_outputs,
 *                    char *message, int32_t message_len);
 *
 * Tensors arrive in the order of config.yaml's `inputs` and `outputs`. Every buffer is
 * C-contiguous (row-major) and owned by the caller: inputs are read-only, outputs are
 * allocated by the server with the declared output shape, the batch dimension filled in,
 * and the library writes into them. `dtype` uses Triton's DataType numbering.
 *
 * ib_infer returns IB_OK (0) on success. On failure it returns IB_INVALID_INPUT (1) or any
 * other non-zero code and writes a NUL-terminated UTF-8 message of at most message_len
 * bytes (including the NUL) into `message`; the server fails that request with it.
 * ib_infer may be called from several threads at once: keep it reentrant.
 */
#ifndef IB_NATIVE_H
#define IB_NATIVE_H

#include <stdint.h>

#define IB_ABI_VERSION 1

enum ib_dtype {
    IB_BOOL = 1, IB_UINT8 = 2, IB_UINT16 = 3, IB_UINT32 = 4, IB_UINT64 = 5,
    IB_INT8 = 6, IB_INT16 = 7, IB_INT32 = 8, IB_INT64 = 9,
    IB_FP16 = 10, IB_FP32 = 11, IB_FP64 = 12
};

enum ib_status { IB_OK = 0, IB_INVALID_INPUT = 1, IB_INTERNAL = 2 };

typedef struct ib_tensor {
    const char *name;      /* the tensor's name in config.yaml */
    int32_t dtype;         /* an ib_dtype */
    int32_t ndim;          /* number of dimensions, batch included */
    const int64_t *shape;  /* ndim sizes */
    void *data;            /* contiguous row-major elements */
} ib_tensor;

#endif
