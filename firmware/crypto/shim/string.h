/* freestanding shim: provided by firmware/agent/src/libc.c */
#ifndef TMLA_SHIM_STRING_H
#define TMLA_SHIM_STRING_H
#include <stddef.h>
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
#endif
