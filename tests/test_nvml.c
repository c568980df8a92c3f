/* test_nvml: NVML-absent path (n/a, never failure) and the sampler's arithmetic on fake sources. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "nvml.h"

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void absent_library_is_na(void **state) {
    (void)state;
    setenv("MQ_NVML_LIB", "/nonexistent/libnvidia-ml.so.1", 1);
    mq_nvml *n = mq_nvml_open(0);
    assert_non_null(n);
    assert_int_equal(mq_nvml_available(n), 0);
    assert_non_null(strstr(mq_nvml_reason(n), "n/a"));
    assert_non_null(strstr(mq_nvml_reason(n), "/nonexistent/libnvidia-ml.so.1"));
    double w = -7, j = -7;
    uint64_t u = 7, t = 7;
    char buf[64] = "untouched";
    assert_int_equal(mq_nvml_power_w(n, &w), MQ_NVML_NA);
    assert_int_equal(mq_nvml_energy_j(n, &j), MQ_NVML_NA);
    assert_int_equal(mq_nvml_mem_used(n, &u, &t), MQ_NVML_NA);
    assert_int_equal(mq_nvml_proc_mem(n, 1, &u), MQ_NVML_NA);
    assert_int_equal(mq_nvml_name(n, buf, sizeof buf), MQ_NVML_NA);
    assert_int_equal(mq_nvml_driver(n, buf, sizeof buf), MQ_NVML_NA);
    assert_int_equal(mq_nvml_idle_w(n, 0.05, 20, &w), MQ_NVML_NA);
    assert_true(w == -7 && j == -7 && u == 7 && t == 7 && !strcmp(buf, "untouched"));
    /* A sampler over an n/a handle runs and reports nothing valid. */
    mq_nvml_source src = mq_nvml_source_of(n);
    mq_nvml_sampler *s = mq_nvml_sampler_start(&src, 50);
    assert_non_null(s);
    sleep_s(0.05);
    mq_nvml_stats st;
    mq_nvml_sampler_stop(s, &st);
    assert_int_equal(st.power_ok, 0);
    assert_int_equal(st.energy_ok, 0);
    assert_int_equal(st.mem_ok, 0);
    assert_string_equal(st.energy_source, "n/a");
    mq_nvml_close(n);
    unsetenv("MQ_NVML_LIB");
}

static void library_without_symbols_is_na(void **state) {
    (void)state;
    setenv("MQ_NVML_LIB", "libm.so.6", 1); /* loads, but has no NVML symbols */
    mq_nvml *n = mq_nvml_open(0);
    assert_non_null(n);
    assert_int_equal(mq_nvml_available(n), 0);
    assert_non_null(strstr(mq_nvml_reason(n), "lacks"));
    double w;
    assert_int_equal(mq_nvml_power_w(n, &w), MQ_NVML_NA);
    mq_nvml_close(n);
    unsetenv("MQ_NVML_LIB");
    mq_nvml_close(NULL); /* harmless */
}

/* Fake GPU: power alternates lo/hi per reading; the energy counter runs at counter_w watts. */
typedef struct {
    double lo, hi, counter_w, t0;
    int calls, has_energy, has_power;
    uint64_t proc;
} fake;
static int f_power(void *u, double *w) {
    fake *f = u;
    if (!f->has_power) return MQ_NVML_NA;
    *w = (f->calls++ % 2) ? f->hi : f->lo;
    return MQ_NVML_OK;
}
static int f_energy(void *u, double *j) {
    fake *f = u;
    if (!f->has_energy) return MQ_NVML_NA;
    *j = 5000.0 + f->counter_w * (mono() - f->t0); /* counters start anywhere */
    return MQ_NVML_OK;
}
static int f_mem(void *u, uint64_t *proc, uint64_t *dev) {
    fake *f = u;
    f->proc += 1000;
    *proc = f->proc;
    *dev = 2 * f->proc;
    return MQ_NVML_OK;
}

