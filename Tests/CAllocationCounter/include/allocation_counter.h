#ifndef TANDEM_ALLOCATION_COUNTER_H
#define TANDEM_ALLOCATION_COUNTER_H

/// Heap allocations of this process so far: every call of malloc, calloc, realloc, posix_memalign, aligned_alloc,
/// memalign, valloc and pvalloc, from any thread and any library (Swift runtime, Foundation, OpenBLAS, MPI).
long tandem_allocation_count(void);

/// Writes a backtrace of each of the next `count` allocations to standard error: how to find the code that
/// allocates in a step.
void tandem_allocation_backtraces(int count);

#endif
