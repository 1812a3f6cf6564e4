/* freestanding shim: a failed assertion traps (the vendored sources force assertions on) */
#ifndef TMLA_SHIM_ASSERT_H
#define TMLA_SHIM_ASSERT_H
#define assert(x) ((x) ? (void)0 : __builtin_trap())
#endif
