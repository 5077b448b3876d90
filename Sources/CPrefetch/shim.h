// Swift has no prefetch intrinsic; this exposes clang's (a hint: never faults, may be ignored).
static inline void tandem_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }
