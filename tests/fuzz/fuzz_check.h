/* fuzz_check.h: what the libFuzzer harnesses share: a failed property aborts with a message */
#ifndef DUALPROXY_FUZZ_CHECK_H
#define DUALPROXY_FUZZ_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The entry point libFuzzer calls once per input; declared here so that
 * -Wmissing-prototypes holds for the harnesses. Returns 0 (keep the input). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts (a crash libFuzzer saves as an artifact) when cond is false. */
#define FUZZ_CHECK(cond, ...)                                                  \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: property failed: %s: ",        \
				__FILE__, __LINE__, #cond);                    \
			fprintf(stderr, __VA_ARGS__);                          \
			fputc('\n', stderr);                                   \
			abort();                                               \
		}                                                              \
	} while (0)

/* A heap copy of exactly size bytes, plus a NUL when nul is true, so that
 * AddressSanitizer sees any read past the end (malloc(0) too). The caller
 * frees it. Aborts when out of memory. */
static inline char *fuzz_copy(const uint8_t *data, size_t size, bool nul)
{
	size_t total = size + (nul ? 1 : 0);
	char *p = malloc(total);
	if (p == NULL && total > 0)
		abort();
	if (size > 0)
		memcpy(p, data, size);
	if (nul)
		p[size] = '\0';
	return p;
}

#endif
