#include <cblas.h>
// Debian's cblas.h declares this only in some builds; it is always exported by libopenblas.
void openblas_set_num_threads(int num_threads);
