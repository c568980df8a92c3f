/* cmd_synth: `megaqwen synth` — writes a synthetic Qwen3 checkpoint of a real shape (see src/synth.c). */
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "err.h"
#include "synth.h"

static void synth_usage(FILE *f) {
    fprintf(f, "usage: megaqwen synth --shape SHAPE -o DIR [--seed S] [--dtype bf16|f32] [--tied|--untied]\n"
               "                      [--layers N] [--yarn FACTOR[,ORIG]]\n"
               "  SHAPE: %s (the real models' dimensions; 4B is 8 GB,\n"
               "  8B 16 GB and 14B 30 GB of bf16 weights). --layers N: N layers of that shape instead (e.g. 2:\n"
               "  a big model's kernels at a fraction of its bytes). --yarn: config.json asks for YaRN RoPE scaling\n"
               "  (rope_scaling {rope_type yarn, factor, original_max_position_embeddings ORIG, default 32768}).\n",
            mq_synth_shape_list());
    fprintf(f, "  Writes config.json, generation_config.json, model.safetensors (random weights, deterministic\n"
               "  in the seed, scaled so next-token distributions are confident) and the tokenizer files from\n"
               "  $MQ_TOKENIZER_DIR or the build's copy. Default: seed 0, bf16, tied or untied as the real\n"
               "  model (untied for 8B and 14B).\n");
}

int cmd_synth(int argc, char **argv) {
    mq_synth_opts o;
    mq_synth_defaults(&o);
    o.shape = NULL;
    o.log = stdout;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            synth_usage(stdout);
            return MQ_EXIT_OK;
        } else if (!strcmp(a, "--tied")) {
            o.tied = 1;
        } else if (!strcmp(a, "--untied")) {
            o.tied = 0;
        } else if (!strcmp(a, "--shape") || !strcmp(a, "-o") || !strcmp(a, "--out") || !strcmp(a, "--seed") ||
                   !strcmp(a, "--dtype") || !strcmp(a, "--layers") || !strcmp(a, "--yarn")) {
            if (!v) {
                mq_cli_err("synth", "%s needs a value", a);
                synth_usage(stderr);
                return MQ_EXIT_USAGE;
            }
            i++;
            if (!strcmp(a, "--shape")) {
                mq_config c;
                if (mq_synth_shape(v, &c) < 0) {
                    mq_cli_err("synth", "unknown shape '%s' (want %s)", v, mq_synth_shape_list());
                    return MQ_EXIT_USAGE;
                }
                o.shape = v;
            } else if (!strcmp(a, "--seed")) {
                char *end;
                if (!*v || *v == '-') end = (char *)v;
                else o.seed = strtoull(v, &end, 10);
                if (end == v || *end) {
                    mq_cli_err("synth", "bad value for --seed: '%s' (want a non-negative integer)", v);
                    return MQ_EXIT_USAGE;
                }
            } else if (!strcmp(a, "--layers")) {
                long n;
                if (mq_cli_int("synth", "--layers", v, 1, 1000, &n)) return MQ_EXIT_USAGE;
                o.layers = (int)n;
            } else if (!strcmp(a, "--yarn")) {
                char *end;
                o.yarn_factor = strtod(v, &end);
                o.yarn_orig = 32768;
                if (end == v || (*end && *end != ',') || !(o.yarn_factor >= 1.0 && o.yarn_factor <= 1e3)) {
                    mq_cli_err("synth", "bad value for --yarn: '%s' (want FACTOR[,ORIG], FACTOR in [1, 1000])", v);
                    return MQ_EXIT_USAGE;
                }
                if (*end == ',') {
                    long n;
                    if (mq_cli_int("synth", "--yarn's ORIG", end + 1, 1, 40960, &n)) return MQ_EXIT_USAGE;
                    o.yarn_orig = (int)n;
                }
            } else if (!strcmp(a, "--dtype")) {
                if (!strcmp(v, "bf16")) o.dtype = MQ_BF16;
                else if (!strcmp(v, "f32")) o.dtype = MQ_F32;
                else {
                    mq_cli_err("synth", "bad value for --dtype: '%s' (want bf16 or f32)", v);
                    return MQ_EXIT_USAGE;
                }
            } else {
                out = v;
            }
        } else {
            mq_cli_err("synth", "unknown option '%s'", a);
            synth_usage(stderr);
            return MQ_EXIT_USAGE;
        }
    }
    if (!o.shape || !out) {
        mq_cli_err("synth", "%s is required", !o.shape ? "--shape" : "-o DIR");
        synth_usage(stderr);
        return MQ_EXIT_USAGE;
    }
    if (mq_synth_write(out, &o) < 0) {
        mq_cli_err("synth", "%s", mq_err_get());
        return MQ_EXIT_ERR;
    }
    return MQ_EXIT_OK;
}
