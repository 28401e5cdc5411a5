/* text.h: a growable text buffer for generated text (metrics, configuration) */
#ifndef DUALPROXY_TEXT_H
#define DUALPROXY_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Text appended with text_printf; buf is NUL-terminated and owned. After a
 * failed allocation the text stays failed and text_printf does nothing. */
struct text {
	char *buf;
	size_t len, cap;
	bool failed;
};

/* Appends formatted text. */
void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the buffer to the caller (who frees it) and its length in *len;
 * returns NULL, after freeing it, if an allocation failed. */
char *text_take(struct text *t, size_t *len);

void text_free(struct text *t);

#endif
