// CPU_SET and sched_setaffinity are GNU macros/extensions Swift cannot import directly.
#define _GNU_SOURCE
#include <sched.h>

static inline int tandem_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}
