/* parse.h: config values: durations, counts, booleans, lists */
#ifndef DUALPROXY_PARSE_H
#define DUALPROXY_PARSE_H

#include <stdbool.h>

/* Durations: a decimal number followed by ms, s, m or h ("1.5s", "250ms",
 * "15m"); a bare number is seconds. Must be at least a millisecond and at
 * most a week.
 * Returns 0 and seconds in *out, or -1 with *err set to a static message. */
int parse_duration(const char *s, double *out, const char **err);

/* A decimal integer in [min, max]. Returns 0, or -1 with *err. */
int parse_uint(const char *s, unsigned long min, unsigned long max,
	       unsigned long *out, const char **err);

/* yes/no, true/false, on/off, 1/0. Returns 0, or -1 with *err. */
int parse_bool(const char *s, bool *out, const char **err);

/* Separators of a list: commas and any whitespace, newlines included (a
 * YAML block scalar in a Kubernetes manifest brings those). */
#define PARSE_LIST_SEP ", \t\r\n\v\f"

/* Longest entry of a list. */
#define PARSE_ITEM_MAX 255

/* Calls fn(item, ctx) for each entry of a list (empty entries are
 * skipped), with the entry NUL-terminated. Returns the number of entries,
 * or -1: fn returned non-zero (it reported why; *err is set to NULL), or an
 * entry is longer than PARSE_ITEM_MAX (*err says so). */
int parse_list(const char *s, int (*fn)(const char *item, void *ctx), void *ctx,
	       const char **err);

#endif
