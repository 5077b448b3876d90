// Counts heap allocations by defining the allocation functions in the executable itself: the dynamic linker binds
// every library's malloc calls to the first definition it finds, which is the executable's, so the Swift runtime,
// Foundation, OpenBLAS and Open MPI all come through here. Each function counts, then forwards to glibc's own
// implementation under its internal name (__libc_malloc, ...), so memory is still managed by glibc and `free`
// needs no wrapper. Linked into CountAllocations only.
#define _GNU_SOURCE
#include "allocation_counter.h"

#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

static atomic_long allocations;
static atomic_int backtracesLeft;
// backtrace() may allocate (it loads libgcc's unwinder on first use): an allocation made while printing one
// backtrace is counted but not traced again.
static __thread int tracing;

static void counted(void) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    if (atomic_load_explicit(&backtracesLeft, memory_order_relaxed) <= 0 || tracing) return;
    if (atomic_fetch_sub_explicit(&backtracesLeft, 1, memory_order_relaxed) <= 0) return;
    tracing = 1;
    void *frames[40];
    int depth = backtrace(frames, 40);
    static const char header[] = "--- allocation:\n";
    (void)!write(2, header, sizeof header - 1);
    backtrace_symbols_fd(frames, depth, 2);
    tracing = 0;
}

long tandem_allocation_count(void) { return atomic_load_explicit(&allocations, memory_order_relaxed); }

void tandem_allocation_backtraces(int count) {
    void *frame[1];
    tracing = 1;
    backtrace(frame, 1); // load the unwinder now, outside any measured step
    tracing = 0;
    atomic_store_explicit(&backtracesLeft, count, memory_order_relaxed);
}

void *malloc(size_t size) {
    counted();
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    counted();
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    counted();
    return __libc_realloc(pointer, size);
}

void *memalign(size_t alignment, size_t size) {
    counted();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    counted();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    counted();
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return ENOMEM;
    *result = pointer;
    return 0;
}

void *valloc(size_t size) {
    counted();
    return __libc_valloc(size);
}

void *pvalloc(size_t size) {
    counted();
    return __libc_pvalloc(size);
}
