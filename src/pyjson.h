/* pyjson: JSON text exactly as Python's json.dumps(v, ensure_ascii=False) writes it (Jinja's tojson in
 * transformers' chat templates, vLLM's tool-call arguments). */
#ifndef MQ_PYJSON_H
#define MQ_PYJSON_H
#include <cjson/cJSON.h>

/* v as Python writes it: ", " and ": " separators, keys in their order, non-ASCII as is, control
 * characters escaped; malloc'd, NULL when out of memory. cJSON keeps no int / float distinction, so
 * an integral number under 1e16 is written as an integer (Python would write 2.0 for a float 2.0). */
char *mq_pyjson(const cJSON *v);
/* The JSON string literal of s[0..n) as Python writes it (any bytes, NUL included, which cJSON's
 * strings cannot hold); malloc'd, NULL when out of memory. */
char *mq_pyjson_str(const char *s, size_t n);

#endif