static void sampler_uses_counter(void **state) {
    (void)state;
    fake f = {100, 100, 250, mono(), 0, 1, 1, 0};
    mq_nvml_source src = {f_power, f_energy, f_mem, &f};
    mq_nvml_sampler *s = mq_nvml_sampler_start(&src, 100);
    assert_non_null(s);
    sleep_s(0.25);
    mq_nvml_stats st;
    mq_nvml_sampler_stop(s, &st);
    assert_true(st.seconds >= 0.24 && st.seconds < 2.0);
    assert_true(st.n_samples >= 5); /* 100 Hz over 0.25 s, allowing for a loaded machine */
    assert_int_equal(st.n_samples, f.calls);
    assert_int_equal(st.power_ok, 1);
    assert_true(fabs(st.avg_w_samples - 100) < 1e-9);
    assert_true(fabs(st.peak_w - 100) < 1e-9);
    assert_int_equal(st.energy_ok, 1);
    assert_string_equal(st.energy_source, "counter");
    /* Counter delta over the window = 250 W x seconds (both clocks are the monotonic clock). */
    assert_true(fabs(st.energy_j - 250 * st.seconds) < 0.05 * 250 * st.seconds);
    assert_true(fabs(st.avg_w - 250) < 12.5);
    assert_int_equal(st.mem_ok, 1);
    assert_true(st.peak_proc_mem == f.proc && st.peak_dev_mem == 2 * f.proc);
}

static void sampler_integrates_without_counter(void **state) {
    (void)state;
    fake f = {50, 150, 0, mono(), 0, 0, 1, 0};
    mq_nvml_source src = {f_power, f_energy, NULL, &f};
    mq_nvml_sampler *s = mq_nvml_sampler_start(&src, 200);
    assert_non_null(s);
    sleep_s(0.3);
    mq_nvml_stats st;
    mq_nvml_sampler_stop(s, &st);
    assert_int_equal(st.power_ok, 1);
    assert_true(fabs(st.peak_w - 150) < 1e-9);
    /* Readings alternate 50/150: the mean is within one reading's weight of 100. */
    assert_true(fabs(st.avg_w_samples - 100) <= 100.0 / st.n_samples + 1e-9);
    assert_int_equal(st.energy_ok, 1);
    assert_string_equal(st.energy_source, "samples");
    /* The trapezoid of an alternating 50/150 series is 100 W per interval; the window's first
     * and last instants may be short of a reading, so allow 25%. */
    assert_true(fabs(st.energy_j - 100 * st.seconds) < 0.25 * 100 * st.seconds);
    assert_int_equal(st.mem_ok, 0);
}

static void sampler_without_power(void **state) {
    (void)state;
    fake f = {0, 0, 0, mono(), 0, 0, 0, 0};
    mq_nvml_source src = {f_power, f_energy, NULL, &f};
    assert_null(mq_nvml_sampler_start(&src, 0));      /* rate out of range */
    assert_null(mq_nvml_sampler_start(&src, 5000));
    mq_nvml_sampler *s = mq_nvml_sampler_start(&src, 20);
    assert_non_null(s);
    mq_nvml_stats st;
    mq_nvml_sampler_stop(s, &st);
    assert_int_equal(st.power_ok, 0);
    assert_int_equal(st.energy_ok, 0);
    assert_int_equal(st.n_samples, 0);
    mq_nvml_sampler_stop(NULL, &st); /* fills n/a, no crash */
    assert_string_equal(st.energy_source, "n/a");
}

/* On a machine with a GPU the real library answers plausibly; elsewhere it is n/a, not an error. */
static void real_library_if_present(void **state) {
    (void)state;
    unsetenv("MQ_NVML_LIB");
    mq_nvml *n = mq_nvml_open(-1);
    assert_non_null(n);
    if (!mq_nvml_available(n)) {
        assert_true(strlen(mq_nvml_reason(n)) > 0);
        mq_nvml_close(n);
        skip();
    }
    double w;
    assert_int_equal(mq_nvml_power_w(n, &w), MQ_NVML_OK);
    assert_true(w > 0 && w < 5000);
    uint64_t used, total;
    if (mq_nvml_mem_used(n, &used, &total) == MQ_NVML_OK) assert_true(used <= total && total > 0);
    mq_nvml_close(n);
}

int main(void) {
    const struct CMUnitTest t[] = {
        cmocka_unit_test(absent_library_is_na),
        cmocka_unit_test(library_without_symbols_is_na),
        cmocka_unit_test(sampler_uses_counter),
        cmocka_unit_test(sampler_integrates_without_counter),
        cmocka_unit_test(sampler_without_power),
        cmocka_unit_test(real_library_if_present),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
