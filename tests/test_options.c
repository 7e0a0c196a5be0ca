/* test_options.c — options through the API and the environment:
 * ftm_option_get/set, their documented defaults, FTMEM_<NAME> variables read
 * lazily, ftm_options_print, and the visible effect of SHOW_STATS and
 * VERBOSE (run in a helper program so exit-time output can be seen). */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "ftm_test.h"
#include <ftmem.h>

TestSuite(options, .timeout = 30);

static const struct {
    ftm_option_t opt;
    const char *env;
    const char *name;
    long dflt;
} kOpts[] = {
    {FTM_OPTION_SHOW_STATS, "FTMEM_SHOW_STATS", "show_stats", 0},
    {FTM_OPTION_VERBOSE, "FTMEM_VERBOSE", "verbose", 0},
    {FTM_OPTION_PURGE_DELAY, "FTMEM_PURGE_DELAY", "purge_delay", 20},
    {FTM_OPTION_PURGE_THREAD, "FTMEM_PURGE_THREAD", "purge_thread", 1},
    {FTM_OPTION_LARGE_CACHE, "FTMEM_LARGE_CACHE", "large_cache", 16},
    {FTM_OPTION_TRACE, "FTMEM_TRACE", "trace", 0},
    {FTM_OPTION_TRACE_SAMPLE, "FTMEM_TRACE_SAMPLE", "trace_sample", 0},
    {FTM_OPTION_LEAK_REPORT, "FTMEM_LEAK_REPORT", "leak_report", 0},
    {FTM_OPTION_REPORT_INTERVAL, "FTMEM_REPORT_INTERVAL", "report_interval", 100},
};
#define NOPTS (sizeof kOpts / sizeof kOpts[0])

Test(options, defaults)
{
    cr_assert_eq((size_t)FTM_OPTION__COUNT, NOPTS, "the test does not know every option");
    for (size_t i = 0; i < NOPTS; i++) {
        if (getenv(kOpts[i].env))
            continue; /* overridden by whoever runs the tests */
        long v = ftm_option_get(kOpts[i].opt);
        cr_assert_eq(v, kOpts[i].dflt, "default %s is %ld, documented %ld", kOpts[i].env, v, kOpts[i].dflt);
    }
}

Test(options, set_then_get)
{
    static const long values[] = {0, 1, 3, 250, 100000};
    for (size_t i = 0; i < NOPTS; i++) {
        long old = ftm_option_get(kOpts[i].opt);
        for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
            long want = values[k];
            if ((kOpts[i].opt == FTM_OPTION_SHOW_STATS || kOpts[i].opt == FTM_OPTION_VERBOSE ||
                 kOpts[i].opt == FTM_OPTION_PURGE_THREAD) && want > 1)
                continue; /* boolean options */
            ftm_option_set(kOpts[i].opt, want);
            cr_assert_eq(ftm_option_get(kOpts[i].opt), want, "%s: set %ld, got %ld", kOpts[i].env, want,
                         ftm_option_get(kOpts[i].opt));
        }
        ftm_option_set(kOpts[i].opt, old);
        cr_assert_eq(ftm_option_get(kOpts[i].opt), old);
    }
    /* Allocation still works with unusual settings. */
    ftm_option_set(FTM_OPTION_LARGE_CACHE, 0);
    ftm_option_set(FTM_OPTION_PURGE_DELAY, 0);
    for (int i = 0; i < 4; i++) {
        void *p = ftm_malloc(8 * MiB);
        cr_assert_not_null(p);
        memset(ftt_launder(p), 1, 8 * MiB);
        ftm_free(p);
        void *q = ftm_malloc(100);
        cr_assert_not_null(q);
        ftm_free(q);
    }
}

static long helper_get(const char *env, const char *name)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "env %s '%s' get %s 2>/dev/null", env, FTMEM_TEST_HELPER, name);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    long v = -999;
    if (fscanf(f, "%ld", &v) != 1)
        v = -999;
    pclose(f);
    return v;
}

/* Options come from the environment once, when the library initialises
 * (before main here); the API overrides them afterwards. */
Test(options, api_overrides_environment)
{
    cr_assert_eq(helper_get("FTMEM_LARGE_CACHE=3", "large_cache"), 3);
    ftm_option_set(FTM_OPTION_PURGE_DELAY, 5);
    cr_assert_eq(ftm_option_get(FTM_OPTION_PURGE_DELAY), 5);
}

Test(options, environment_in_a_fresh_process)
{
    cr_assert_eq(helper_get("FTMEM_PURGE_DELAY=77", "purge_delay"), 77);
    cr_assert_eq(helper_get("FTMEM_PURGE_THREAD=0", "purge_thread"), 0);
    cr_assert_eq(helper_get("FTMEM_LARGE_CACHE=5", "large_cache"), 5);
    cr_assert_eq(helper_get("FTMEM_SHOW_STATS=1", "show_stats"), 1);
    cr_assert_eq(helper_get("FTMEM_VERBOSE=1", "verbose"), 1);
    cr_assert_eq(helper_get("-u FTMEM_LARGE_CACHE", "large_cache"), 16);
}

static void print_options(void)
{
    ftm_options_print();
}

Test(options, options_print_lists_every_option)
{
    ftm_option_set(FTM_OPTION_PURGE_DELAY, 4321);
    char *captured = ftt_capture_stderr(print_options);
    cr_assert_not_null(captured);
    static char text[16384];
    snprintf(text, sizeof text, "%s", captured);
    free(captured);
    cr_assert_gt(strlen(text), 20, "ftm_options_print wrote %zu bytes to stderr", strlen(text));
    for (size_t i = 0; i < NOPTS; i++)
        cr_assert(ftt_contains_ci(text, kOpts[i].name), "ftm_options_print does not mention %s:\n%s", kOpts[i].name,
                  text);
    cr_assert(strstr(text, "4321") != NULL, "ftm_options_print does not show purge_delay = 4321:\n%s", text);
}

/* Run the helper with extra environment; return its stderr (libc malloc). */
static char *helper_stderr(const char *env, int *status)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "env -u FTMEM_SHOW_STATS -u FTMEM_VERBOSE %s '%s' 2>&1 >/dev/null", env,
             FTMEM_TEST_HELPER);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + len, 1, cap - 1 - len, f)) > 0)
        len += r;
    buf[len] = '\0';
    *status = pclose(f);
    return buf;
}

Test(options, show_stats_prints_at_exit)
{
    int st;
    char quiet[512];
    char *out = helper_stderr("", &st);
    snprintf(quiet, sizeof quiet, "%s", out);
    free(out);
    cr_assert_eq(st, 0, "helper failed: %s", quiet);
    cr_assert_eq(strlen(quiet), 0, "the helper printed with default options:\n%s", quiet);
    out = helper_stderr("FTMEM_SHOW_STATS=1", &st);
    size_t len = strlen(out);
    free(out);
    cr_assert_eq(st, 0);
    cr_assert_gt(len, 20, "FTMEM_SHOW_STATS=1 printed nothing at exit");
}

Test(options, verbose_reports_os_calls)
{
    int st;
    char *loud = helper_stderr("FTMEM_VERBOSE=1", &st);
    size_t len = strlen(loud);
    free(loud);
    cr_assert_eq(st, 0);
    cr_assert_gt(len, 0, "FTMEM_VERBOSE=1 reported nothing for a 64 MiB mapping and a purge");
}
