// OpenMPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, ...) are macros that cast
// addresses of globals; Swift cannot import them, so they are exposed here as inline getters.
#include <mpi.h>

static inline MPI_Comm tandem_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype tandem_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype tandem_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype tandem_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype tandem_mpi_uint16(void) { return MPI_UINT16_T; }
static inline MPI_Datatype tandem_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype tandem_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Op tandem_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op tandem_mpi_max(void) { return MPI_MAX; }
static inline void *tandem_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request tandem_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *tandem_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler tandem_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
