/* cmd: the CLI's subcommand entry points and the small argument helpers they share. */
#ifndef MQ_CMD_H
#define MQ_CMD_H
#include <stdint.h>
#include <stdio.h>
#include "megaqwen.h"

/* Exit codes: 0 ok, 1 runtime error (one line on stderr), 2 usage error. */
enum { MQ_EXIT_OK = 0, MQ_EXIT_ERR = 1, MQ_EXIT_USAGE = 2 };

int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Shared helpers (tools/megaqwen.c). */
/* Parse "1,2,3" into a malloc'd array; -1 on a malformed list (message on stderr). */
int mq_cli_parse_ids(const char *s, int32_t **ids, size_t *n);
/* Parse an int/float option value strictly; print "megaqwen CMD: bad value for OPT" and return -1. */
int mq_cli_int(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out);
int mq_cli_float(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out);
/* Read a whole file (malloc'd, NUL-terminated). NULL + message on error. */
char *mq_cli_read_file(const char *path, size_t *len);
/* Check a --backend value (auto|cpu|cuda); prints the usage error and returns -1 if bad. */
int mq_cli_backend(const char *cmd, const char *v);
/* Print "megaqwen CMD: MSG" to stderr. */
void mq_cli_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sampling flags shared by run, chat and bench: --temp --top-k --top-p --min-p --repeat-penalty
 * --repeat-last-n --seed --presence-penalty --frequency-penalty. Values given on the command line
 * override generation_config.json. */
typedef struct {
    mq_sampling v;
    unsigned set;  /* bit per field given on the command line */
} mq_cli_samp;
#define MQ_CLI_SAMPLING_LONGOPTS                                                                  \
    {"temp", 1, 0, 1001}, {"top-k", 1, 0, 1002}, {"top-p", 1, 0, 1003}, {"min-p", 1, 0, 1004}, \
        {"repeat-penalty", 1, 0, 1005}, {"repeat-last-n", 1, 0, 1006}, {"seed", 1, 0, 1007},       \
        {"presence-penalty", 1, 0, 1008}, {"frequency-penalty", 1, 0, 1009}
/* --kv-type T (every command that opens a model): the cuda backend's KV cache element */
#define MQ_CLI_KV 1100
#define MQ_CLI_KV_LONGOPT {"kv-type", 1, 0, MQ_CLI_KV}
#define MQ_CLI_KV_HELP "      --kv-type T       KV cache: f32 (default) | bf16 | f16 (cuda: half the bytes, faster at long context; cpu: same rounding)\n"
#define MQ_CLI_SAMPLING_HELP                                                                       \
    "  --temp T            temperature (0 = greedy; default from generation_config.json)\n"       \
    "  --top-k K           keep the K most likely tokens (0 = off)\n"                             \
    "  --top-p P           nucleus sampling (1 = off)\n"                                          \
    "  --min-p P           drop tokens below P x the top probability (0 = off)\n"                 \
    "  --repeat-penalty R  HF repetition penalty (1 = off)\n"                                     \
    "  --repeat-last-n N   tokens the penalty looks back over (0 = all)\n"                        \
    "  --seed S            RNG seed for reproducible sampling\n"                                 \
    "  --presence-penalty P, --frequency-penalty F\n"                                               \
    "                      OpenAI's, in [-2, 2]: minus P (+ F per occurrence) for generated tokens\n"  \
    "                      (run: this reply's; chat: the whole conversation's)\n"
/* Handle one getopt_long result: 1 handled, 0 not a sampling option, -1 bad value (printed). */
int mq_cli_sampling_opt(const char *cmd, int opt, const char *arg, mq_cli_samp *s);
/* Defaults, then generation_config.json, then the command-line values; installs them in c. */
int mq_cli_sampling_apply(mq_ctx *c, const mq_cli_samp *s);
/* The settings mq_cli_sampling_apply would install, into out. */
void mq_cli_sampling_resolve(mq_ctx *c, const mq_cli_samp *s, mq_sampling *out);

#endif
