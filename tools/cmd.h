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
/* Print "megaqwen CMD: MSG" to stderr. */
void mq_cli_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
