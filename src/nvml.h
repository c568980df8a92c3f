/* nvml: GPU power, energy and memory readings through NVML loaded at run time, plus a sampler thread. */
#ifndef MQ_NVML_H
#define MQ_NVML_H
#include <stddef.h>
#include <stdint.h>

/* NVML is opened with dlopen (libnvidia-ml.so.1, or the path in env MQ_NVML_LIB) so the binary
 * never links against the driver. When the library, the symbols or the GPU are missing, the handle
 * still opens in an "n/a" state: every reading returns MQ_NVML_NA and mq_nvml_reason says why.
 * Nothing here fails a benchmark. */
enum { MQ_NVML_OK = 0, MQ_NVML_NA = 1 };

typedef struct mq_nvml mq_nvml;

/* Open NVML for GPU `index` (NVML's order; env MQ_NVML_DEVICE overrides when index < 0, default 0).
 * Returns NULL only when out of memory. */
mq_nvml *mq_nvml_open(int index);
void mq_nvml_close(mq_nvml *n);
int mq_nvml_available(const mq_nvml *n);          /* 1 when readings work */
const char *mq_nvml_reason(const mq_nvml *n);     /* "" when available, else one line */

/* Each returns MQ_NVML_OK and writes the value, or MQ_NVML_NA and leaves it alone. */
int mq_nvml_power_w(mq_nvml *n, double *watts);              /* board power draw */
int mq_nvml_energy_j(mq_nvml *n, double *joules);            /* total-energy counter (Volta+) */
int mq_nvml_mem_used(mq_nvml *n, uint64_t *used, uint64_t *total); /* device memory, bytes */
int mq_nvml_proc_mem(mq_nvml *n, long pid, uint64_t *bytes); /* one process's GPU memory */
int mq_nvml_name(mq_nvml *n, char *buf, size_t cap);         /* e.g. "NVIDIA H100 80GB HBM3" */
int mq_nvml_driver(mq_nvml *n, char *buf, size_t cap);       /* driver version string */

/* What a sampling window measured. Fields are valid only where the matching *_ok flag is set. */
typedef struct {
    int n_samples;       /* power readings taken */
    double seconds;      /* window length (monotonic clock) */
    int power_ok;        /* avg_w_samples / peak_w valid */
    double avg_w_samples;/* mean of the readings */
    double peak_w;       /* largest reading */
    int energy_ok;       /* energy_j valid */
    double energy_j;     /* counter delta when the GPU has one, else the trapezoid of the readings */
    const char *energy_source; /* "counter", "samples" or "n/a" */
    double avg_w;        /* energy_j / seconds when energy_ok, else avg_w_samples */
    int mem_ok;          /* peak_proc_mem valid */
    uint64_t peak_proc_mem; /* largest per-process GPU memory seen (this process) */
    uint64_t peak_dev_mem;  /* largest device-wide used memory seen */
} mq_nvml_stats;

/* A reading source, so the sampler's arithmetic can be tested without a GPU. Each callback returns
 * MQ_NVML_OK or MQ_NVML_NA; energy and mem may be NULL. */
typedef struct {
    int (*power_w)(void *user, double *w);
    int (*energy_j)(void *user, double *j);
    int (*mem)(void *user, uint64_t *proc, uint64_t *dev);
    void *user;
} mq_nvml_source;

typedef struct mq_nvml_sampler mq_nvml_sampler;
/* The source of an open handle (readings of this process's pid). */
mq_nvml_source mq_nvml_source_of(mq_nvml *n);
/* Start a thread that reads `src` hz times a second (1..1000) until stop. NULL if the thread
 * cannot start (mq_err set). */
mq_nvml_sampler *mq_nvml_sampler_start(const mq_nvml_source *src, double hz);
/* Stop, join, fill *st (always; fields the source could not read are flagged invalid) and free. */
void mq_nvml_sampler_stop(mq_nvml_sampler *s, mq_nvml_stats *st);

/* Mean power over `seconds` at `hz` (idle measurement). MQ_NVML_NA when power cannot be read. */
int mq_nvml_idle_w(mq_nvml *n, double seconds, double hz, double *watts);

#endif
