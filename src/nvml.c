/* nvml: GPU power, energy and memory readings through NVML loaded at run time, plus a sampler thread. */
#include "nvml.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "err.h"

/* NVML's ABI, declared here (not from nvml.h, which the build machine lacks). All calls return
 * nvmlReturn_t, 0 = success; nvmlDevice_t is an opaque pointer. */
typedef void *nv_dev;
typedef struct { unsigned long long total, free, used; } nv_memory;
/* nvmlProcessInfo_t as of _v2/_v3: 24 bytes with padding after pid. */
typedef struct {
    unsigned int pid;
    unsigned long long used;
    unsigned int gpu_instance, compute_instance;
} nv_proc;
#define NV_ERROR_INSUFFICIENT_SIZE 7
#define NV_VALUE_NOT_AVAILABLE (~0ULL)

struct mq_nvml {
    void *lib;
    nv_dev dev;
    int ok;
    int has_energy;   /* the total-energy counter answered at open */
    char reason[256];
    int (*shutdown)(void);
    int (*power)(nv_dev, unsigned int *);
    int (*energy)(nv_dev, unsigned long long *);
    int (*meminfo)(nv_dev, nv_memory *);
    int (*procs)(nv_dev, unsigned int *, nv_proc *);
    int (*name)(nv_dev, char *, unsigned int);
    int (*driver)(char *, unsigned int);
};

static void *sym(void *lib, const char *a, const char *b) {
    void *p = dlsym(lib, a);
    return p || !b ? p : dlsym(lib, b);
}

