/* freestanding shim: the vendored sources' allocating wrappers (unused by the agent, which keeps
 * every state in caller-owned memory) compile against these and always fail: no heap is linked. */
#ifndef TMLA_SHIM_STDLIB_H
#define TMLA_SHIM_STDLIB_H
#include <stddef.h>
static inline void *calloc(size_t n, size_t s) { (void)n; (void)s; return NULL; }
static inline void free(void *p) { (void)p; }
static inline int posix_memalign(void **p, size_t a, size_t s) { (void)a; (void)s; *p = NULL; return 12; }
#endif
