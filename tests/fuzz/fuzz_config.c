/* fuzz_config: libFuzzer target for the config.json parser (mq_config_parse). */
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mq_config c;
    mq_err_clear();
    int r = mq_config_parse(&c, (const char *)data, size, "fuzz.json");
    if (r < 0 && mq_err_get()[0] == 0) __builtin_trap();
    /* Accepted configs must satisfy the invariants the rest of the engine relies on. */
    if (r == 0 && (c.n_heads % c.n_kv_heads || c.head_dim <= 0 || c.head_dim % 2 || c.vocab_size <= 0 ||
                   c.hidden_size <= 0 || c.n_layers <= 0 || c.intermediate_size <= 0 || !(c.rms_eps > 0)))
        __builtin_trap();
    return 0;
}
