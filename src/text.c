/* text.c: a growable text buffer for generated text (metrics, configuration) */
#include "autoconfig.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "text.h"

#define TEXT_INITIAL 4096

void text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;

	while (!t->failed) {
		int n = 0;
		if (t->cap > t->len) {
			va_start(ap, fmt);
			n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
			va_end(ap);
			if (n < 0) {
				t->failed = true;
				return;
			}
			if ((size_t)n < t->cap - t->len) {
				t->len += (size_t)n;
				return;
			}
		}
		size_t cap = t->cap == 0 ? TEXT_INITIAL : t->cap;
		while (cap <= t->len + (size_t)n)
			cap *= 2;
		char *nb = realloc(t->buf, cap);
		if (nb == NULL) {
			t->failed = true;
			return;
		}
		t->buf = nb;
		t->cap = cap;
	}
}

char *text_take(struct text *t, size_t *len)
{
	if (t->buf == NULL)
		text_printf(t, "%s", "");
	char *out = t->buf;
	if (t->failed) {
		text_free(t);
		return NULL;
	}
	if (len != NULL)
		*len = t->len;
	*t = (struct text){ NULL, 0, 0, false };
	return out;
}

void text_free(struct text *t)
{
	free(t->buf);
	*t = (struct text){ NULL, 0, 0, false };
}
