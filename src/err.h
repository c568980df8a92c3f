/* err: the engine's one error slot — a thread-local message every module sets on failure. */
#ifndef MQ_ERR_H
#define MQ_ERR_H

/* Every fallible internal function returns 0 / non-NULL on success and -1 / NULL on failure,
 * after calling mq_err_set with one line that names the file or object and the problem
 * (e.g. "model.safetensors: header length 9e9 is past end of file (1234 bytes)"). */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
void mq_err_set(const char *fmt, ...);
const char *mq_err_get(void); /* "" when no error was set */
void mq_err_clear(void);

#endif