mq_nvml *mq_nvml_open(int index) {
    mq_nvml *n = calloc(1, sizeof *n);
    if (!n) { mq_err_set("nvml: out of memory"); return NULL; }
    const char *path = getenv("MQ_NVML_LIB");
    int given = path && *path;
    if (!given) path = "libnvidia-ml.so.1";
    if (index < 0) {
        const char *e = getenv("MQ_NVML_DEVICE");
        index = e && *e ? atoi(e) : 0;
        if (index < 0) index = 0;
    }
    n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    /* Containers often mount the driver's libraries outside the loader's path. */
    static const char *const extra[] = {"/usr/local/nvidia/lib64/libnvidia-ml.so.1",
                                        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "/usr/lib64/libnvidia-ml.so.1"};
    for (size_t i = 0; !n->lib && !given && i < sizeof extra / sizeof extra[0]; i++)
        n->lib = dlopen(extra[i], RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        snprintf(n->reason, sizeof n->reason, "n/a: %s could not be loaded (no NVIDIA driver?)", path);
        return n;
    }
    int (*init)(void) = (int (*)(void))sym(n->lib, "nvmlInit_v2", "nvmlInit");
    int (*handle)(unsigned int, nv_dev *) =
        (int (*)(unsigned int, nv_dev *))sym(n->lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
    n->shutdown = (int (*)(void))sym(n->lib, "nvmlShutdown", NULL);
    n->power = (int (*)(nv_dev, unsigned int *))sym(n->lib, "nvmlDeviceGetPowerUsage", NULL);
    n->energy = (int (*)(nv_dev, unsigned long long *))sym(n->lib, "nvmlDeviceGetTotalEnergyConsumption", NULL);
    n->meminfo = (int (*)(nv_dev, nv_memory *))sym(n->lib, "nvmlDeviceGetMemoryInfo", NULL);
    n->procs = (int (*)(nv_dev, unsigned int *, nv_proc *))sym(
        n->lib, "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2");
    n->name = (int (*)(nv_dev, char *, unsigned int))sym(n->lib, "nvmlDeviceGetName", NULL);
    n->driver = (int (*)(char *, unsigned int))sym(n->lib, "nvmlSystemGetDriverVersion", NULL);
    if (!init || !handle || !n->power) {
        snprintf(n->reason, sizeof n->reason, "n/a: %s lacks nvmlInit/nvmlDeviceGetPowerUsage", path);
        dlclose(n->lib);
        n->lib = NULL;
        return n;
    }
    int r = init();
    if (r) {
        snprintf(n->reason, sizeof n->reason, "n/a: nvmlInit failed (NVML error %d)", r);
        dlclose(n->lib);
        n->lib = NULL;
        return n;
    }
    if ((r = handle((unsigned)index, &n->dev))) {
        snprintf(n->reason, sizeof n->reason, "n/a: no GPU %d (NVML error %d)", index, r);
        if (n->shutdown) n->shutdown();
        dlclose(n->lib);
        n->lib = NULL;
        return n;
    }
    unsigned int mw;
    if ((r = n->power(n->dev, &mw))) {
        snprintf(n->reason, sizeof n->reason, "n/a: GPU %d does not report power (NVML error %d)", index, r);
        if (n->shutdown) n->shutdown();
        dlclose(n->lib);
        n->lib = NULL;
        return n;
    }
    unsigned long long mj;
    n->has_energy = n->energy && n->energy(n->dev, &mj) == 0;
    n->ok = 1;
    return n;
}

void mq_nvml_close(mq_nvml *n) {
    if (!n) return;
    if (n->lib) {
        if (n->shutdown) n->shutdown();
        dlclose(n->lib);
    }
    free(n);
}

int mq_nvml_available(const mq_nvml *n) { return n && n->ok; }
const char *mq_nvml_reason(const mq_nvml *n) { return !n ? "n/a: no handle" : n->ok ? "" : n->reason; }

int mq_nvml_power_w(mq_nvml *n, double *watts) {
    unsigned int mw;
    if (!mq_nvml_available(n) || n->power(n->dev, &mw)) return MQ_NVML_NA;
    *watts = mw / 1000.0;
    return MQ_NVML_OK;
}

int mq_nvml_energy_j(mq_nvml *n, double *joules) {
    unsigned long long mj;
    if (!mq_nvml_available(n) || !n->has_energy || n->energy(n->dev, &mj)) return MQ_NVML_NA;
    *joules = (double)mj / 1000.0;
    return MQ_NVML_OK;
}

int mq_nvml_mem_used(mq_nvml *n, uint64_t *used, uint64_t *total) {
    nv_memory m;
    if (!mq_nvml_available(n) || !n->meminfo || n->meminfo(n->dev, &m)) return MQ_NVML_NA;
    if (used) *used = m.used;
    if (total) *total = m.total;
    return MQ_NVML_OK;
}

int mq_nvml_proc_mem(mq_nvml *n, long pid, uint64_t *bytes) {
    if (!mq_nvml_available(n) || !n->procs) return MQ_NVML_NA;
    nv_proc p[64];
    unsigned int cnt = 64;
    if (n->procs(n->dev, &cnt, p)) return MQ_NVML_NA; /* includes INSUFFICIENT_SIZE: > 64 processes */
    for (unsigned i = 0; i < cnt && i < 64; i++)
        if ((long)p[i].pid == pid && p[i].used != NV_VALUE_NOT_AVAILABLE) {
            *bytes = p[i].used;
            return MQ_NVML_OK;
        }
    return MQ_NVML_NA; /* not listed: no context yet, or another PID namespace */
}

int mq_nvml_name(mq_nvml *n, char *buf, size_t cap) {
    if (!mq_nvml_available(n) || !n->name || cap == 0 || n->name(n->dev, buf, (unsigned)cap)) return MQ_NVML_NA;
    buf[cap - 1] = 0;
    return MQ_NVML_OK;
}

int mq_nvml_driver(mq_nvml *n, char *buf, size_t cap) {
    if (!mq_nvml_available(n) || !n->driver || cap == 0 || n->driver(buf, (unsigned)cap)) return MQ_NVML_NA;
    buf[cap - 1] = 0;
    return MQ_NVML_OK;
}

/* ---- source over an open handle ---- */
static int src_power(void *u, double *w) { return mq_nvml_power_w(u, w); }
static int src_energy(void *u, double *j) { return mq_nvml_energy_j(u, j); }
static int src_mem(void *u, uint64_t *proc, uint64_t *dev) {
    mq_nvml *n = u;
    int a = mq_nvml_proc_mem(n, (long)getpid(), proc);
    int b = mq_nvml_mem_used(n, dev, NULL);
    if (a) *proc = 0;
    if (b) *dev = 0;
    return a && b ? MQ_NVML_NA : MQ_NVML_OK;
}

mq_nvml_source mq_nvml_source_of(mq_nvml *n) {
    mq_nvml_source s = {src_power, src_energy, src_mem, n};
    return s;
}

/* ---- sampler ---- */
struct mq_nvml_sampler {
    mq_nvml_source src;
    double period;        /* seconds between readings */
    pthread_t th;
    atomic_int stop;
    double t0;            /* monotonic start */
    int e_ok;
    double e0;            /* energy counter at start */
    /* Written by the thread only; read after join. */
    int n, n_power;
    double sum_w, peak_w, trap_j, last_t, last_w;
    int mem_ok;
    uint64_t peak_proc, peak_dev;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void take(mq_nvml_sampler *s) {
    double w, t = now_s();
    s->n++;
    if (s->src.power_w && s->src.power_w(s->src.user, &w) == MQ_NVML_OK) {
        /* Trapezoid between consecutive readings: the fallback energy when there is no counter. */
        if (s->n_power) s->trap_j += 0.5 * (w + s->last_w) * (t - s->last_t);
        if (!s->n_power || w > s->peak_w) s->peak_w = w;
        s->sum_w += w;
        s->n_power++;
        s->last_w = w;
        s->last_t = t;
    }
    uint64_t p = 0, d = 0;
    if (s->src.mem && s->src.mem(s->src.user, &p, &d) == MQ_NVML_OK) {
        s->mem_ok = 1;
        if (p > s->peak_proc) s->peak_proc = p;
        if (d > s->peak_dev) s->peak_dev = d;
    }
}

static void *sampler_main(void *arg) {
    mq_nvml_sampler *s = arg;
    /* Absolute deadlines so slow readings do not stretch the period. */
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long step_ns = (long)(s->period * 1e9);
    take(s);
    while (!atomic_load(&s->stop)) {
        next.tv_nsec += step_ns;
        while (next.tv_nsec >= 1000000000L) { next.tv_nsec -= 1000000000L; next.tv_sec++; }
        /* Sleep in slices of at most 5 ms so stop is noticed quickly. */
        for (;;) {
            if (atomic_load(&s->stop)) return NULL;
            struct timespec cur;
            clock_gettime(CLOCK_MONOTONIC, &cur);
            double left = (next.tv_sec - cur.tv_sec) + (next.tv_nsec - cur.tv_nsec) * 1e-9;
            if (left <= 0) break;
            struct timespec sl = {0, (long)((left < 0.005 ? left : 0.005) * 1e9)};
            nanosleep(&sl, NULL);
        }
        take(s);
    }
    return NULL;
}

mq_nvml_sampler *mq_nvml_sampler_start(const mq_nvml_source *src, double hz) {
    if (!src || !(hz >= 1 && hz <= 1000)) { mq_err_set("nvml: sampler rate %g Hz outside 1..1000", hz); return NULL; }
    mq_nvml_sampler *s = calloc(1, sizeof *s);
    if (!s) { mq_err_set("nvml: out of memory"); return NULL; }
    s->src = *src;
    s->period = 1.0 / hz;
    atomic_init(&s->stop, 0);
    s->e_ok = src->energy_j && src->energy_j(src->user, &s->e0) == MQ_NVML_OK;
    s->t0 = now_s();
    if (pthread_create(&s->th, NULL, sampler_main, s)) {
        free(s);
        mq_err_set("nvml: cannot start the sampler thread");
        return NULL;
    }
    return s;
}

void mq_nvml_sampler_stop(mq_nvml_sampler *s, mq_nvml_stats *st) {
    memset(st, 0, sizeof *st);
    st->energy_source = "n/a";
    if (!s) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    take(s); /* a closing reading, so the trapezoid covers the whole window */
    double t1 = now_s(), e1;
    st->seconds = t1 - s->t0;
    st->n_samples = s->n_power;
    if (s->n_power) {
        st->power_ok = 1;
        st->avg_w_samples = s->sum_w / s->n_power;
        st->peak_w = s->peak_w;
        st->avg_w = st->avg_w_samples;
    }
    if (s->e_ok && s->src.energy_j(s->src.user, &e1) == MQ_NVML_OK && e1 >= s->e0) {
        st->energy_ok = 1;
        st->energy_j = e1 - s->e0;
        st->energy_source = "counter";
    } else if (s->n_power >= 2) {
        st->energy_ok = 1;
        st->energy_j = s->trap_j;
        st->energy_source = "samples";
    }
    /* The counter's mean is exact over the window; single readings are board averages. */
    if (st->energy_ok && st->seconds > 0) st->avg_w = st->energy_j / st->seconds;
    st->mem_ok = s->mem_ok;
    st->peak_proc_mem = s->peak_proc;
    st->peak_dev_mem = s->peak_dev;
    free(s);
}

int mq_nvml_idle_w(mq_nvml *n, double seconds, double hz, double *watts) {
    if (!mq_nvml_available(n)) return MQ_NVML_NA;
    mq_nvml_source src = mq_nvml_source_of(n);
    src.energy_j = NULL; /* idle power is the mean reading, not a counter delta */
    mq_nvml_sampler *s = mq_nvml_sampler_start(&src, hz);
    if (!s) return MQ_NVML_NA;
    struct timespec sl = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&sl, NULL);
    mq_nvml_stats st;
    mq_nvml_sampler_stop(s, &st);
    if (!st.power_ok) return MQ_NVML_NA;
    *watts = st.avg_w_samples;
    return MQ_NVML_OK;
}
