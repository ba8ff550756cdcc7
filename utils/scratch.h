// Scratch memory that is allocated once and kept: a layer that needs temporary
// memory on every call takes it from a Scratch of its own, which grows when a
// call needs more and is otherwise reused, so a training step allocates nothing.
// A Scratch serves one thread at a time (make it threadprivate for more).
#ifndef UTILS_SCRATCH_H
#define UTILS_SCRATCH_H

#include <stdlib.h>
#include "utils/utils.h"

typedef struct {
    void* p;
    size_t bytes;
} Scratch;

// At least `bytes` bytes, the contents undefined.
static void* scratch_get(Scratch* s, size_t bytes) {
    if (bytes > s->bytes) {
        free(s->p);
        s->p = malloc_check(bytes);
        s->bytes = bytes;
    }
    return s->p;
}

#endif
