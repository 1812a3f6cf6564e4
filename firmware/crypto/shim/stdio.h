/* freestanding shim: the vendored sources include <stdio.h> but use nothing from it */
#ifndef TMLA_SHIM_STDIO_H
#define TMLA_SHIM_STDIO_H
#endif
