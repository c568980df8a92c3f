/* fuzz_safetensors: libFuzzer target for the safetensors header validator (mq_st_validate). */
#include <stddef.h>
#include <stdint.h>
#include "err.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mq_err_clear();
    int n = mq_st_validate(data, size, "fuzz.safetensors");
    /* Contract: -1 always comes with a message naming the input. */
    if (n < 0 && mq_err_get()[0] == 0) __builtin_trap();
    return 0;
}
